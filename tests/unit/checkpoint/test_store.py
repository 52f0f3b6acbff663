from __future__ import annotations

import json
from pathlib import Path

import pytest

from clusterlm.checkpoint.layout import checkpoint_name
from clusterlm.checkpoint.store import CheckpointStore as CheckpointManager


class _JsonBackend:
    """Backend stand-in: the manager's job (dirs, pointer, rotation) is independent of contents."""

    collective = False

    def __init__(self, fail_on_step: int | None = None) -> None:
        self.fail_on_step = fail_on_step

    def write(self, directory, model, model_cfg, tokenizer_path, meta, states):
        (directory / "meta.json").write_text(json.dumps(meta))
        if meta["step"] == self.fail_on_step:
            raise RuntimeError("disk full")
        (directory / "train_state.json").write_text(json.dumps({k: v.state_dict() for k, v in states.items()}))

    def read(self, directory, model, states):
        saved = json.loads((directory / "train_state.json").read_text())
        for k, v in states.items():
            v.load_state_dict(saved[k])


class _Counter:
    def __init__(self, n: int = 0) -> None:
        self.n = n

    def state_dict(self):
        return {"n": self.n}

    def load_state_dict(self, s):
        self.n = s["n"]


def _save(mgr: CheckpointManager, step: int) -> Path:
    return mgr.save(step, None, None, None, {}, {"c": _Counter(step)})  # type: ignore[arg-type]


def test_latest_pointer_and_keep_last(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2, backend=_JsonBackend())
    assert mgr.latest() is None
    for step in (10, 20, 30):
        _save(mgr, step)
    assert mgr.steps() == [20, 30]
    assert (tmp_path / "latest").read_text().strip() == checkpoint_name(30)
    assert mgr.latest() == tmp_path / "checkpoints" / "step-0000030"
    c = _Counter()
    mgr.load(mgr.latest(), None, {"c": c})  # type: ignore[arg-type]
    assert c.n == 30


def test_failed_save_leaves_previous_checkpoint_and_pointer(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=1, backend=_JsonBackend(fail_on_step=20))
    _save(mgr, 10)
    with pytest.raises(RuntimeError, match="disk full"):
        _save(mgr, 20)
    assert mgr.steps() == [10]
    assert mgr.latest().name == "step-0000010"
    assert not any(p.name.startswith(".") for p in (tmp_path / "checkpoints").iterdir())


def test_stale_temporaries_removed_and_pointer_fallback(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=3, backend=_JsonBackend())
    _save(mgr, 5)
    stale = tmp_path / "checkpoints" / ".step-0000010.abc.tmp"
    stale.mkdir()
    (stale / "meta.json").write_text("{")
    assert mgr.steps() == [5]  # a temp dir is never a checkpoint
    assert mgr.remove_stale_temporaries() == 1 and not stale.exists()
    (tmp_path / "latest").unlink()  # crash between rename and pointer update
    assert mgr.latest().name == "step-0000005"


def test_resaving_the_latest_step_is_a_no_op(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=3, backend=_JsonBackend())
    path = _save(mgr, 7)
    before = (path / "train_state.json").stat().st_mtime_ns
    _save(mgr, 7)
    assert (path / "train_state.json").stat().st_mtime_ns == before
