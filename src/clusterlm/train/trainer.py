"""The training loop: one optimizer step at a time, with validation, checkpoints and logs.

`Trainer(cfg).run()` trains a model from a `RunConfig`. Re-running it on the same
`train.out_dir` resumes from the newest checkpoint (`resume="auto"`); a resumed run
reproduces an uninterrupted one bit for bit on CPU when the schedule is step-based,
because everything the loop depends on — weights, AdamW moments, schedule, loader
position, RNGs, counters — is saved in the checkpoint (see `Trainer.stateful`).

Distributed training reuses this loop: a `World` describes the process group, the
model comes through `setup_model`, and checkpoints go through one backend object.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from clusterlm.config.base import dump_yaml
from clusterlm.config.run import RunConfig
from clusterlm.errors import CheckpointError, OutputExistsError, TrainingError
from clusterlm.fsio import atomic_write_text
from clusterlm.model.flops import flops_per_token, param_count
from clusterlm.train import setup as setup_mod
from clusterlm.train.augment import augment_batch, augment_generator
from clusterlm.train.checkpoint import CheckpointBackend, CheckpointManager
from clusterlm.train.host_memory import keep_freed_host_memory
from clusterlm.train.metrics import MetricsLogger, Progress, peak_memory_gib
from clusterlm.train.optim import WarmupCosineSchedule, build_optimizer
from clusterlm.train.precision import resolve_device, select_precision
from clusterlm.train.state import RNGState, TrainState, seed_everything
from clusterlm.train.world import World

Resume = Literal["auto", "require", "never"]


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    tokens_seen: int
    stop_reason: str  # "max_steps" | "max_minutes" | "early_stopping" | "interrupted" | "already_complete"
    checkpoint: Path | None
    summary: dict[str, Any] = field(default_factory=dict)


class _Snapshot:
    """A frozen state dict posing as a Stateful (loader/RNG state as of the step's start)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        return self._state

    def load_state_dict(self, state: dict[str, Any]) -> None:  # pragma: no cover - never loaded
        self._state = state


class Trainer:
    def __init__(
        self,
        cfg: RunConfig,
        *,
        world: World | None = None,
        resume: Resume = "auto",
        progress: bool = True,
        on_step_end: Callable[[Trainer], None] | None = None,
        checkpoint_backend: CheckpointBackend | None = None,
    ) -> None:
        self.cfg = cfg
        self.tcfg = cfg.train
        self.world = world or World(device=resolve_device(cfg.train.device))
        self.resume_mode = resume
        self.show_progress = progress and self.world.is_main
        self.on_step_end = on_step_end
        self.run_dir = Path(cfg.train.out_dir)
        self.ckpt = CheckpointManager(self.run_dir, cfg.train.keep_last, self.world,
                                      checkpoint_backend or self.world.checkpoint_backend())
        self._stop_requested: str | None = None
        self._setup_done = False
        self._updating = False

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Validate everything that can be validated before touching the run dir."""
        tcfg, world = self.tcfg, self.world
        self.dataset = setup_mod.open_dataset(self.cfg)
        self.model_cfg = setup_mod.resolve_model_config(self.cfg.model, self.dataset, tcfg)
        self.grad_accum = setup_mod.resolve_grad_accum(tcfg, world)
        setup_mod.check_splits(self.dataset, tcfg.seq_len, tcfg.micro_batch)
        self.precision = select_precision(tcfg.precision, world.device)
        if world.device.type == "cpu":
            keep_freed_host_memory()  # ~1.4× faster CPU steps: no page faults on reused buffers

        resume_from = self._find_resume_checkpoint()
        # Resuming wins over train.init_from: init_from only seeds a fresh run.
        seed_everything(tcfg.seed)
        self.handles = setup_mod.setup_model(
            self.model_cfg, tcfg, world, init_from=tcfg.init_from if resume_from is None else None
        )
        self.model = self.handles.model
        self.optimizer = build_optimizer(self.model, tcfg)
        self.schedule = WarmupCosineSchedule.from_config(tcfg)
        self.scaler = torch.amp.GradScaler(world.device.type) if self.precision.needs_grad_scaler else None
        from clusterlm.data.loader import TokenLoader

        self.loader = TokenLoader(self.dataset, "train", tcfg.micro_batch, tcfg.seq_len, seed=tcfg.seed,
                                  rank=world.dp_rank, world_size=world.dp_world_size, mode="random")
        self.state = TrainState()
        self.rng = RNGState()
        self.resumed_from = resume_from
        if resume_from is not None:
            self.ckpt.load(resume_from, self.model, self.stateful())
        self.tokens_per_step = tcfg.micro_batch * self.grad_accum * tcfg.seq_len * world.dp_world_size
        self.flops_per_token = flops_per_token(self.model_cfg, tcfg.seq_len)
        self.n_params = param_count(self.model_cfg)
        self._setup_done = True

    def stateful(self) -> dict[str, Any]:
        """Everything besides the weights that an exact resume needs (saved in train_state.pt)."""
        states: dict[str, Any] = {
            "optimizer": self.optimizer,
            "schedule": self.schedule,
            "loader": self.loader,
            "train": self.state,
            "rng": self.rng,
        }
        if self.scaler is not None:
            states["grad_scaler"] = self.scaler
        return states

    def _find_resume_checkpoint(self) -> Path | None:
        latest = self.ckpt.latest()
        if latest is None:
            if self.resume_mode == "require":
                raise CheckpointError(f"nothing to resume: {self.run_dir} has no checkpoint")
            return None
        if self.resume_mode == "never":
            raise OutputExistsError(
                f"{self.run_dir} already holds checkpoints (latest {latest.name}); choose another "
                "train.out_dir, delete it, or drop --no-resume to continue that run"
            )
        meta = setup_mod.read_meta(latest)
        diffs = setup_mod.same_weights_config(self.model_cfg, meta.get("model", {}))
        if diffs:
            raise CheckpointError(
                f"{latest} was trained with a different model config ({setup_mod.describe_mismatch(diffs)}); "
                "use the original model config to resume, or another train.out_dir"
            )
        from clusterlm.eval.runner import check_tokenizer_matches

        check_tokenizer_matches(latest, self.dataset)
        return latest

    # ------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        if not self._setup_done:
            self.setup()
        tcfg, world, state = self.tcfg, self.world, self.state
        if world.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.ckpt.remove_stale_temporaries()
            resolved = self.cfg.model_copy(update={"model": self.model_cfg})
            atomic_write_text(self.run_dir / "config.yaml", dump_yaml(resolved))
        self.peak = _cached_peak(world.device, self.precision.name, self.run_dir)
        self.metrics = MetricsLogger(self.run_dir, enabled=world.is_main, tensorboard=tcfg.tensorboard,
                                     resume_step=state.step if self.resumed_from is not None else None)
        self.progress = Progress(tcfg.max_steps, initial=state.step, enabled=self.show_progress)
        if self.resumed_from is not None:
            self.progress.write(f"resuming from {self.resumed_from} (step {state.step})")
        previous_handlers = self._install_signal_handlers()
        last_ckpt: Path | None = self.resumed_from
        stop_reason = self._stop_reason()
        if stop_reason is not None and self.resumed_from is not None:
            stop_reason = "already_complete"
        window: list[tuple[float, float, float]] = []  # (loss, grad_norm, step_time_s) since last log
        last_val_step = -1
        try:
            while stop_reason is None:
                loader_state, rng_state = self.loader.state_dict(), self.rng.state_dict()
                t0 = time.perf_counter()
                try:
                    loss, grad_norm, lr = self.train_step()
                except KeyboardInterrupt:
                    if self._updating:  # weights half-updated: keep the previous checkpoint as the latest
                        self.progress.write(f"interrupted during the update of step {state.step}; the last "
                                            f"checkpoint is {self.ckpt.latest()}")
                        raise
                    # Mid-step, before the update: rewind the loader and RNG to the step's start so
                    # the saved state is consistent (the step is redone on resume).
                    self.optimizer.zero_grad(set_to_none=True)
                    last_ckpt = self._save(snapshot={"loader": _Snapshot(loader_state), "rng": _Snapshot(rng_state)})
                    self.progress.write(f"interrupted at step {state.step}; checkpoint {last_ckpt}; "
                                        "run the same command again to resume")
                    raise
                # A distributed world agrees on the step time (the slowest rank's) and takes its comm stats.
                step_time_s = self.world.step_end(time.perf_counter() - t0)
                state.elapsed_s += step_time_s
                state.step += 1
                state.tokens_seen += self.tokens_per_step
                window.append((loss, grad_norm, step_time_s))
                tokens_per_s = self.tokens_per_step / step_time_s
                self.progress.update(state.step, {"loss": f"{loss:.3f}", "lr": f"{lr:.2e}",
                                                  "tok/s": f"{tokens_per_s:,.0f}"})
                if state.step % tcfg.log_every == 0:
                    self._log_train(window, lr)
                    window = []
                if not math.isfinite(loss) or not math.isfinite(grad_norm):
                    state.nonfinite_steps += 1
                    if state.nonfinite_steps >= tcfg.max_nonfinite:
                        self._stop_on_nonfinite()
                if state.step % tcfg.eval_every == 0:
                    t_eval = time.perf_counter()
                    self.validate()
                    last_val_step = state.step
                    state.elapsed_s += time.perf_counter() - t_eval
                stop_reason = self.world.agree(self._stop_reason())
                if state.step % tcfg.ckpt_every == 0 and stop_reason is None:
                    t_ckpt = time.perf_counter()
                    last_ckpt = self._save()
                    state.elapsed_s += time.perf_counter() - t_ckpt
                if self.on_step_end is not None:
                    self.on_step_end(self)
                    stop_reason = stop_reason or self.world.agree(self._stop_reason())
            if window:
                self._log_train(window, self.schedule.lr_at(max(state.step - 1, 0), state.elapsed_s))
            if stop_reason != "already_complete":
                # An interrupted run skips the extra validation: it would change the
                # early-stopping counters and break bitwise-exact resume.
                if last_val_step != state.step and stop_reason != "interrupted":
                    self.validate()
                last_ckpt = self._save()
        finally:
            self.ckpt.wait()  # an asynchronous checkpoint still being written
            self._restore_signal_handlers(previous_handlers)
            self.progress.close()
        summary = self._summary(stop_reason)
        self.metrics.log({"kind": "summary", "step": state.step, **summary})
        self.metrics.close()
        if world.is_main and tcfg.plots:
            from clusterlm.train.plots import plot_loss

            plot_loss(self.metrics.path, self.run_dir / "plots" / "loss.png")
        world.barrier()
        return TrainResult(self.run_dir, state.step, state.tokens_seen, stop_reason, last_ckpt, summary)

    def compute_loss(self, module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of `module` on one micro-batch, fp32 softmax even under autocast.

        Where allowed, the output projection is fused with the loss (`model/loss.py`: same value
        and gradients without the (B·T, V) logits tensor); a tensor-parallel head takes the plain path.
        """
        if self.handles.fused_loss:
            return module(inputs, targets=targets)
        logits = module(inputs)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    def train_step(self) -> tuple[float, float, float]:
        """One optimizer step over `grad_accum` micro-batches → (loss, grad norm, lr).

        A non-finite loss or gradient norm skips the update (weights and AdamW moments
        untouched); the caller counts it.
        """
        tcfg, device, state = self.tcfg, self.world.device, self.state
        lr = self.schedule.apply(self.optimizer, state.step, state.elapsed_s)
        module = self.handles.train_module
        loss_sum = torch.zeros((), device=device)
        for micro in range(self.grad_accum):
            x, y = next(self.loader)
            if tcfg.augment != "none":
                x, y = augment_batch(tcfg.augment, x, y, rate=tcfg.augment_rate, eos_id=self.dataset.eos_id,
                                     pad_id=self.dataset.pad_id,
                                     generator=augment_generator(tcfg.seed, state.step, micro))
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            # Data-parallel gradients are reduced once per step, after the last micro-batch.
            with self.handles.micro_step(sync=micro == self.grad_accum - 1):
                with self.precision.autocast(device):
                    loss = self.compute_loss(module, x, y)
                # Each micro-batch contributes 1/accum of the step's mean loss, so the summed
                # gradient equals that of one big batch (and DDP/FSDP average over ranks).
                scaled = loss / self.grad_accum
                if self.scaler is not None:
                    scaled = self.scaler.scale(scaled)
                scaled.backward()
            loss_sum += loss.detach()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        max_norm = tcfg.grad_clip if tcfg.grad_clip > 0 else float("inf")
        grad_norm = self.handles.clip_grad_norm(max_norm)
        loss_value = float(loss_sum) / self.grad_accum  # one host sync per step
        grad_norm_value = float(grad_norm)
        finite = math.isfinite(loss_value) and math.isfinite(grad_norm_value)
        self._updating = True  # weights change from here on: an interrupt now cannot be rewound
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips the update itself on inf/nan gradients
            self.scaler.update()
        elif finite:
            self.optimizer.step()
        self._updating = False
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, grad_norm_value, lr

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict[str, Any]:
        """Loss on `eval_batches` of val and of train (eval mode) → generalisation gap; early stopping."""
        from clusterlm.eval.runner import evaluate_model

        tcfg, state = self.tcfg, self.state
        report = evaluate_model(
            self.model, self.dataset, ["train", "val"], seq_len=tcfg.seq_len, batch_size=tcfg.micro_batch,
            max_batches=tcfg.eval_batches, device=self.world.device,
            autocast=lambda: self.precision.autocast(self.world.device), world=self.world,
        )
        val, train = report["splits"]["val"], report["splits"]["train"]
        state.last_val_loss, state.last_train_eval_loss = val["loss"], train["loss"]
        if state.best_val_loss is None or val["loss"] < state.best_val_loss - tcfg.early_stopping_min_delta:
            state.best_val_loss, state.best_val_step = val["loss"], state.step
            state.evals_without_improvement = 0
        else:
            state.evals_without_improvement += 1
        record = {
            "kind": "val", "step": state.step, "val_loss": val["loss"], "train_loss": train["loss"],
            "generalization_gap": report["generalization_gap"], "val_bits_per_byte": val["bits_per_byte"],
            "val_top1_accuracy": val["top1_accuracy"], "best_val_loss": state.best_val_loss,
        }
        self.metrics.log(record)
        self.progress.write(
            f"step {state.step}: val loss {val['loss']:.4f} ({val['bits_per_byte']:.3f} bits/byte), "
            f"train loss {train['loss']:.4f}, gap {report['generalization_gap']:+.4f}"
        )
        return record

    # ------------------------------------------------------------------ helpers
    def _stop_reason(self) -> str | None:
        tcfg, state = self.tcfg, self.state
        if self._stop_requested:
            return self._stop_requested
        if state.step >= tcfg.max_steps:
            return "max_steps"
        if tcfg.max_minutes is not None and state.elapsed_s >= tcfg.max_minutes * 60.0:
            return "max_minutes"
        if (tcfg.early_stopping_patience is not None
                and state.evals_without_improvement >= tcfg.early_stopping_patience):
            return "early_stopping"
        return None

    def request_stop(self, reason: str = "interrupted") -> None:
        """Finish the current step, validate, checkpoint and return (used by SIGTERM/SIGINT)."""
        self._stop_requested = reason

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}

        def handler(signum: int, frame: Any) -> None:
            if signum == signal.SIGINT and self._stop_requested:
                raise KeyboardInterrupt  # second Ctrl-C: stop now (state rewound and saved)
            self.request_stop("interrupted")
            self.progress.write(f"signal {signal.Signals(signum).name}: stopping after this step "
                                "(checkpoint, then exit; Ctrl-C again to stop immediately)")

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any]) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    def _save(self, snapshot: dict[str, Any] | None = None) -> Path:
        states = {**self.stateful(), **(snapshot or {})}
        meta = {
            "tokens_seen": self.state.tokens_seen,
            "dataset_dir": str(Path(self.dataset.path).resolve()),
            "val_loss": self.state.last_val_loss,
            "config": self.cfg.model_copy(update={"model": self.model_cfg}).model_dump(mode="json"),
        }
        return self.ckpt.save(self.state.step, self.model, self.model_cfg, Path(self.dataset.tokenizer_path),
                              meta, states)

    def _stop_on_nonfinite(self) -> None:
        state, tcfg = self.state, self.tcfg
        finite_weights = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        where = self.ckpt.latest()
        if finite_weights:
            where = self._save()  # skipped steps never touched the weights: still a usable model
        self.metrics.log({"kind": "summary", "step": state.step, "stop_reason": "nonfinite",
                          "nonfinite_steps": state.nonfinite_steps})
        self.metrics.close()
        self.progress.close()
        ckpt = f"last checkpoint: {where}" if where is not None else "no checkpoint was written"
        raise TrainingError(
            f"stopped at step {state.step}: {state.nonfinite_steps} steps had a non-finite loss or gradient "
            f"(train.max_nonfinite={tcfg.max_nonfinite}); {ckpt}; lower train.lr or check the data"
        )

    def _log_train(self, window: list[tuple[float, float, float]], lr: float) -> None:
        state = self.state
        finite = [w for w in window if math.isfinite(w[0])]
        loss = sum(w[0] for w in finite) / len(finite) if finite else float("nan")
        step_time_s = sum(w[2] for w in window) / len(window)
        tokens_per_s = self.world.reduce_mean(self.tokens_per_step / step_time_s)
        achieved = tokens_per_s * self.flops_per_token
        self.metrics.log({
            "kind": "train", "step": state.step, "loss": self.world.reduce_mean(loss), "lr": lr,
            "grad_norm": window[-1][1], "step_time_s": step_time_s, "tokens_per_s": tokens_per_s,
            "mfu": achieved / self.peak.flops, "tokens_seen": state.tokens_seen,
            "elapsed_s": state.elapsed_s, "peak_mem_gib": peak_memory_gib(self.world.device),
            "nonfinite_steps": state.nonfinite_steps, **self.world.comm_metrics(),
        })

    def _summary(self, stop_reason: str) -> dict[str, Any]:
        state = self.state
        from clusterlm.train.metrics import read_metrics

        train_records = [r for r in read_metrics(self.metrics.path) if r.get("kind") == "train"]
        speeds = [r["tokens_per_s"] for r in train_records if r.get("tokens_per_s")]
        # Median over logged windows: robust to the first (warm-up) window and to load spikes.
        tokens_per_s = sorted(speeds)[len(speeds) // 2] if speeds else None
        return {
            "stop_reason": stop_reason,
            "params": self.n_params,
            "tokens_seen": state.tokens_seen,
            "elapsed_s": state.elapsed_s,
            "tokens_per_s": tokens_per_s,
            "mfu": tokens_per_s * self.flops_per_token / self.peak.flops if tokens_per_s else None,
            "peak_flops": self.peak.flops,
            "peak_flops_source": self.peak.source,
            "precision": self.precision.name,
            "precision_reason": self.precision.reason,
            "device": str(self.world.device),
            "val_loss": state.last_val_loss,
            "train_eval_loss": state.last_train_eval_loss,
            "generalization_gap": (state.last_val_loss - state.last_train_eval_loss
                                   if state.last_val_loss is not None and state.last_train_eval_loss is not None
                                   else None),
            "best_val_loss": state.best_val_loss,
            "best_val_step": state.best_val_step,
            "nonfinite_steps": state.nonfinite_steps,
            "peak_mem_gib": peak_memory_gib(self.world.device),
            **self.world.comm_summary(),
        }


_PEAK_MEMO: dict[tuple[str, str], Any] = {}


def _cached_peak(device: torch.device, dtype: str, run_dir: Path) -> Any:
    """Device peak FLOP/s, measured at most once per process (and cached in the run dir)."""
    from clusterlm.train.peak import device_peak_flops, device_name

    key = (device_name(device), dtype)
    if key not in _PEAK_MEMO:
        _PEAK_MEMO[key] = device_peak_flops(device, dtype, cache_dir=run_dir)
    return _PEAK_MEMO[key]


def train(cfg: RunConfig, **kwargs: Any) -> TrainResult:
    """Functional entry point: `train(load_run_config(path, overrides))`."""
    return Trainer(cfg, **kwargs).run()
