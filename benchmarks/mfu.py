"""CPU MFU of a real training step at the ~14M-parameter GPT (preset gpt2-14M: 6 layers, width 384,
context 256), against the fp32 matmul peak measured in the same run; plus eager vs torch.compile.

What is timed is `clusterlm.train.trainer.Trainer` itself (loader → forward → fp32 cross-entropy →
backward → grad clipping → AdamW) on real tokens from the default corpus, in fp32. MFU uses the
project's one FLOP definition (`clusterlm.model.flops.flops_per_token`: 6·N_matmul + 12·L·d·s).
The peak is the best fp32 matmul rate measured right before and right after the runs, so load
from other processes lowers both numbers together rather than flattering the ratio.

    python benchmarks/mfu.py [--steps 8] [--micro-batch 16] [--no-compile]
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

from clusterlm.cluster.probe import measure_matmul_flops
from clusterlm.config.data import DataConfig
from clusterlm.config.run import load_run_config
from clusterlm.data.prepare import prepare_dataset
from clusterlm.model.flops import flops_per_token, param_count
from clusterlm.train.metrics import read_metrics
from clusterlm.train.trainer import Trainer

TARGET_MFU = 0.80


def peak_fp32() -> float:
    """Best sustained fp32 matmul FLOP/s over a few large square sizes."""
    return max(measure_matmul_flops(torch.float32, "cpu", n=n, min_seconds=1.0) for n in (1024, 2048))


def timed_run(data: Path, out: Path, steps: int, warmup: int, micro_batch: int, compile_model: bool) -> dict:
    cfg = load_run_config(None, [
        "model.preset=gpt2-14M", f"data.dir={data}", f"train.out_dir={out}",
        "train.seq_len=256", f"train.micro_batch={micro_batch}", f"train.max_steps={warmup + steps}",
        "train.warmup_steps=1", "train.precision=fp32", "train.log_every=1", "train.eval_every=100000",
        "train.eval_batches=1", "train.ckpt_every=100000", "train.tensorboard=false", "train.plots=false",
        f"train.compile={'true' if compile_model else 'false'}",
    ])
    t0 = time.perf_counter()
    result = Trainer(cfg, progress=False).run()
    wall = time.perf_counter() - t0
    records = [r for r in read_metrics(out / "metrics.jsonl") if r.get("kind") == "train"]
    timed = [r["step_time_s"] for r in records if r["step"] > warmup]  # first steps: allocation / compile
    step_time_s = statistics.median(timed)
    tokens_per_step = micro_batch * 256
    first = [r["step_time_s"] for r in records if r["step"] <= warmup]
    return {"cfg": cfg, "step_time_s": step_time_s, "tokens_per_s": tokens_per_step / step_time_s,
            "warmup_s": sum(first), "wall_s": wall, "steps": result.step}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per run (default 8)")
    parser.add_argument("--micro-batch", type=int, default=16, help="sequences of 256 tokens per step")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile comparison")
    args = parser.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="clusterlm-mfu-") as tmp:
        root = Path(tmp)
        prepare_dataset(DataConfig(vocab_size=8192, max_input_mb=2.0, val_fraction=0.05), root / "data")
        peak_before = peak_fp32()
        eager = timed_run(root / "data", root / "eager", args.steps, 2, args.micro_batch, False)
        compiled = None
        if not args.no_compile:
            compiled = timed_run(root / "data", root / "compiled", args.steps, 3, args.micro_batch, True)
        peak_after = peak_fp32()
    peak = max(peak_before, peak_after)
    model_cfg = eager["cfg"].model.model_copy(update={"vocab_size": 8192})
    fpt = flops_per_token(model_cfg, 256)
    mfu = eager["tokens_per_s"] * fpt / peak
    print(f"model gpt2-14M: {param_count(model_cfg):,} parameters, {fpt / 1e6:.1f} MFLOP/token (training), "
          f"batch {args.micro_batch}×256 tokens")
    print(f"fp32 matmul peak: {peak / 1e9:.1f} GFLOP/s (before {peak_before / 1e9:.1f}, after {peak_after / 1e9:.1f})")
    print(f"eager:   {eager['tokens_per_s']:,.0f} tok/s, step {eager['step_time_s']:.3f} s, "
          f"achieved {eager['tokens_per_s'] * fpt / 1e9:.1f} GFLOP/s")
    print(f"MFU (eager, fp32): {mfu:.1%}  (target ≥ {TARGET_MFU:.0%}: {'PASS' if mfu >= TARGET_MFU else 'BELOW TARGET'})")
    if compiled is not None:
        ratio = compiled["tokens_per_s"] / eager["tokens_per_s"]
        print(f"torch.compile: {compiled['tokens_per_s']:,.0f} tok/s = {ratio:.2f}× eager "
              f"(MFU {compiled['tokens_per_s'] * fpt / peak:.1%}; first 3 steps incl. compilation took "
              f"{compiled['warmup_s']:.0f} s) → train.compile stays off by default on CPU"
              if ratio < 1.0 else
              f"torch.compile: {compiled['tokens_per_s']:,.0f} tok/s = {ratio:.2f}× eager "
              f"(MFU {compiled['tokens_per_s'] * fpt / peak:.1%}; compilation {compiled['warmup_s']:.0f} s)")
    print(f"load average after: {os.getloadavg()[0]:.2f} (timings are noisy when other processes share the cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
