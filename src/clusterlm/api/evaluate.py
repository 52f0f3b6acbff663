"""`clusterlm eval`: loss, perplexity, bits per byte and accuracy of a checkpoint on a dataset."""

from __future__ import annotations

from typing import Any

from clusterlm.checkpoint.load import load_model, resolve_checkpoint
from clusterlm.data.loader import Dataset
from clusterlm.errors import CheckpointError, ConfigError, UsageError
from clusterlm.eval.runner import check_tokenizer_matches, dataset_dir_from_meta, evaluate_model
from clusterlm.model.flops import param_count
from clusterlm.runtime.device import resolve_device
from clusterlm.runtime.precision import select_precision

SPLITS = ("train", "val")


def evaluate(path: str, *, data_dir: str | None = None, splits: list[str] | None = None, batches: int | None = 100,
             batch_size: int = 16, seq_len: int | None = None, device: str = "auto",
             precision: str = "auto") -> dict[str, Any]:
    """Score one checkpoint (or run dir) on a dataset; the dict `clusterlm eval --json` prints."""
    splits = splits or list(SPLITS)
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise UsageError(f"splits are train and/or val, got {', '.join(bad)}")
    ckpt = resolve_checkpoint(path)
    torch_device = resolve_device(device, option="--device")
    loaded = load_model(ckpt, device=torch_device)
    meta = loaded.meta or {}
    data_dir = data_dir or dataset_dir_from_meta(meta)
    if not data_dir:
        raise UsageError(f"{ckpt} does not record its dataset; pass --data DIR")
    dataset = Dataset.open(data_dir)
    check_tokenizer_matches(ckpt, dataset)
    cfg = loaded.config
    if cfg.vocab_size is not None and cfg.vocab_size < dataset.vocab_size:
        raise CheckpointError(
            f"{ckpt} has a {cfg.vocab_size}-token vocabulary but dataset {dataset.path} uses "
            f"{dataset.vocab_size}; evaluate on the dataset it was trained on"
        )
    trained_seq = ((meta.get("config") or {}).get("train") or {}).get("seq_len")
    seq = seq_len or trained_seq or cfg.max_seq_len
    if cfg.is_transformer and seq > cfg.max_seq_len:
        raise ConfigError(f"--seq-len {seq} exceeds the model's context ({cfg.max_seq_len})")
    # Scores should be exact: on CPU `auto` evaluates in fp32 (cheap next to training);
    # on GPUs it follows the training rule (bf16 autocast where supported).
    if precision == "auto" and torch_device.type == "cpu":
        precision = "fp32"
    prec = select_precision(precision, torch_device)
    report = evaluate_model(loaded.model, dataset, splits, seq_len=seq, batch_size=batch_size,
                            max_batches=batches, device=torch_device, autocast=lambda: prec.autocast(torch_device))
    return {
        "checkpoint": str(ckpt),
        "step": meta.get("step"),
        "model": {"style": cfg.style, "params": param_count(cfg), "n_layer": cfg.n_layer,
                  "d_model": cfg.d_model, "vocab_size": cfg.vocab_size},
        "dataset": str(dataset.path),
        "seq_len": seq,
        "batch_size": batch_size,
        "batches": batches,
        "precision": prec.name,
        **report,
    }
