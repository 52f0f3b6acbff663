"""Everything besides the weights that a resumed run needs, as `Stateful` objects.

Each object has `state_dict()` / `load_state_dict()` (the `torch.distributed.checkpoint`
`Stateful` protocol) and holds only tensors, numbers, strings, lists and dicts, so
`torch.load(..., weights_only=True)` can read it back without unpickling code.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch


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

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for f in fields(self):
            if f.name in state:
                setattr(self, f.name, state[f.name])


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
        random.setstate(_to_tuple(state["python"]))
        n = state["numpy"]
        np.random.set_state(
            (n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
        )
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


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
