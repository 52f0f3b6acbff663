"""Build a fine-tuning run dir under a temporary name and publish it in one rename.

    RUN/checkpoints/step-N/   the fine-tuned model (a normal checkpoint; see `store`)
    RUN/latest                its name
    RUN/metrics.jsonl         training log (trainer format)
    RUN/plots/loss.png        train and validation loss
    RUN/summary.json          what was trained, on what, and the results

Nothing appears at RUN until everything is written: a failed or interrupted run leaves no
directory that looks finished (and an existing RUN is replaced only with `overwrite`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from clusterlm.errors import OutputExistsError, UsageError
from clusterlm.fsio import atomic_dir, atomic_write_json
from clusterlm.finetune.store import save_run_checkpoint
from clusterlm.config.model import ModelConfig
from clusterlm.train.metrics import MetricsLogger
from clusterlm.train.plots import plot_loss


@dataclass
class RunBuilder:
    out: Path
    tmp: Path
    checkpoint: Path | None = None  # final path of the checkpoint dir
    files: list[str] = field(default_factory=list)

    def save_checkpoint(self, step: int, model: nn.Module, cfg: ModelConfig, tokenizer_path: Path,
                        meta: dict[str, Any]) -> Path:
        """Write the checkpoint; returns its path inside the temporary dir (for extra files)."""
        written = save_run_checkpoint(self.tmp, step, model, cfg, tokenizer_path, meta)
        self.checkpoint = self.out / written.relative_to(self.tmp)
        return written

    def finish(self, log: MetricsLogger, summary: dict[str, Any]) -> None:
        log.close()
        plot_loss(log.path, self.tmp / "plots" / "loss.png")
        atomic_write_json(self.tmp / "summary.json", summary)


def refuse_existing(out: str | Path | None, overwrite: bool) -> None:
    """Checked before any work starts, so a run never ends by refusing to publish its result: an
    existing `out` needs `overwrite`, and its nearest existing ancestor must be a writable directory."""
    if out is None:
        return
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    ancestor = next((p for p in out.absolute().parents if p.exists()), Path("/"))
    if not ancestor.is_dir():
        raise UsageError(f"{out}: {ancestor} is a file, not a directory; choose another output path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"{out}: {ancestor} is not writable; choose another output path")


@contextmanager
def publish_run(out: Path, overwrite: bool) -> Iterator[RunBuilder]:
    try:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            yield RunBuilder(out, tmp)
    except FileExistsError:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it") from None


def base_dataset_dir(meta: dict[str, Any]) -> str | None:
    """The pretraining dataset of the base checkpoint, so `clusterlm eval` can score the fine-tuned
    model on the text it was pretrained on (how much it forgot) with the same tokenizer."""
    if meta.get("dataset_dir"):
        return str(meta["dataset_dir"])
    return ((meta.get("config") or {}).get("data") or {}).get("dir")
