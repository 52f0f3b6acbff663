"""Evaluate a model on dataset splits — the one code path for `clusterlm eval` and validation in training."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager

import numpy as np
import torch
from torch import nn

from clusterlm.data.loader import check_token_ids
from clusterlm.errors import CheckpointError, DataError
from clusterlm.eval.metrics import IGNORE_INDEX, TokenStats, generalization_gap
from clusterlm.runtime.collectives import Collectives




@dataclass(frozen=True)
class EvalPlacement:
    """Where one process sits when the model is evaluated by several (one process: the defaults).

    `dp_rank`/`dp_size` split the windows; `scores` says whether this process's statistics count
    (one per data-parallel slice: tensor-parallel peers compute the same logits, and only the last
    pipeline stage computes any); `forward(x, y, stats)` replaces `stats.update(model(x), y)`
    (a pipeline runs its schedule); `batch_size` overrides the batch (a pipeline's m micro-batches)."""

    collectives: Collectives = field(default_factory=Collectives)
    dp_rank: int = 0
    dp_size: int = 1
    scores: bool = True
    forward: Callable[[torch.Tensor, torch.Tensor, TokenStats], None] | None = None
    batch_size: int | None = None


def scored_windows(n_windows: int, seq_len: int, max_windows: int | None) -> np.ndarray:
    """Token offsets of the windows an evaluation scores: all of them, or `max_windows` spread evenly.

    The set depends on nothing but the split and the budget — not on how many processes score it —
    so every layout reports the same numbers for the same weights. Spreading (every k-th window)
    rather than taking the split's start matters: the first documents of a split are not a fair
    sample of it, and a biased train-split sample would distort the generalisation gap."""
    stride = 1 if max_windows is None else max(1, n_windows // max_windows)
    chosen = np.arange(0, n_windows, stride, dtype=np.int64)
    if max_windows is not None:
        chosen = chosen[:max_windows]
    return chosen * seq_len


def _batches(view: Any, offsets: np.ndarray, seq_len: int, batch_size: int, n_batches: int,
             device: torch.device, vocab: tuple[int, str] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`n_batches` batches of exactly `batch_size` windows; rows past `offsets` are padding
    (IGNORE_INDEX targets: cross-entropy and the statistics skip them).
    `vocab`: (vocabulary size, where) to check every id against."""
    for b in range(n_batches):
        part = offsets[b * batch_size : (b + 1) * batch_size]
        rows = [view.window(int(o), seq_len + 1) for o in part]
        stacked = np.stack(rows).astype(np.int64) if rows else np.zeros((0, seq_len + 1), dtype=np.int64)
        if vocab is not None:
            check_token_ids(stacked, *vocab)
        windows = torch.from_numpy(stacked)
        pad = batch_size - windows.shape[0]
        x, y = windows[:, :-1], windows[:, 1:]
        if pad:
            x = torch.cat([x, torch.zeros(pad, seq_len, dtype=torch.long)])
            y = torch.cat([y, torch.full((pad, seq_len), IGNORE_INDEX, dtype=torch.long)])
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)


@torch.no_grad()
def evaluate_split(
    model: nn.Module,
    dataset: Any,
    split: str,
    *,
    seq_len: int,
    batch_size: int,
    max_batches: int | None,
    device: torch.device,
    autocast: Callable[[], ContextManager[Any]] | None = None,
    placement: EvalPlacement | None = None,
) -> TokenStats:
    """Token statistics over `max_batches` batches of `batch_size` windows per data-parallel rank
    (None: every window of `split`).

    The windows are fixed and non-overlapping (`scored_windows`) and depend only on the split and
    the budget `max_batches · batch_size · D` — the global micro-batch, as in training — so runs
    that train alike (one process with micro-batch 8, or two ranks with 4) score the same windows
    whatever their layout; data-parallel rank r of D takes every D-th of them. Every process
    runs the same number of batches (short ones are padded), because a sharded model gathers
    weights inside forward. The model is put in eval mode (no dropout) and restored afterwards.
    """
    where = placement or EvalPlacement()
    n_windows = (dataset.num_tokens(split) - 1) // seq_len
    budget = None if max_batches is None else max_batches * batch_size * where.dp_size
    offsets = scored_windows(n_windows, seq_len, budget)
    mine = offsets[where.dp_rank :: where.dp_size]
    size = where.batch_size or batch_size
    n_batches = -(-len(mine) // size)
    if where.collectives.world_size > 1:
        n_batches = int(where.collectives.reduce_max(n_batches))
    stats = TokenStats()
    was_training = model.training
    model.eval()
    try:
        vocab = (dataset.vocab_size, f"split '{split}' of {dataset.path}") if hasattr(dataset, "vocab_size") else None
        for x, y in _batches(dataset.tokens(split), mine, seq_len, size, n_batches, device, vocab):
            with autocast() if autocast is not None else contextlib.nullcontext():
                if where.forward is not None:
                    where.forward(x, y, stats)
                else:
                    stats.update(model(x), y)
    finally:
        model.train(was_training)
    if not where.scores:
        stats = TokenStats()
    if where.collectives.world_size > 1:
        c = where.collectives
        stats = TokenStats(c.reduce_sum(stats.nll_sum), int(c.reduce_sum(stats.tokens)),
                           int(c.reduce_sum(stats.top1)), int(c.reduce_sum(stats.top5)))
    return stats


def evaluate_model(model: nn.Module, dataset: Any, splits: list[str], **options: Any) -> dict[str, Any]:
    """Metrics per split plus the generalisation gap (val − train loss) when both are present.

    `options` are `evaluate_split`'s keywords (seq_len, batch_size, max_batches, device, autocast, placement).
    """
    results: dict[str, Any] = {}
    for split in splits:
        seq_len = options["seq_len"]
        if dataset.num_tokens(split) < seq_len + 1:
            raise DataError(
                f"split '{split}' of {dataset.path} has {dataset.num_tokens(split)} tokens, "
                f"fewer than seq_len + 1 = {seq_len + 1}; use a smaller --seq-len"
            )
        stats = evaluate_split(model, dataset, split, **options)
        results[split] = stats.summary(dataset.bytes_per_token(split))
    report: dict[str, Any] = {"splits": results}
    if "train" in results and "val" in results:
        report["generalization_gap"] = generalization_gap(results["val"]["loss"], results["train"]["loss"])
    return report


def check_tokenizer_matches(checkpoint_dir: Path, dataset: Any) -> None:
    """A checkpoint can only be scored on data encoded with its own tokenizer."""
    ckpt_tok = Path(checkpoint_dir) / "tokenizer.json"
    if not ckpt_tok.is_file():
        return  # weights-only checkpoint: the vocabulary-size check below still applies
    if _sha256(ckpt_tok) != _sha256(Path(dataset.tokenizer_path)):
        raise CheckpointError(
            f"checkpoint {checkpoint_dir} was trained with a different tokenizer than dataset "
            f"{dataset.path}; evaluate on the dataset it was trained on (--data)"
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dataset_dir_from_meta(meta: dict[str, Any]) -> str | None:
    """The dataset a checkpoint was trained on, as recorded by the trainer."""
    if meta.get("dataset_dir"):
        return str(meta["dataset_dir"])
    config = meta.get("config") or {}
    return (config.get("data") or {}).get("dir")
