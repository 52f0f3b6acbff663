"""Closed loop on this machine: `plan --search --emit` → `launch` → train, predicted vs measured.

For each rank count N (default 4 and 8 CPU processes on this host):

1. `clusterlm plan --model run.yaml --cluster local --gpus N --search --json` ranks the layouts
   clusterlm runs (the first use of `local` probes this machine; the benchmark keeps its own
   cache dir, so the probe is fresh and taken just before the runs);
2. the top three layouts and the best one with pipeline parallelism (p > 1) are emitted, each
   with `clusterlm plan … --emit DIR` (its prediction: step time, per-rank memory);
3. `clusterlm launch DIR/config.yaml --gpus-per-node N --run` trains 5 steps; the step time is
   the median of the logged steps after the first two, the per-rank peak memory each worker's
   peak resident set (VmHWM, sampled from /proc while it runs);
4. predicted ÷ measured for both (targets: step time within 25 %, memory within 15 %).

The model is a small untied GPT (4 layers, width 256, 4 heads, seq 128, vocabulary 4096): untied
so that pipeline layouts are executable. Other processes competing for the cores distort every
number: the load average is printed at the start and the end.

    .venv/bin/python benchmarks/plan_vs_measured.py [--ranks 4 8] [--steps 5] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import yaml

CLI = [sys.executable, "-m", "clusterlm"]
GIB = 2**30
COMM_TERMS = ("tp_comm", "cp_comm", "pp_p2p", "dp_comm")  # the plan's time terms spent in communication


def sh(args: list[str], env: dict, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + args, check=True, text=True, capture_output=True, env=env, **kw)


def run_yaml(work: Path, data: Path, micro_batch: int, steps: int) -> Path:
    cfg = {
        "data": {"dir": str(data)},
        "model": {"style": "gpt2", "n_layer": 4, "n_head": 4, "d_model": 256, "max_seq_len": 128, "vocab_size": 4096,
                  "tie_embeddings": False},
        "train": {"out_dir": str(work / "run"), "precision": "fp32", "device": "cpu", "seq_len": 128,
                  "micro_batch": micro_batch, "grad_accum": 1, "max_steps": steps, "warmup_steps": 1,
                  "log_every": 1, "eval_every": 10_000, "eval_batches": 1, "ckpt_every": 10_000,
                  "tensorboard": False, "plots": False},
    }
    path = work / "run.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def layout_flags(plan: dict) -> list[str]:
    """`clusterlm plan` flags that reproduce one ranked layout of `plan --search --json`."""
    p = plan["parallel"]
    flags = ["--parallel", f"t={p['t']},p={p['p']},d={p['d']}", "--micro-batch", str(p["micro_batch"]),
             "--interleave", str(p["interleave"]), "--zero", str(p["zero"]), "--recompute", p["recompute"],
             "--batch", str(plan["global_batch"])]
    if p["dp_shard"] != p["d"]:
        flags += ["--dp-shard", str(p["dp_shard"])]
    return flags + (["--sequence-parallel"] if p["sequence_parallel"] else [])


def choose(ranked: list[dict]) -> list[dict]:
    """The top three layouts and the fastest with pipeline parallelism."""
    chosen = ranked[:3]
    piped = [r for r in ranked if r["parallel"]["p"] > 1]
    if piped and piped[0] not in chosen:
        chosen.append(piped[0])
    return chosen


class PeakSampler:
    """Peak resident memory (VmHWM) of every training worker under a launcher process, per rank."""

    def __init__(self, root_pid: int, interval_s: float = 0.2) -> None:
        self.root, self.interval_s = psutil.Process(root_pid), interval_s
        self.peaks: dict[int, float] = {}  # rank → GiB
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ranks: dict[int, int] = {}
        while not self._stop.is_set():
            try:
                children = self.root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            for child in children:
                try:
                    if child.pid not in ranks:
                        env = child.environ()
                        if "RANK" not in env or "torchrun" in " ".join(child.cmdline()):
                            continue
                        ranks[child.pid] = int(env["RANK"])
                    hwm = _vm_hwm_gib(child.pid)
                except (psutil.Error, OSError, ValueError):
                    continue
                rank = ranks[child.pid]
                self.peaks[rank] = max(self.peaks.get(rank, 0.0), hwm)
            time.sleep(self.interval_s)

    def stop(self) -> dict[int, float]:
        self._stop.set()
        self._thread.join(timeout=5)
        return dict(sorted(self.peaks.items()))


def _vm_hwm_gib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / GIB
    raise ValueError("no VmHWM")


def measure(config: Path, ranks: int, out_dir: Path, env: dict) -> dict:
    """Train the emitted config with `clusterlm launch --run`; step time and per-rank peak memory."""
    cmd = CLI + ["launch", "--gpus-per-node", str(ranks), "--run", str(config), f"train.out_dir={out_dir}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = PeakSampler(proc.pid)
    output, _ = proc.communicate()
    peaks = sampler.stop()
    if proc.returncode != 0:
        raise SystemExit(f"training failed ({proc.returncode}):\n{output[-3000:]}")
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in records if r.get("kind") == "train"]
    steady = train[2:] or train  # the first steps include one-off allocation and thread start-up
    summary = [r for r in records if r.get("kind") == "summary"][-1]
    return {"step_time_s": statistics.median(r["step_time_s"] for r in steady), "peaks_gib": peaks,
            "rank0_logged_gib": max(r["peak_mem_gib"] for r in train), "wall_s": time.perf_counter() - t0,
            "comm_fraction": summary.get("comm_fraction"), "comm_s": summary.get("comm_time_s") or 0.0,
            "compute_only_s": summary.get("compute_only_s"),
            "collectives": summary.get("comm_collectives_per_step") or 0}


def verdict(ratio: float, target: float) -> str:
    return "OK" if abs(ratio - 1) <= target else "MISS"


def loop(ranks: int, run: Path, work: Path, env: dict, top: int) -> list[dict]:
    found = json.loads(sh(["plan", "--model", str(run), "--cluster", "local", "--gpus", str(ranks), "--search",
                           "--top", str(top), "--json"], env).stdout)
    rows = []
    for i, chosen in enumerate(choose(found["search"]["ranked"]), 1):
        emit = work / f"n{ranks}-layout{i}"
        plan = json.loads(sh(["plan", "--model", str(run), "--cluster", "local", "--gpus", str(ranks),
                              *layout_flags(chosen), "--emit", str(emit), "--overwrite", "--json"], env).stdout)
        got = measure(emit / "config.yaml", ranks, work / f"run-n{ranks}-{i}", env)
        peak_measured = max(got["peaks_gib"].values())
        rows.append({"ranks": ranks, "layout": describe(plan), "pred_step": plan["step_time_s"],
                     "step": got["step_time_s"], "pred_mem": plan["memory_gib"]["total"], "mem": peak_measured,
                     "peaks": got["peaks_gib"], "rank0_logged": got["rank0_logged_gib"], "time_s": plan["time_s"],
                     "memory_gib": plan["memory_gib"], "comm_fraction": got["comm_fraction"], "wall": got["wall_s"],
                     "comm_s": got["comm_s"], "compute_only_s": got["compute_only_s"], "collectives": got["collectives"]})
        print_row(rows[-1])
    return rows


def describe(plan: dict) -> str:
    p = plan["parallel"]
    text = f"t={p['t']} p={p['p']} d={p['d']} b={p['micro_batch']} zero={p['zero']}"
    return text + (f" v={p['interleave']}" if p["interleave"] > 1 else "") + (
        f" rec={p['recompute']}" if p["recompute"] != "none" else "")


def print_row(r: dict) -> None:
    rs, rm = r["pred_step"] / r["step"], r["pred_mem"] / r["mem"]
    peaks = " ".join(f"{v:.2f}" for v in r["peaks"].values())
    print(f"N={r['ranks']} {r['layout']:<34} step pred {r['pred_step']:6.2f} s meas {r['step']:6.2f} s "
          f"ratio {rs:4.2f} {verdict(rs, 0.25):<4} | mem pred {r['pred_mem']:5.2f} GiB meas {r['mem']:5.2f} GiB "
          f"ratio {rm:4.2f} {verdict(rm, 0.15):<4} | per-rank peaks {peaks} (rank 0 logged "
          f"{r['rank0_logged']:.2f}); collectives {r['comm_fraction'] or 0:.0%} of the step; {r['wall']:.0f} s wall")
    print("    predicted step (s): " + ", ".join(f"{k} {v:.3f}" for k, v in r["time_s"].items() if v))
    t = r["time_s"]
    comm = sum(t.get(k, 0.0) for k in COMM_TERMS)
    if r["compute_only_s"] is not None and r["collectives"]:  # (pipeline layouts' traffic is not timed)
        # The trainer times its collectives (gloo waits included): the step splits into time in
        # collectives and everything else, which the plan's terms can be compared with one by one.
        print(f"    split: outside collectives pred {t['total'] - comm:.3f} s meas {r['compute_only_s']:.3f} s | "
              f"collectives pred {comm:.3f} s meas {r['comm_s']:.3f} s ({r['collectives']:.0f} per step)")
    print("    predicted memory (GiB): " + ", ".join(f"{k} {v:.3f}" for k, v in r["memory_gib"].items() if v))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[4, 8], help="CPU processes per run (default 4 8)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--micro-batch", type=int, default=4, help="sequences per rank in run.yaml (default 4)")
    ap.add_argument("--top", type=int, default=60, help="layouts ranked by the search (to find a p > 1 one)")
    ap.add_argument("--keep", help="work in this directory (kept) instead of a temporary one")
    args = ap.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="plan-vs-measured-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CLUSTERLM_CACHE_DIR": str(work / "cache")}  # a fresh probe of this machine
    start_load = os.getloadavg()
    print(f"work dir {work}; load average {start_load[0]:.2f} / {start_load[1]:.2f} / {start_load[2]:.2f} "
          f"on {os.cpu_count()} cores" + ("  (busy machine: timings will be noisy)" if start_load[0] > 1.5 else ""))
    data = work / "data"
    if not (data / "manifest.json").exists():
        sh(["prepare", "--out", str(data), "--max-mb", "2", "--vocab-size", "4096", "--quiet"], env)
    run = run_yaml(work, data, args.micro_batch, args.steps)
    rows = [row for ranks in args.ranks for row in loop(ranks, run, work, env, args.top)]
    ok_step = sum(abs(r["pred_step"] / r["step"] - 1) <= 0.25 for r in rows)
    ok_mem = sum(abs(r["pred_mem"] / r["mem"] - 1) <= 0.15 for r in rows)
    print(f"step time within 25 %: {ok_step} of {len(rows)}; per-rank memory within 15 %: {ok_mem} of {len(rows)}")

    t0 = time.perf_counter()
    sh(["plan", "--model", "llama3-405B", "--cluster", "dgx-h100", "--gpus", "16384", "--batch", "2048",
        "--seq", "8192", "--search", "--json"], env)
    print(f"search Llama-3-405B on 16,384 H100 (CLI, incl. start-up): {time.perf_counter() - t0:.2f} s "
          "(target < 5 s)")
    end = os.getloadavg()
    print(f"end load average {end[0]:.2f} / {end[1]:.2f} / {end[2]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
