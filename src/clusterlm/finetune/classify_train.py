"""Fine-tune a classification head (and optionally the whole LM) on labelled text.

    full   every parameter trains: the body learns features for the task
    head   the LM is frozen; its pooled features are computed once, then only the linear
           head trains (a linear probe: fast, and it shows what pretraining alone learned)

Cross-entropy, optionally class-weighted. The validation set is scored at the end:
accuracy, macro-F1, per-class F1 and a confusion-matrix PNG in the run dir.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from clusterlm.errors import UsageError
from clusterlm.finetune.body import POOLINGS, Pooling, pad_batch, pad_id_of
from clusterlm.finetune.classifier import SequenceClassifier, save_head
from clusterlm.finetune.classify_data import (LabelledSet, class_weights, encode_labelled, label_set,
                                              read_labelled)
from clusterlm.finetune.loop import LoopSettings, autocast_for, run_loop
from clusterlm.finetune.metrics import classification_scores, plot_confusion
from clusterlm.finetune.runfiles import base_dataset_dir, publish_run, refuse_existing
from clusterlm.finetune.store import load_base, torch_device
from clusterlm.train.metrics import MetricsLogger

Method = Literal["full", "head"]


@dataclass(frozen=True)
class ClassifyOptions:
    pooling: Pooling = "last"
    method: Method = "full"
    class_weights: str = "none"  # none | balanced | LABEL=W,…
    max_tokens: int | None = None  # default: the model's context (at most 512)


def _batches(data: LabelledSet, batch_size: int, seed: int) -> Iterator[list[int]]:
    order = list(range(len(data.labels)))
    epoch = 0
    while True:
        random.Random(seed + epoch).shuffle(order)
        for i in range(0, len(order), batch_size):
            yield order[i:i + batch_size]
        epoch += 1


@torch.no_grad()
def _features(model: SequenceClassifier, data: LabelledSet, pad_id: int, device: torch.device,
              batch_size: int = 64) -> torch.Tensor:
    out = []
    for i in range(0, len(data.ids), batch_size):
        tokens, lengths = pad_batch(data.ids[i:i + batch_size], pad_id, device)
        out.append(model.features(tokens, lengths).float())
    return torch.cat(out)  # (N, C)


def _logits_fn(model: SequenceClassifier, method: Method, pad_id: int, device: torch.device,
               cached: dict[int, torch.Tensor]) -> Callable[[LabelledSet, list[int]], torch.Tensor]:
    """logits (B, K) of examples `idx` of a set: from cached features (head) or the full forward."""
    def logits(data: LabelledSet, idx: list[int]) -> torch.Tensor:
        if method == "head":
            return model.head(cached[id(data)][idx])
        tokens, lengths = pad_batch([data.ids[i] for i in idx], pad_id, device)
        with autocast_for(device):
            return model(tokens, lengths).float()
    return logits


def _predict(logits: Callable[[LabelledSet, list[int]], torch.Tensor], data: LabelledSet,
             batch_size: int) -> tuple[list[int], float]:
    preds, loss_sum = [], 0.0
    with torch.no_grad():
        for i in range(0, len(data.labels), batch_size):
            idx = list(range(i, min(i + batch_size, len(data.labels))))
            out = logits(data, idx)
            y = torch.tensor([data.labels[j] for j in idx], device=out.device)
            loss_sum += float(F.cross_entropy(out, y, reduction="sum"))
            preds += out.argmax(dim=-1).tolist()
    return preds, loss_sum / len(data.labels)


def finetune_classify(base: str | Path, data_path: str | Path, val_path: str | Path, out: str | Path, *,
                      options: ClassifyOptions = ClassifyOptions(), settings: LoopSettings = LoopSettings(),
                      device: str = "cpu", overwrite: bool = False,
                      progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train a classifier on `data_path`, score it on `val_path`, write a run dir at `out`."""
    out = Path(out)
    refuse_existing(out, overwrite)
    settings.check()
    if options.pooling not in POOLINGS:
        raise UsageError(f"--pooling must be one of {', '.join(POOLINGS)}, got {options.pooling!r}")
    train_rows, val_rows = read_labelled(data_path), read_labelled(val_path)
    labels = label_set(train_rows, Path(data_path))
    run_device = torch_device(device)
    loaded = load_base(base, device=run_device)
    max_tokens = options.max_tokens or min(loaded.config.max_seq_len, 512)
    if max_tokens < 1 or (loaded.config.is_transformer and max_tokens > loaded.config.max_seq_len):
        raise UsageError(f"--max-tokens must be in 1 … {loaded.config.max_seq_len} (the model's context)")
    tok = loaded.tokenizer
    train = encode_labelled(train_rows, data_path, labels, tok, max_tokens)
    val = encode_labelled(val_rows, val_path, labels, tok, max_tokens)
    weights = class_weights(options.class_weights, labels, train.labels)
    torch.manual_seed(settings.seed)
    model = SequenceClassifier(loaded.model, len(labels), options.pooling).to(run_device)
    pad_id = pad_id_of(tok)
    cached: dict[int, torch.Tensor] = {}
    if options.method == "head":
        for p in model.lm.parameters():
            p.requires_grad_(False)
        cached = {id(train): _features(model, train, pad_id, run_device),
                  id(val): _features(model, val, pad_id, run_device)}
    logits = _logits_fn(model, options.method, pad_id, run_device, cached)
    weight = torch.tensor(weights, device=run_device) if weights else None

    def loss_fn(idx: list[int]) -> torch.Tensor:
        y = torch.tensor([train.labels[i] for i in idx], device=run_device)
        return F.cross_entropy(logits(train, idx), y, weight=weight)

    total_steps = settings.total_steps(-(-len(train.labels) // settings.batch_size))
    with publish_run(out, overwrite) as run:
        log = MetricsLogger(run.tmp, tensorboard=False)
        final: dict[str, Any] = {}

        def validate() -> float:  # run_loop calls it in eval mode, last of all after the final step
            final["preds"], final["loss"] = _predict(logits, val, 64)
            return final["loss"]

        result = run_loop(model, _batches(train, settings.batch_size, settings.seed), loss_fn, settings,
                          total_steps, log, validate, progress)
        preds, val_loss = final["preds"], final["loss"]
        scores = classification_scores(val.labels, preds, labels)
        info = {"labels": labels, "pooling": options.pooling, "max_tokens": max_tokens, "method": options.method,
                "class_weights": weights}
        summary = {"task": "classify", "base_checkpoint": str(loaded.path), **info,
                   "train_examples": len(train.labels), "val_examples": len(val.labels),
                   "truncated": {"train": train.truncated, "val": val.truncated}, "steps": result.steps,
                   "stop_reason": result.stop_reason, "train_loss": result.train_loss, "val_loss": val_loss,
                   "elapsed_s": round(result.elapsed_s, 2), "validation": scores,
                   "options": asdict(options), "settings": asdict(settings)}
        meta = {"dataset_dir": base_dataset_dir(loaded.meta), "finetune": summary}
        ckpt = run.save_checkpoint(result.steps, model.lm, loaded.config, loaded.tokenizer_path, meta)
        save_head(ckpt, model, info)
        plot_confusion(scores["confusion"], labels, run.tmp / "plots" / "confusion.png",
                       f"validation: accuracy {scores['accuracy']:.1%}, macro-F1 {scores['macro_f1']:.3f}")
        run.finish(log, summary)
    return summary | {"run_dir": str(out), "checkpoint": str(run.checkpoint)}
