"""Everything besides the weights that a resumed run needs, as `Stateful` objects.

Each object has `state_dict()` / `load_state_dict()` (the `torch.distributed.checkpoint`
`Stateful` protocol) and holds only tensors, numbers, strings, lists and dicts, so
`torch.load(..., weights_only=True)` can read it back without unpickling code.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch

from clusterlm.errors import CheckpointError


@dataclass
class TrainState:
    step: int = 0  # optimizer steps taken (skipped non-finite steps included)
    tokens_seen: int = 0  # training tokens consumed, summed over ranks
    elapsed_s: float = 0.0  # training wall time across all resumes (validation excluded)
    nonfinite_steps: int = 0  # steps skipped because the loss or gradient was not finite
    best_val_loss: float | None = None
    best_val_step: int | None = None
    evals_without_improvement: int = 0  # for early stopping
    last_val_loss: float | None = None
    last_train_eval_loss: float | None = None
    # The metrics callback's running window: [loss, grad_norm, step_time_s] of each step since the
    # last `train` record (and, distributed, each step's communication). Saved so that the first
    # record after a resume averages the same steps as an uninterrupted run's.
    log_window: list[list[float]] = field(default_factory=list)
    log_comm_window: list[dict[str, Any]] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the counters; a field of the wrong type or range is a CheckpointError (a garbled
        state must never resume silently). Fields missing from older checkpoints keep their defaults."""
        if not isinstance(state, dict):
            raise CheckpointError(f"train state must be a mapping, got {type(state).__name__}")
        names = {f.name for f in fields(self)}
        unknown = sorted(set(state) - names)
        if unknown:
            raise CheckpointError(f"train state has unknown field(s) {', '.join(map(repr, unknown))}")
        for name, value in state.items():
            _check_field(name, value)
        for name, value in state.items():
            setattr(self, name, float(value) if name in _FLOATS and value is not None else value)
        if "log_window" in state:  # a list restored from JSON or torch.load is ours to mutate, but copy it
            self.log_window = [list(row) for row in state["log_window"]]


_COUNTERS = ("step", "tokens_seen", "nonfinite_steps", "evals_without_improvement")
_FLOATS = ("elapsed_s", "best_val_loss", "last_val_loss", "last_train_eval_loss")


def _check_field(name: str, value: Any) -> None:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if name in _COUNTERS and not (is_int and value >= 0):
        raise CheckpointError(f"train state field '{name}' must be an integer ≥ 0, got {value!r}")
    if name == "best_val_step" and not (value is None or (is_int and value >= 0)):
        raise CheckpointError(f"train state field 'best_val_step' must be an integer ≥ 0 or null, got {value!r}")
    if name == "log_window" and not (isinstance(value, list) and all(
            isinstance(row, list) and len(row) == 3 and all(_is_number(x) for x in row) for row in value)):
        raise CheckpointError("train state field 'log_window' must be a list of [loss, grad_norm, step_time_s]")
    if name == "log_comm_window" and not (isinstance(value, list) and all(_is_comm_step(d) for d in value)):
        raise CheckpointError("train state field 'log_comm_window' must be a list of {comm, step_time_s}")
    if name in _FLOATS:
        number = _is_number(value)
        if name == "elapsed_s" and not (number and math.isfinite(value) and value >= 0):
            raise CheckpointError(f"train state field 'elapsed_s' must be a finite number ≥ 0, got {value!r}")
        if not (value is None or number):
            raise CheckpointError(f"train state field '{name}' must be a number or null, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_COMM_FIELDS = {"bytes_by_kind", "count_by_kind", "wire_bytes", "comm_time_s"}  # distributed.comm_stats.CommStep


def _is_comm_step(d: Any) -> bool:
    return (isinstance(d, dict) and set(d) == {"comm", "step_time_s"} and _is_number(d["step_time_s"])
            and isinstance(d["comm"], dict) and set(d["comm"]) <= _COMM_FIELDS
            and all(isinstance(d["comm"].get(k, {}), dict) for k in ("bytes_by_kind", "count_by_kind"))
            and all(_is_number(d["comm"].get(k, 0)) for k in ("wire_bytes", "comm_time_s")))


class RNGState:
    """The global RNGs (python, numpy, torch CPU and CUDA): dropout and anything else random."""

    def state_dict(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        state: dict[str, Any] = {
            "python": _to_plain(random.getstate()),
            "numpy": {
                "kind": np_state[0],
                "key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64).copy()),
                "pos": int(np_state[2]),
                "has_gauss": int(np_state[3]),
                "cached_gaussian": float(np_state[4]),
            },
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore every generator; a state any of them rejects is a CheckpointError naming it."""
        if not isinstance(state, dict) or not {"python", "numpy", "torch"} <= set(state):
            raise CheckpointError("RNG state must hold 'python', 'numpy' and 'torch' generators")
        for name, restore in (("python", _restore_python), ("numpy", _restore_numpy), ("torch", _restore_torch),
                              ("cuda", _restore_cuda)):
            if name not in state:
                continue
            try:
                restore(state[name])
            except (TypeError, ValueError, KeyError, AttributeError, RuntimeError, OverflowError) as exc:
                raise CheckpointError(f"RNG state '{name}' is invalid ({type(exc).__name__}: "
                                      f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def _restore_python(state: Any) -> None:
    random.setstate(_to_tuple(state))


def _restore_numpy(n: Any) -> None:
    key = n["key"]
    if not isinstance(key, torch.Tensor) or key.dtype != torch.int64 or key.ndim != 1:
        raise TypeError("the numpy key must be a 1-d int64 tensor")
    np.random.set_state((str(n["kind"]), key.numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
                         float(n["cached_gaussian"])))


def _restore_torch(state: Any) -> None:
    if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8:
        raise TypeError("the torch generator state must be a uint8 tensor")
    torch.set_rng_state(state)


def _restore_cuda(state: Any) -> None:
    if torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_plain(obj: Any) -> Any:
    # random.getstate() is nested tuples of ints; lists survive weights_only loading as-is.
    if isinstance(obj, tuple):
        return [_to_plain(x) for x in obj]
    return obj


def _to_tuple(obj: Any) -> Any:
    if isinstance(obj, list):
        return tuple(_to_tuple(x) for x in obj)
    return obj
