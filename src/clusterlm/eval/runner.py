"""Evaluate a model on dataset splits — the one code path for `clusterlm eval` and validation in training."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, ContextManager

import torch
from torch import nn

from clusterlm.data.loader import TokenLoader
from clusterlm.errors import CheckpointError, DataError
from clusterlm.eval.metrics import TokenStats, generalization_gap
from clusterlm.runtime.collectives import Collectives


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
    collectives: Collectives | None = None,
    dp_rank: int = 0,
    dp_size: int = 1,
) -> TokenStats:
    """Token statistics over `max_batches` batches of non-overlapping windows of `split` (None = all).

    Windows are sequential and fixed, so the same checkpoint always scores the same. When
    only part of the split is scored, the windows are spread evenly over all of it (every
    k-th window) rather than taken from its start: the first documents of a split are not a
    fair sample of it, and a biased train-split sample would distort the generalisation gap.
    The model is put in eval mode (no dropout) and restored to its previous mode afterwards.
    Under data parallelism rank `dp_rank` of `dp_size` scores its share and `collectives` sums
    the statistics.
    """
    collectives = collectives or Collectives()
    was_training = model.training
    model.eval()
    stats = TokenStats()
    try:
        # The sequential loader gives rank r of W the windows k ≡ r (mod W); scoring with
        # W·stride "ranks" keeps every stride-th window of this rank's share.
        stride = 1
        if max_batches is not None:
            windows = (dataset.num_tokens(split) - 1) // seq_len
            stride = max(1, windows // (max_batches * batch_size * dp_size))
        loader = TokenLoader(dataset, split, batch_size, seq_len, rank=dp_rank,
                             world_size=dp_size * stride, mode="sequential")
        n_batches = len(loader) if max_batches is None else min(len(loader), max_batches)
        for i, (x, y) in enumerate(loader):
            if i >= n_batches:
                break
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            with autocast() if autocast is not None else contextlib.nullcontext():
                logits = model(x)
            stats.update(logits, y)
        # A sharded model (FSDP/TP) gathers weights inside forward, so every rank must call it
        # equally often; ranks with fewer windows run unscored forwards to keep in step.
        if collectives.world_size > 1:
            for _ in range(int(collectives.reduce_max(n_batches)) - n_batches):
                model(torch.zeros(1, seq_len, dtype=torch.long, device=device))
    finally:
        model.train(was_training)
    if collectives.world_size > 1:
        c = collectives
        stats = TokenStats(c.reduce_sum(stats.nll_sum), int(c.reduce_sum(stats.tokens)),
                           int(c.reduce_sum(stats.top1)), int(c.reduce_sum(stats.top5)))
    return stats


def evaluate_model(model: nn.Module, dataset: Any, splits: list[str], **options: Any) -> dict[str, Any]:
    """Metrics per split plus the generalisation gap (val − train loss) when both are present.

    `options` are `evaluate_split`'s keywords (seq_len, batch_size, max_batches, device, autocast,
    collectives, dp_rank, dp_size).
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
