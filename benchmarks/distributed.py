"""Data-parallel training on this machine: 1 process vs 2 (DDP, FSDP2), same global batch, gloo.

Each configuration trains a GPT-2-style model for a few steps in fresh worker processes
(torchrun-style environment on 127.0.0.1, `clusterlm.distributed` doing the work exactly as
`clusterlm train` does). Measured per configuration, median over rounds:

* tokens/s of the whole job (global batch tokens / slowest rank's step time);
* communication fraction: time with a collective in flight / step time (comm_stats.py);
* bytes communicated per step and rank, measured at the collectives (ring "wire" bytes),
  next to the planner's formula for the same config (`cluster.estimator.comm_bytes_per_step`:
  DDP = ZeRO-0 all-reduce, FSDP2 = ZeRO-3 with weights gathered for forward and backward,
  which is FSDP2 with `fsdp_reshard_after_forward=always`). Target: within 5 %.

The one-process peer runs with 1 thread and with 2 threads (all cores); each of the two-process
runs uses 1 thread per process. On a 2-core CPU with gloo the two-process runs are expected to be
slower than the 2-thread single process — communication goes through loopback TCP and competes
with compute for the same cores — the point is the measured split between the two.

    .venv/bin/python benchmarks/distributed.py [--rounds 3] [--steps 6] [--layers 4 --d-model 256 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CONFIGS = {
    "1 proc, 1 thread": dict(nprocs=1, threads=1, parallel={}),
    "1 proc, 2 threads": dict(nprocs=1, threads=2, parallel={}),
    "2 proc DDP": dict(nprocs=2, threads=1, parallel={"dp_replicate": 2, "dp_shard": 1}),
    "2 proc FSDP2": dict(nprocs=2, threads=1, parallel={"dp_shard": 2}),
    "2 proc FSDP2 reshard=always": dict(nprocs=2, threads=1,
                                        parallel={"dp_shard": 2, "fsdp_reshard_after_forward": "always"}),
}


# ------------------------------------------------------------------------------------------ worker
def worker(spec: dict) -> dict:
    import torch
    import torch.nn.functional as F

    from clusterlm.config.model import ModelConfig
    from clusterlm.config.parallel import ParallelConfig, ParallelPlan
    from clusterlm.config.train import TrainConfig
    from clusterlm.distributed.comm_stats import CommRecorder
    from clusterlm.distributed.parallelize import parallelize
    from clusterlm.model.build import build_model
    from clusterlm.runtime.mesh import make_layout
    from clusterlm.runtime.process import join, shutdown
    from clusterlm.train.optim import build_optimizer

    torch.set_num_threads(spec["threads"])
    cfg = ModelConfig(**spec["model"])
    tcfg = TrainConfig(lr=1e-3, warmup_steps=0, precision="fp32", seq_len=spec["seq_len"])
    pcfg = ParallelConfig(**{"timeout_s": 120, **spec["parallel"]})
    process = join(pcfg, "cpu")
    torch.manual_seed(0)
    model = build_model(cfg)
    layout = make_layout(ParallelPlan.resolve(pcfg, process.world_size), process.rank, process.world_size, "cpu")
    recorder = CommRecorder() if process.distributed and pcfg.comm_stats else None
    par = parallelize(model, layout, pcfg, process.device, recorder=recorder)
    dp_rank, dp_size = layout.dp_rank, layout.dp_size
    collectives = process.collectives
    optimizer = build_optimizer(model, tcfg)
    B, T = spec["global_batch"], spec["seq_len"]
    g = torch.Generator().manual_seed(1)
    data = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=g)[dp_rank * B // dp_size:(dp_rank + 1) * B // dp_size]
    x, y = data[:, :-1], data[:, 1:]
    times, comm = [], []
    for step in range(spec["warmup"] + spec["steps"]):
        collectives.barrier()
        if recorder is not None:
            recorder.take()  # drop anything from before this step
        t0 = time.perf_counter()
        with par.micro_step(model, sync=True):
            loss = F.cross_entropy(par.train_module(x).flatten(0, 1), y.flatten())
            loss.backward()
        par.clip_grad_norm(model, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_s = collectives.reduce_max(time.perf_counter() - t0)
        if step >= spec["warmup"]:
            times.append(step_s)
            if recorder is not None:
                c = recorder.take()
                comm.append({"time_s": c.comm_time_s, "wire_bytes": c.wire_bytes, "bytes": c.bytes})
    shutdown()
    return {"step_s": statistics.median(times), "comm": comm, "times": times}


# ------------------------------------------------------------------------------------------ driver
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_config(spec: dict, timeout_s: float = 600) -> dict:
    n, port = spec["nprocs"], free_port()
    procs = []
    for rank in range(n):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(n), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), OMP_NUM_THREADS=str(spec["threads"]),
                   PYTHONPATH=str(REPO / "src"))
        procs.append(subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout_s)
            if p.returncode != 0:
                raise SystemExit(f"worker of {spec['nprocs']} process(es) {spec['parallel']} exited with "
                                 f"{p.returncode}:\n{err[-3000:]}")
            outs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outs[0]


def planner_bytes(spec: dict, kind: str) -> float:
    """Bytes per rank per step from the planner's formula (ring algorithms)."""
    from clusterlm.cluster.estimator import Execution, Workload, comm_bytes_per_step
    from clusterlm.config.model import ModelConfig

    cfg = ModelConfig(**spec["model"])
    n = spec["nprocs"]
    workload = Workload(cfg, seq_len=spec["seq_len"], global_batch=spec["global_batch"], steps=1)
    execution = Execution(dp=n, micro_batch=spec["global_batch"] // n, zero=3 if kind == "fsdp" else 0,
                          precision="fp32")
    return comm_bytes_per_step(workload, execution)["dp"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration (median reported)")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return

    base = {"model": dict(style="gpt2", n_layer=args.layers, n_head=args.heads, d_model=args.d_model,
                          vocab_size=args.vocab, max_seq_len=args.seq_len),
            "seq_len": args.seq_len, "global_batch": args.global_batch, "steps": args.steps, "warmup": args.warmup}
    tokens = args.global_batch * args.seq_len
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; model {args.layers}×{args.d_model}, "
          f"vocab {args.vocab}, global batch {args.global_batch}×{args.seq_len} = {tokens} tokens/step, fp32, gloo")
    results: dict[str, list[dict]] = {name: [] for name in CONFIGS}
    for r in range(args.rounds):
        order = list(CONFIGS) if r % 2 == 0 else list(reversed(CONFIGS))  # alternate against drift
        for name in order:
            results[name].append(run_config({**base, **CONFIGS[name]}))

    rows = {}
    for name, runs in results.items():
        step_s = statistics.median(run["step_s"] for run in runs)
        comm = [c for run in runs for c in run["comm"]]
        fraction = (sum(c["time_s"] for c in comm) / sum(t for run in runs for t in run["times"])) if comm else 0.0
        wire = statistics.median(c["wire_bytes"] for c in comm) if comm else 0.0
        rows[name] = {"tokens_per_s": tokens / step_s, "step_s": step_s, "comm_fraction": fraction, "wire": wire}

    print(f"\n{'configuration':30s} {'tokens/s':>10s} {'step ms':>8s} {'comm %':>7s} {'MB/step':>8s}"
          f" {'planner MB':>10s} {'meas/plan':>9s}")
    for name, row in rows.items():
        spec = {**base, **CONFIGS[name]}
        kind = "fsdp" if "FSDP" in name else "ddp" if "DDP" in name else None
        plan = planner_bytes(spec, kind) if kind else None
        ratio = f"{row['wire'] / plan:9.3f}" if plan else f"{'':9s}"
        plan_s = f"{plan / 1e6:10.3f}" if plan else f"{'':10s}"
        print(f"{name:30s} {row['tokens_per_s']:10,.0f} {row['step_s'] * 1e3:8.1f} {row['comm_fraction']:7.1%} "
              f"{row['wire'] / 1e6:8.3f} {plan_s} {ratio}")
    one, two = rows["1 proc, 1 thread"]["tokens_per_s"], rows["1 proc, 2 threads"]["tokens_per_s"]
    print()
    for name in ("2 proc DDP", "2 proc FSDP2"):
        t = rows[name]["tokens_per_s"]
        print(f"{name}: {t / one:.2f}× the 1-thread process, {t / two:.2f}× the 2-thread process")
    for name, kind in (("2 proc DDP", "ddp"), ("2 proc FSDP2 reshard=always", "fsdp")):
        plan = planner_bytes({**base, **CONFIGS[name]}, kind)
        err = rows[name]["wire"] / plan - 1
        print(f"bytes/step {name} vs planner: {err:+.2%} ({'within' if abs(err) <= 0.05 else 'OUTSIDE'} 5 %)")


if __name__ == "__main__":
    main()
