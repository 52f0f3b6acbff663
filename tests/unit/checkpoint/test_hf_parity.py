"""Logit parity with HF transformers on tiny random configs, through `checkpoint/hf.py` both ways."""

from __future__ import annotations

import json

import pytest
import torch

from clusterlm.errors import CheckpointError, UsageError
from clusterlm.model.build import build_model
from clusterlm.config.model import ModelConfig
from clusterlm.checkpoint.hf import save_hf_dir, to_transformers
from clusterlm.checkpoint.load import load_model


def load_hf_dir(path):
    loaded = load_model(path)
    return loaded.model, loaded.config

transformers = pytest.importorskip("transformers")

CONFIGS = {
    "gpt2": dict(style="gpt2", n_layer=2, n_head=4, d_model=32, vocab_size=97, max_seq_len=24),
    "gpt2-untied": dict(style="gpt2", n_layer=2, n_head=2, d_model=32, d_ff=48, vocab_size=97, max_seq_len=24,
                        tie_embeddings=False),
    "llama-gqa": dict(style="llama", n_layer=2, n_head=4, n_kv_head=2, d_model=32, d_ff=64, vocab_size=97,
                      max_seq_len=24, rope_theta=500.0, tie_embeddings=False),
    "llama-tied-bias": dict(style="llama", n_layer=2, n_head=4, n_kv_head=1, d_model=32, d_ff=48, vocab_size=97,
                            max_seq_len=24, tie_embeddings=True, bias=True),
}


def _tokens(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 24), generator=torch.Generator().manual_seed(0))


def _randomise(model: torch.nn.Module) -> None:
    # Seeded init leaves norms at 1 and biases at 0; perturb everything so a swapped or
    # untransposed tensor cannot hide behind an identity.
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_export_loads_in_transformers_with_same_logits(name, tmp_path):
    cfg = ModelConfig(**CONFIGS[name])
    model = build_model(cfg).eval()
    _randomise(model)
    save_hf_dir(tmp_path / "hf", model, cfg)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    tokens = _tokens(cfg.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hf_model(tokens).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_import_of_transformers_model_gives_same_logits(name, tmp_path):
    cfg = ModelConfig(**CONFIGS[name])
    hf_model = to_transformers(build_model(cfg), cfg).eval()  # built by transformers from our config
    _randomise(hf_model)  # then its own random weights
    hf_model.save_pretrained(tmp_path / "hf")
    model, loaded_cfg = load_hf_dir(tmp_path / "hf")
    assert _shape(loaded_cfg) == _shape(cfg)
    tokens = _tokens(cfg.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(model(tokens), hf_model(tokens).logits, rtol=1e-4, atol=1e-4)


def _shape(cfg: ModelConfig) -> tuple:
    return (cfg.style, cfg.n_layer, cfg.n_head, cfg.kv_heads, cfg.d_model, cfg.ffn_dim, cfg.vocab_size,
            cfg.max_seq_len, cfg.tie_embeddings, cfg.use_bias, cfg.norm_eps, cfg.rope_theta)


def test_round_trip_through_hf_dir_is_exact(tmp_path):
    cfg = ModelConfig(**CONFIGS["gpt2"])
    model = build_model(cfg)
    _randomise(model)
    save_hf_dir(tmp_path / "hf", model, cfg)
    back, _ = load_hf_dir(tmp_path / "hf")
    for (name, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a, b), name


def test_unsupported_hf_configs_are_checkpoint_errors(tmp_path):
    cfg = ModelConfig(**CONFIGS["llama-gqa"])
    save_hf_dir(tmp_path / "hf", build_model(cfg), cfg)
    config_path = tmp_path / "hf" / "config.json"
    hf = json.loads(config_path.read_text())
    config_path.write_text(json.dumps(hf | {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}))
    with pytest.raises(CheckpointError, match="RoPE scaling"):
        load_hf_dir(tmp_path / "hf")
    config_path.write_text(json.dumps(hf | {"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="model_type 'bert'"):
        load_hf_dir(tmp_path / "hf")
    config_path.write_text(json.dumps(hf | {"intermediate_size": 96}))  # weights no longer fit
    with pytest.raises(CheckpointError, match="does not match"):
        load_hf_dir(tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").write_bytes(b"\x00" * 64)
    config_path.write_text(json.dumps(hf))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_hf_dir(tmp_path / "hf")


def test_recurrent_and_gqa_gpt2_have_no_hf_form(tmp_path):
    lstm = ModelConfig(preset="tiny-lstm", vocab_size=50)
    with pytest.raises(UsageError, match="gpt2 and llama"):
        save_hf_dir(tmp_path / "a", build_model(lstm), lstm)
    gqa = ModelConfig(style="gpt2", n_layer=1, n_head=4, n_kv_head=2, d_model=32, vocab_size=50)
    with pytest.raises(UsageError, match="grouped-query"):
        save_hf_dir(tmp_path / "b", build_model(gqa), gqa)
