"""`clusterlm generate` and `clusterlm export` end to end on a tiny checkpoint."""

from __future__ import annotations

import pytest
import torch

from clusterlm.cli.main import main
from clusterlm.model.build import build_model
from clusterlm.config.model import ModelConfig
from clusterlm.checkpoint.formats import save_model_dir
from clusterlm.checkpoint.load import load_model as load_model_dir


@pytest.fixture
def checkpoint(tmp_path, tokenizer):
    tok_path = tmp_path / "tokenizer.json"
    tokenizer.save(str(tok_path))
    cfg = ModelConfig(style="llama", n_layer=2, n_head=4, n_kv_head=2, d_model=32,
                      vocab_size=tokenizer.get_vocab_size(), max_seq_len=32, init_std=0.2)
    model = build_model(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "step-0000001"
    save_model_dir(ckpt, model, cfg, tok_path, {"step": 1})
    (tmp_path / "run" / "latest").write_text("step-0000001\n")
    return ckpt


def _generate(capsys, *args):
    code = main(["generate", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_generate_streams_same_text_with_and_without_cache(checkpoint, capsys):
    run_dir = checkpoint.parent.parent
    common = ["--prompt", "hello world", "--temperature", "0", "--max-new-tokens", "40"]
    code, cached, err = _generate(capsys, run_dir, *common)
    assert code == 0, err
    code, uncached, _ = _generate(capsys, run_dir, *common, "--no-kv-cache")
    assert code == 0
    assert cached.startswith("hello world") and len(cached) > len("hello world\n")
    assert cached == uncached
    assert "tok/s" in err


def test_generate_bad_input_is_one_line_exit_2(checkpoint, tmp_path, capsys):
    for args in ([checkpoint, "--prompt", "x", "--top-p", "2"], [tmp_path / "missing", "--prompt", "x"],
                 [checkpoint, "--prompt", "x", "--device", "tpu"], [checkpoint, "--prompt", "x", "--temperature", "nan"],
                 [checkpoint, "--prompt", "x", "--temperature", "1e-45"], [checkpoint, "--prompt", "x", "--seed", 2**70]):
        code, _, err = _generate(capsys, *args)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err


def test_generate_crops_a_prompt_longer_than_the_context(checkpoint, capsys):
    code, out, err = _generate(capsys, checkpoint, "--prompt", "hello " * 40, "--temperature", "0",
                               "--max-new-tokens", "5", "--no-echo")
    assert code == 0 and "the model sees its last 32" in err


def test_export_safetensors_and_hf_round_trip(checkpoint, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    loaded = load_model_dir(checkpoint)
    tokens = torch.randint(0, loaded.config.vocab_size, (1, 10))
    with torch.no_grad():
        reference = loaded.model(tokens)

    single = tmp_path / "out" / "model.safetensors"
    assert main(["export", str(checkpoint), "--out", str(single)]) == 0
    assert (tmp_path / "out" / "model.tokenizer.json").is_file()
    with torch.no_grad():
        torch.testing.assert_close(load_model_dir(single).model(tokens), reference, rtol=0, atol=0)

    hf_dir = tmp_path / "hf"
    assert main(["export", str(checkpoint), "--out", str(hf_dir), "--format", "hf"]) == 0
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf_model(tokens).logits, reference, rtol=1e-4, atol=1e-4)
    hf_tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
    assert hf_tok.decode(hf_tok("hello wörld")["input_ids"]) == "hello wörld"
    # The HF dir is also a valid input for generate / init_from.
    with torch.no_grad():
        torch.testing.assert_close(load_model_dir(hf_dir).model(tokens), reference, rtol=1e-6, atol=1e-6)

    capsys.readouterr()
    assert main(["export", str(checkpoint), "--out", str(hf_dir), "--format", "hf"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", str(checkpoint), "--out", str(hf_dir), "--format", "hf", "--overwrite"]) == 0


def test_export_recurrent_to_hf_is_refused_without_output(tmp_path, capsys):
    cfg = ModelConfig(preset="tiny-lstm", vocab_size=40)
    save_model_dir(tmp_path / "ckpt", build_model(cfg), cfg, None, {"step": 0})
    assert main(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path / "hf")]) == 2
    assert "gpt2 and llama" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()
