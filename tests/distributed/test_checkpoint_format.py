"""The DCP checkpoint format in one process (no process group): round trip, consolidation, tampering."""

from __future__ import annotations

import pickle
from pathlib import Path

import parity_loop as loop
import pytest
import torch
import torch.nn.functional as F

from clusterlm.checkpoint.backends import DCPBackend, LocalBackend
from clusterlm.checkpoint.dcp_io import is_dcp_checkpoint
from clusterlm.errors import CheckpointError
from clusterlm.train.optim import build_optimizer
from clusterlm.train.state import TrainState


def trained(seed: int = 7):
    tcfg = loop.train_config()
    model = loop.build(loop.model_config("gpt2"), seed=seed)
    optimizer = build_optimizer(model, tcfg)
    batch = loop.batches(1, 4, model.config.vocab_size, seed=seed)[0]
    F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten()).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, optimizer


def save(tmp_path: Path) -> tuple[Path, torch.nn.Module, torch.optim.Optimizer]:
    model, optimizer = trained()
    directory = tmp_path / "ckpt"
    directory.mkdir()
    state = TrainState(step=3, tokens_seen=96, best_val_loss=None)
    DCPBackend().write(directory, model, model.config, None, {"step": 3}, {"optimizer": optimizer, "train": state})
    return directory, model, optimizer


def test_dcp_checkpoint_round_trips_through_the_single_process_backend(tmp_path):
    directory, model, optimizer = save(tmp_path)
    assert is_dcp_checkpoint(directory) and (directory / "meta.json").is_file()
    fresh, fresh_opt = trained(seed=8)  # different weights and moments, same structure
    state = TrainState()
    LocalBackend().read(directory, fresh, {"optimizer": fresh_opt, "train": state})  # delegates to DCP
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    saved, loaded = optimizer.state_dict(), fresh_opt.state_dict()
    for i, s in saved["state"].items():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(s[key], loaded["state"][i][key])
    assert [g["lr"] for g in saved["param_groups"]] == [g["lr"] for g in loaded["param_groups"]]
    assert (state.step, state.tokens_seen, state.best_val_loss) == (3, 96, None)


def test_load_model_dir_consolidates_a_dcp_checkpoint(tmp_path):
    from clusterlm.checkpoint.load import load_model as load_model_dir

    directory, model, _ = save(tmp_path)
    loaded = load_model_dir(directory)
    assert loaded.meta["weights"] == "dcp" and loaded.config.n_layer == model.config.n_layer
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.model.state_dict().values()))


class _Evil:
    def __reduce__(self):
        return (print, ("this should never run",))


def test_a_tampered_index_is_refused_without_unpickling_it(tmp_path, capsys):
    directory, model, _ = save(tmp_path)
    (directory / "dcp" / ".metadata").write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError, match="builtins.print"):
        LocalBackend().read(directory, model, {})
    assert "should never run" not in capsys.readouterr().out
    (directory / "dcp" / ".metadata").write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError, match="corrupted"):
        LocalBackend().read(directory, model, {})
