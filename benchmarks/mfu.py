"""CPU MFU of a real training step at the ~14M-parameter GPT (preset gpt2-14M: 6 layers, width 384,
context 256), against the fp32 matmul peak measured in the same run; plus eager vs torch.compile.

What is timed is `clusterlm.train.trainer.Trainer` itself (loader → forward → fp32 cross-entropy →
backward → grad clipping → AdamW) on real tokens from the default corpus, in fp32. MFU uses the
project's one FLOP definition (`clusterlm.model.flops.flops_per_token`: 6·N_matmul + 12·L·d·s).
The peak is the best fp32 matmul rate (1024² and 2048² matmuls) measured right before and right
after the runs, with the same clock; load from other processes lowers both numbers rather than
flattering the ratio. On a shared machine, `--threads 1 --clock cpu` times process CPU time.

    python benchmarks/mfu.py [--steps 8] [--micro-batch 16] [--no-compile] [--threads N] [--clock wall|cpu]
Target: MFU ≥ 80 %.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from clusterlm.config.data import DataConfig
from clusterlm.config.run import load_run_config
from clusterlm.data.prepare import prepare_dataset
from clusterlm.model.flops import flops_per_token, param_count
from clusterlm.runtime.host import keep_freed_host_memory
from clusterlm.train.trainer import Trainer

TARGET_MFU = 0.80


class Clock:
    """Wall time, or this process's CPU time divided by its threads (robust to other load when
    the threads rarely wait on each other, e.g. with --threads 1)."""

    def __init__(self, kind: str, threads: int) -> None:
        self.kind, self.threads = kind, threads

    def now(self) -> float:
        return time.perf_counter() if self.kind == "wall" else time.process_time() / self.threads


def peak_fp32(clock: Clock) -> float:
    """Best fp32 matmul rate over a few large square sizes (repeated for ≥ 1 s each)."""
    best = 0.0
    for n in (1024, 2048):
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.matmul(a, b)  # warm-up
        deadline = time.perf_counter() + 1.0
        while time.perf_counter() < deadline:
            t0 = clock.now()
            torch.matmul(a, b)
            elapsed = clock.now() - t0
            if elapsed > 0:
                best = max(best, 2.0 * n**3 / elapsed)
    return best


def timed_run(data: Path, out: Path, steps: int, warmup: int, micro_batch: int, compile_model: bool,
              clock: Clock) -> dict:
    cfg = load_run_config(None, [
        "model.preset=gpt2-14M", f"data.dir={data}", f"train.out_dir={out}",
        "train.seq_len=256", f"train.micro_batch={micro_batch}", f"train.max_steps={warmup + steps}",
        "train.warmup_steps=1", "train.precision=fp32", "train.log_every=1", "train.eval_every=100000",
        "train.eval_batches=1", "train.ckpt_every=100000", "train.tensorboard=false", "train.plots=false",
        f"train.compile={'true' if compile_model else 'false'}",
    ])
    marks: list[float] = []  # clock at the end of every optimizer step
    walls: list[float] = []
    t0 = time.perf_counter()

    def mark(trainer: Trainer) -> None:
        marks.append(clock.now())
        walls.append(time.perf_counter() - t0)

    Trainer(cfg, progress=False, on_step_end=mark).run()
    wall = time.perf_counter() - t0
    # Step k's time = mark[k] − mark[k−1]; the first `warmup` steps (allocation, compilation) are dropped.
    deltas = [b - a for a, b in zip(marks[warmup - 1:], marks[warmup:])]
    step_time_s = statistics.median(deltas)
    return {"cfg": cfg, "step_time_s": step_time_s, "tokens_per_s": micro_batch * 256 / step_time_s,
            "warmup_s": walls[warmup - 1], "wall_s": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per run (default 8)")
    parser.add_argument("--micro-batch", type=int, default=16, help="sequences of 256 tokens per step")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile comparison")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time (default) or process CPU time / threads (use with --threads 1 "
                             "on a machine other processes are loading)")
    args = parser.parse_args()
    keep_freed_host_memory()  # what `clusterlm train` does at its entry point (runtime/host.py)
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = Clock(args.clock, torch.get_num_threads())

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="clusterlm-mfu-") as tmp:
        root = Path(tmp)
        prepare_dataset(DataConfig(vocab_size=8192, max_input_mb=2.0, val_fraction=0.05), root / "data")
        peak_before = peak_fp32(clock)
        eager = timed_run(root / "data", root / "eager", args.steps, 2, args.micro_batch, False, clock)
        compiled = None
        if not args.no_compile:
            compiled = timed_run(root / "data", root / "compiled", args.steps, 3, args.micro_batch, True, clock)
        peak_after = peak_fp32(clock)
    peak = max(peak_before, peak_after)
    model_cfg = eager["cfg"].model.model_copy(update={"vocab_size": 8192})
    fpt = flops_per_token(model_cfg, 256)
    mfu = eager["tokens_per_s"] * fpt / peak
    print(f"model gpt2-14M: {param_count(model_cfg):,} parameters, {fpt / 1e6:.1f} MFLOP/token (training), "
          f"batch {args.micro_batch}×256 tokens")
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s (before {peak_before / 1e9:.1f}, after {peak_after / 1e9:.1f})")
    print(f"eager:   {eager['tokens_per_s']:,.0f} tok/s, step {eager['step_time_s']:.3f} s, "
          f"achieved {eager['tokens_per_s'] * fpt / 1e9:.1f} GFLOP/s")
    print(f"MFU (eager, fp32): {mfu:.2%}  (target ≥ {TARGET_MFU:.0%}: {'PASS' if mfu >= TARGET_MFU else 'BELOW TARGET'})")
    if compiled is not None:
        ratio = compiled["tokens_per_s"] / eager["tokens_per_s"]
        print(f"torch.compile: {compiled['tokens_per_s']:,.0f} tok/s = {ratio:.2f}× eager "
              f"(MFU {compiled['tokens_per_s'] * fpt / peak:.1%}; setup + first 3 steps incl. compilation took "
              f"{compiled['warmup_s']:.0f} s wall) → train.compile stays off by default on CPU"
              if ratio < 1.0 else
              f"torch.compile: {compiled['tokens_per_s']:,.0f} tok/s = {ratio:.2f}× eager "
              f"(MFU {compiled['tokens_per_s'] * fpt / peak:.1%}; compilation {compiled['warmup_s']:.0f} s)")
    print(f"load average after: {os.getloadavg()[0]:.2f} (timings are noisy when other processes share the cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
