"""Supervised fine-tuning of a causal LM on chat/pair records: full or LoRA, loss on replies only.

    base checkpoint ──▶ (LoRA wrap) ──▶ loop over packed rows, loss where mask ──▶ (merge) ──▶ run dir

The loss is the mean cross-entropy over the tokens the mask marks (assistant replies and
their end-of-text). It is computed on the selected hidden states only — the rows of the
prompt never reach the vocabulary projection — so a prompt token's prediction contributes
exactly zero to the loss and to every gradient (the prompt still conditions the reply
through attention, as it must).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from clusterlm.config import limits as L
from clusterlm.config.limits import check_range
from clusterlm.errors import UsageError
from clusterlm.finetune.body import hidden_states, pad_id_of
from clusterlm.finetune.lora import apply_lora, merge_lora
from clusterlm.finetune.loop import LoopSettings, autocast_for, run_loop
from clusterlm.finetune.runfiles import base_dataset_dir, publish_run, refuse_existing
from clusterlm.finetune.sft_data import SFTData, collate, load_sft_data, make_rows
from clusterlm.finetune.store import load_base, torch_device
from clusterlm.train.metrics import MetricsLogger
from clusterlm.model.loss import linear_cross_entropy

Method = Literal["full", "lora"]


@dataclass(frozen=True)
class SFTOptions:
    method: Method = "full"
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    packing: bool = True
    drop_long: bool = False
    context: int | None = None  # tokens per input row; default the model's max_seq_len

    def check(self) -> None:
        check_range("--lora-rank", self.lora_rank, 1, L.MAX_D_MODEL)
        check_range("--lora-alpha", self.lora_alpha, 0, 1e6, low_open=True)
        check_range("--lora-dropout", self.lora_dropout, 0, 1, high_open=True)
        check_range("--context", self.context, 2, L.MAX_SEQ_LEN)


def masked_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                   mask: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of `hidden @ weight.T` against `targets` where `mask`; hidden (B, T, C),
    weight (V, C), targets and mask (B, T). Unmasked positions are never projected."""
    selected = hidden[mask]  # (N, C), N = trained tokens in the batch
    if selected.shape[0] == 0:
        return hidden.sum() * 0.0  # a batch of prompts only: no signal, but a valid graph
    return linear_cross_entropy(selected, weight, targets[mask])


def sft_loss(lm: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return masked_lm_loss(hidden_states(lm, inputs), lm.output.weight, targets, mask)


def _batches(data: SFTData, row_tokens: int, options: SFTOptions, settings: LoopSettings, pad_id: int,
             device: torch.device) -> Iterator[tuple[torch.Tensor, ...]]:
    epoch = 0
    while True:
        rows = make_rows(data.examples, row_tokens, options.packing, settings.seed + epoch)
        for i in range(0, len(rows), settings.batch_size):
            yield tuple(t.to(device) for t in collate(rows[i:i + settings.batch_size], pad_id))
        epoch += 1


@torch.no_grad()
def validation_loss(lm: nn.Module, data: SFTData, row_tokens: int, packing: bool, batch_size: int,
                    pad_id: int, device: torch.device) -> float:
    """Mean loss over every trained token of `data` (token-weighted across batches)."""
    rows = make_rows(data.examples, row_tokens, packing, seed=0)
    total, count = 0.0, 0
    for i in range(0, len(rows), batch_size):
        inputs, targets, mask = (t.to(device) for t in collate(rows[i:i + batch_size], pad_id))
        n = int(mask.sum())
        if n:
            total += float(sft_loss(lm, inputs, targets, mask)) * n
            count += n
    return total / max(count, 1)


def _prepare(base: str | Path, data_path: str | Path, val_path: str | Path | None, options: SFTOptions,
             device: torch.device) -> tuple[Any, int, SFTData, SFTData | None]:
    loaded = load_base(base, device=device)
    cfg = loaded.config
    context = options.context or cfg.max_seq_len
    if context < 2 or (cfg.is_transformer and context > cfg.max_seq_len):
        raise UsageError(f"--context must be in 2 … {cfg.max_seq_len} (the model's context), got {context}")
    train = load_sft_data(data_path, loaded.tokenizer, context, options.drop_long)
    val = load_sft_data(val_path, loaded.tokenizer, context, options.drop_long) if val_path else None
    return loaded, context, train, val


def finetune_sft(base: str | Path, data_path: str | Path, out: str | Path, *, val_path: str | Path | None = None,
                 options: SFTOptions = SFTOptions(), settings: LoopSettings = LoopSettings(),
                 device: str = "cpu", overwrite: bool = False,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fine-tune `base` on `data_path`; write a run dir at `out`; return the summary."""
    out = Path(out)
    refuse_existing(out, overwrite)
    settings.check()
    options.check()
    run_device = torch_device(device)
    loaded, context, train, val = _prepare(base, data_path, val_path, options, run_device)
    lm, tok = loaded.model, loaded.tokenizer
    torch.manual_seed(settings.seed)
    wrapped = 0
    if options.method == "lora":
        wrapped = apply_lora(lm, options.lora_rank, options.lora_alpha, options.lora_dropout)
    trainable = sum(p.numel() for p in lm.parameters() if p.requires_grad)
    total_params = sum(p.numel() for p in lm.parameters())
    pad_id = pad_id_of(tok)
    row_tokens = context + 1
    rows_per_epoch = len(make_rows(train.examples, row_tokens, options.packing, settings.seed))
    total_steps = settings.total_steps(-(-rows_per_epoch // settings.batch_size))

    def loss_fn(batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with autocast_for(run_device):
            return sft_loss(lm, *batch)

    evaluate = (lambda: validation_loss(lm, val, row_tokens, options.packing, settings.batch_size, pad_id,
                                        run_device)) if val else None
    with publish_run(out, overwrite) as run:
        log = MetricsLogger(run.tmp, tensorboard=False)
        result = run_loop(lm, _batches(train, row_tokens, options, settings, pad_id, run_device), loss_fn,
                          settings, total_steps, log, evaluate, progress)
        merged = merge_lora(lm) if options.method == "lora" else 0
        val_loss = result.val_loss
        summary = {
            "task": "sft", "base_checkpoint": str(loaded.path), "method": options.method,
            "lora_layers": wrapped, "lora_merged": merged, "trainable_params": trainable,
            "total_params": total_params, "examples": len(train.examples), "dropped_long": train.dropped_long,
            "response_tokens": train.response_tokens, "rows_per_epoch": rows_per_epoch,
            "packing_fill": sum(len(e.ids) for e in train.examples) / (rows_per_epoch * row_tokens),
            "steps": result.steps, "stop_reason": result.stop_reason, "train_loss": result.train_loss,
            "val_loss": val_loss, "val_examples": len(val.examples) if val else 0,
            "elapsed_s": round(result.elapsed_s, 2), "options": asdict(options), "settings": asdict(settings),
        }
        meta = {"dataset_dir": base_dataset_dir(loaded.meta), "val_loss": val_loss, "finetune": summary}
        run.save_checkpoint(result.steps, lm, loaded.config, loaded.tokenizer_path, meta)
        run.finish(log, summary)
    return summary | {"run_dir": str(out), "checkpoint": str(run.checkpoint)}
