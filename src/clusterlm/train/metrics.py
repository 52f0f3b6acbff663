"""Where training numbers go: `metrics.jsonl`, TensorBoard, a progress line, memory.

One record per logged step (`kind: "train"`), per validation (`kind: "val"`) and a
final `kind: "summary"`. Field names carry units (`step_time_s`, `tokens_per_s`,
`peak_mem_gib`) so other tools (the cluster planner's closed-loop check) can read
them without guessing.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import torch
from tqdm import tqdm

from clusterlm.fsio import atomic_write_text

METRICS_FILE = "metrics.jsonl"
_GIB = float(1 << 30)


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory of this process: CUDA max allocated, else peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / _GIB
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1.0 if sys.platform == "darwin" else 1024.0
    return rss * scale / _GIB


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl (a torn last line from a crash is ignored)."""
    records = []
    p = Path(path)
    if not p.is_file():
        return records
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsLogger:
    """Appends JSON lines (flushed per record) and mirrors scalars to TensorBoard."""

    def __init__(self, run_dir: str | Path, *, enabled: bool = True, tensorboard: bool = True,
                 resume_step: int | None = None) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self.enabled = enabled
        self._fh: TextIO | None = None
        self._tb = None
        if not enabled:
            return
        if resume_step is not None:
            # Records written after the checkpoint we resume from describe steps that will be
            # redone; drop them so the file reads as one uninterrupted run.
            kept = [r for r in read_metrics(self.path)
                    if r.get("step", 0) <= resume_step and r.get("kind") != "summary"]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        elif self.path.exists():
            self.path.unlink()
        self._fh = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            try:  # tensorboard is imported only by runs that log to it (≈ 1 s)
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is a dependency, but never fail a run over logging
                SummaryWriter = None  # type: ignore[assignment]
            if SummaryWriter is not None:
                self._tb = SummaryWriter(
                    log_dir=str(Path(run_dir) / "tb"), purge_step=resume_step + 1 if resume_step else None
                )

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled or self._fh is None:
            return
        clean = {k: _json_safe(v) for k, v in record.items()}
        self._fh.write(json.dumps(clean) + "\n")
        self._fh.flush()
        if self._tb is not None and "step" in record:
            kind = record.get("kind", "train")
            for key, value in record.items():
                if key in ("step", "kind") or not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
                if math.isfinite(value):
                    self._tb.add_scalar(f"{kind}/{key}", value, record["step"])

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


class Progress:
    """A tqdm bar on stderr when it is a terminal; otherwise a plain line every ~10 s."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True, line_interval_s: float = 10.0):
        self.enabled = enabled
        self._bar = None
        self._tty = sys.stderr.isatty()
        self._last_line = 0.0
        self._interval = line_interval_s
        if enabled and self._tty:
            self._bar = tqdm(total=total, initial=initial, file=sys.stderr, unit="step", dynamic_ncols=True,
                             desc="train")

    def update(self, step: int, fields: dict[str, str]) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix(fields, refresh=False)
            self._bar.refresh()
            return
        now = time.monotonic()
        if now - self._last_line >= self._interval:
            self._last_line = now
            sys.stderr.write(f"step {step}: " + " ".join(f"{k}={v}" for k, v in fields.items()) + "\n")
            sys.stderr.flush()

    def write(self, text: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
