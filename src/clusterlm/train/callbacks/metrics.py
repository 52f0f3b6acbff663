"""Training metrics: a `train` record every `train.log_every` steps, the progress line, the summary.

Each record averages the steps since the previous one: loss, step time, tokens/s (summed over
data-parallel ranks), MFU against the device's peak (catalog for known GPUs, else measured —
on rank 0, shared with every rank), peak memory, and for distributed runs the bytes and time
spent in collectives. The run summary takes the median tokens/s over logged windows (robust to
the warm-up window and to load spikes).

The running window lives in the train state (`TrainState.log_window`), so it is checkpointed with
it: a resumed run's first record averages exactly the steps an uninterrupted run's would, and an
interrupted run writes no partial record (its window goes into the checkpoint instead). Apart from
timing fields, `metrics.jsonl` after any number of resumes equals the uninterrupted run's.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from clusterlm.distributed.comm_stats import CommStep
from clusterlm.model.flops import flops_per_token, param_count
from clusterlm.train.callbacks.base import Callback
from clusterlm.train.metrics import peak_memory_gib, read_metrics
from clusterlm.train.peak import PeakFlops, cached_device_peak

if TYPE_CHECKING:
    from clusterlm.train.step import StepResult
    from clusterlm.train.trainer import Trainer


def comm_average(steps: list[tuple[CommStep, float]]) -> dict[str, Any]:
    """Per-step means of (CommStep, step_time_s) pairs; the fraction is total comm / total time."""
    if not steps:
        return {}
    n = len(steps)
    step_time = sum(t for _, t in steps)
    comm_time = sum(c.comm_time_s for c, _ in steps)
    kinds = sorted({k for c, _ in steps for k in c.bytes_by_kind})
    return {
        "comm_bytes_per_step": sum(c.bytes for c, _ in steps) / n,
        "comm_wire_bytes_per_step": sum(c.wire_bytes for c, _ in steps) / n,
        "comm_collectives_per_step": sum(c.count for c, _ in steps) / n,
        "comm_time_s": comm_time / n,
        "compute_only_s": max(0.0, step_time - comm_time) / n,
        "comm_fraction": comm_time / step_time if step_time > 0 else None,
        **{f"comm_bytes_{k}_per_step": sum(c.bytes_by_kind.get(k, 0) for c, _ in steps) / n for k in kinds},
    }


class MetricsCallback(Callback):
    def __init__(self) -> None:
        self.comm_run: list[tuple[CommStep, float]] = []  # this process's logged steps (for the summary)
        self.peak: PeakFlops | None = None
        self.flops_per_token = 0.0

    def on_run_start(self, trainer: Trainer) -> None:
        c = trainer.components
        self.peak = trainer.process.collectives.decide_on_main(
            lambda: cached_device_peak(c.device, c.precision.name, trainer.run_dir))
        self.flops_per_token = flops_per_token(c.model_cfg, trainer.tcfg.seq_len)

    def on_step_end(self, trainer: Trainer, result: StepResult) -> None:
        step_time_s, state = trainer.last_step_time_s, trainer.state
        state.log_window.append([result.loss, result.grad_norm, step_time_s])
        recorder = trainer.components.recorder
        if recorder is not None:
            state.log_comm_window.append({"comm": asdict(recorder.take()), "step_time_s": step_time_s})
        trainer.progress.update(state.step, {"loss": f"{result.loss:.3f}", "lr": f"{result.lr:.2e}",
                                             "tok/s": f"{trainer.tokens_per_step / step_time_s:,.0f}"})
        if state.step % trainer.tcfg.log_every == 0:
            self.log_window(trainer, result.lr)

    def on_run_end(self, trainer: Trainer, stop_reason: str) -> None:
        state = trainer.state
        # An interrupted run resumes: its partial window is checkpointed, not logged.
        if state.log_window and stop_reason != "interrupted":
            self.log_window(trainer, trainer.components.schedule.lr_at(max(state.step - 1, 0), state.elapsed_s))

    def log_window(self, trainer: Trainer, lr: float) -> None:
        state, collectives = trainer.state, trainer.process.collectives
        window, state.log_window = state.log_window, []
        comm = [(CommStep(**d["comm"]), d["step_time_s"]) for d in state.log_comm_window]
        state.log_comm_window = []
        self.comm_run.extend(comm)
        finite = [w[0] for w in window if math.isfinite(w[0])]
        loss = sum(finite) / len(finite) if finite else float("nan")
        step_time_s = sum(w[2] for w in window) / len(window)
        tokens_per_s = collectives.reduce_mean(trainer.tokens_per_step / step_time_s)
        trainer.log({
            "kind": "train", "step": state.step, "loss": collectives.reduce_mean(loss), "lr": lr,
            "grad_norm": window[-1][1], "step_time_s": step_time_s, "tokens_per_s": tokens_per_s,
            "mfu": tokens_per_s * self.flops_per_token / self.peak.flops, "tokens_seen": state.tokens_seen,
            "elapsed_s": state.elapsed_s, "peak_mem_gib": peak_memory_gib(trainer.components.device),
            "nonfinite_steps": state.nonfinite_steps, **comm_average(comm),
        })

    def summary(self, trainer: Trainer, stop_reason: str) -> dict[str, Any]:
        state, c = trainer.state, trainer.components
        speeds = [r["tokens_per_s"] for r in read_metrics(trainer.metrics.path)
                  if r.get("kind") == "train" and r.get("tokens_per_s")]
        tokens_per_s = sorted(speeds)[len(speeds) // 2] if speeds else None
        have_gap = state.last_val_loss is not None and state.last_train_eval_loss is not None
        out: dict[str, Any] = {
            "stop_reason": stop_reason, "params": param_count(c.model_cfg), "tokens_seen": state.tokens_seen,
            "elapsed_s": state.elapsed_s, "tokens_per_s": tokens_per_s,
            "mfu": tokens_per_s * self.flops_per_token / self.peak.flops if tokens_per_s else None,
            "peak_flops": self.peak.flops, "peak_flops_source": self.peak.source,
            "precision": c.precision.name, "precision_reason": c.precision.reason, "device": str(c.device),
            "val_loss": state.last_val_loss, "train_eval_loss": state.last_train_eval_loss,
            "generalization_gap": state.last_val_loss - state.last_train_eval_loss if have_gap else None,
            "best_val_loss": state.best_val_loss, "best_val_step": state.best_val_step,
            "nonfinite_steps": state.nonfinite_steps, "peak_mem_gib": peak_memory_gib(c.device),
        }
        if trainer.process.distributed:
            steps = self.comm_run + [(CommStep(**d["comm"]), d["step_time_s"]) for d in state.log_comm_window]
            # The first step builds DDP buckets / FSDP buffers and is not representative.
            out.update({"parallel": c.layout.plan.describe(), "world_size": trainer.process.world_size,
                        **comm_average(steps[1:] if len(steps) > 1 else steps)})
        return out
