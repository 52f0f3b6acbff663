"""Checkpoint dirs and single-file exports: exact round trips, and one-line errors for bad ones."""

from __future__ import annotations

import json

import pytest
import torch

from clusterlm.errors import CheckpointError
from clusterlm.model.build import build_model
from clusterlm.config.model import ModelConfig
from clusterlm.checkpoint.formats import save_model_dir, save_single_file
from clusterlm.checkpoint.load import load_model as load_model_dir
from clusterlm.checkpoint.load import resolve_checkpoint

CFG = ModelConfig(style="llama", n_layer=2, n_head=4, n_kv_head=2, d_model=32, vocab_size=50, max_seq_len=16)


def _saved(tmp_path, cfg=CFG, name="step-0000010"):
    model = build_model(cfg)
    model.init_weights(seed=5)
    ckpt = tmp_path / "run" / "checkpoints" / name
    save_model_dir(ckpt, model, cfg, None, {"step": 10, "note": "x"})
    return model, ckpt


@pytest.mark.parametrize("style", ["gpt2", "llama", "gru"])
def test_save_load_round_trip_is_exact(tmp_path, style):
    cfg = ModelConfig(style=style, n_layer=2, n_head=2, d_model=32, vocab_size=50, max_seq_len=16)
    model, ckpt = _saved(tmp_path, cfg)
    loaded = load_model_dir(ckpt)
    assert loaded.config == cfg and loaded.meta["step"] == 10 and loaded.meta["note"] == "x"
    assert not loaded.model.training
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a, b), name
    if cfg.tie_embeddings:
        assert loaded.model.output.weight is loaded.model.tok_embeddings.weight


def test_seeded_init_is_deterministic_and_seed_dependent():
    a, b, c = (build_model(CFG) for _ in range(3))
    a.init_weights(1), b.init_weights(1), c.init_weights(2)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.layers["0"].attention.wq.weight, c.layers["0"].attention.wq.weight)


def test_run_dir_resolves_to_latest(tmp_path):
    _, old = _saved(tmp_path, name="step-0000010")
    _, new = _saved(tmp_path, name="step-0000020")
    run = tmp_path / "run"
    assert resolve_checkpoint(run) == new  # no pointer: the newest
    (run / "latest").write_text("step-0000010\n")
    assert resolve_checkpoint(run) == old
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="neither a checkpoint"):
        resolve_checkpoint(tmp_path)


def test_a_run_dirs_latest_pointer_never_leaves_its_checkpoints(tmp_path):
    _saved(tmp_path, name="step-9999999")
    _, newest = _saved(tmp_path, name="step-10000000")  # more digits: newer by step, not by name
    run = tmp_path / "run"
    _saved(tmp_path, name="outside")  # RUN/checkpoints/outside is no step dir
    (run / "latest").write_text("../checkpoints/outside\n")
    assert resolve_checkpoint(run) == newest  # the pointer is ignored, the highest step wins
    (run / "latest").write_text("outside\n")
    assert resolve_checkpoint(run) == newest


def test_truncated_weights_are_a_checkpoint_error(tmp_path):
    _, ckpt = _saved(tmp_path)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupted"):
        load_model_dir(ckpt)
    with pytest.raises(CheckpointError, match="corrupted"):  # also without the hash check
        load_model_dir(ckpt, verify=False)


def test_flipped_weight_bytes_fail_the_hash_check(tmp_path):
    _, ckpt = _saved(tmp_path)
    weights = ckpt / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # inside the tensor data: still a well-formed safetensors file
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_model_dir(ckpt)


def _with_model_config(ckpt, **changes) -> None:
    meta_path = ckpt / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"model": CFG.model_dump(mode="json") | changes}))


def test_weights_that_do_not_fit_the_config_are_a_checkpoint_error(tmp_path):
    _, ckpt = _saved(tmp_path)
    _with_model_config(ckpt, d_ff=96)
    with pytest.raises(CheckpointError, match="does not match the model config: .*feed_forward"):
        load_model_dir(ckpt)
    _with_model_config(ckpt, n_layer=3)
    with pytest.raises(CheckpointError, match="missing"):
        load_model_dir(ckpt)


def test_bad_meta_is_a_checkpoint_error(tmp_path):
    _, ckpt = _saved(tmp_path)
    _with_model_config(ckpt, n_head=5)
    with pytest.raises(CheckpointError, match="invalid model config"):
        load_model_dir(ckpt)
    meta_path = ckpt / "meta.json"
    meta_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model_dir(ckpt)
    meta_path.unlink()
    (ckpt / "model.safetensors").unlink()
    with pytest.raises(CheckpointError):
        load_model_dir(ckpt)


def test_single_file_export_is_self_describing(tmp_path):
    model = build_model(CFG)
    written = save_single_file(tmp_path / "m.safetensors", model, CFG, {"step": 3})
    assert [p.name for p in written] == ["m.safetensors", "m.json"]
    loaded = load_model_dir(tmp_path / "m.safetensors")
    assert loaded.config == CFG
    tokens = torch.randint(0, 50, (1, 8))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(tokens), model.eval()(tokens), rtol=0, atol=0)
