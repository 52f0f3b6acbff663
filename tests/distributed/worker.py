"""Worker process for the multi-process tests (started by harness.run_workers or torchrun).

    python worker.py parity '<json spec>'   → RESULT {"runs": {name: {"losses": [...], "comm": {...}}}}

The process joins the job through `clusterlm.runtime.process.join`, exactly as
`clusterlm train` does under torchrun.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import parity_loop as loop  # noqa: E402

from clusterlm.config.parallel import ParallelConfig, ParallelPlan  # noqa: E402
from clusterlm.distributed.comm_stats import CommRecorder  # noqa: E402
from clusterlm.distributed.parallelize import parallelize  # noqa: E402
from clusterlm.runtime.mesh import make_layout  # noqa: E402
from clusterlm.runtime.process import join, shutdown  # noqa: E402


def parity(spec: dict) -> dict:
    """Run each named parallel config on the same data; report losses and measured comms."""
    torch.set_num_threads(1)
    out = {}
    for name, run in spec["runs"].items():
        t_start = time.perf_counter()
        pcfg = ParallelConfig(**{"timeout_s": 60, **run["parallel"]})
        process = join(pcfg, "cpu")
        tcfg = loop.train_config(**run.get("train", {}))
        model = loop.build(loop.model_config(run["model"]), seed=tcfg.seed)
        plan = ParallelPlan.resolve(pcfg, process.world_size,
                                    recompute="full" if tcfg.activation_checkpointing else "none")
        layout = make_layout(plan, process.rank, process.world_size, "cpu")
        recorder = CommRecorder() if pcfg.comm_stats else None
        par = parallelize(model, layout, pcfg, process.device, precision=tcfg.precision, compile=tcfg.compile,
                          recorder=recorder)
        data = loop.batches(spec["steps"], run["global_batch"], model.config.vocab_size)
        comm_steps = []

        def reduce_mean(v: float) -> float:
            if recorder is not None:
                comm_steps.append(recorder.take())
            return process.collectives.reduce_mean(v)

        losses = loop.run_steps(
            model, par.train_module, tcfg, data, dp_rank=layout.dp_rank, dp_size=layout.dp_size,
            grad_accum=run.get("grad_accum", 1), reduce_mean=reduce_mean,
            clip=lambda params, max_norm: par.clip_grad_norm(model, max_norm),
            micro_step=lambda sync: par.micro_step(model, sync),
        )
        last = comm_steps[-1] if comm_steps else None
        out[name] = {"losses": losses, "kind": par.kind, "time": time.perf_counter() - t_start,
                     "comm": None if last is None else {"bytes": last.bytes_by_kind, "count": last.count_by_kind,
                                                         "wire_bytes": last.wire_bytes,
                                                         "comm_time_s": last.comm_time_s}}
        process.collectives.barrier()
    shutdown()
    return {"runs": out}


def train(spec: dict) -> dict:
    """`clusterlm train` with `spec["overrides"]`, plus test-only faults from the step callback:
    stop_at (a clean interrupt: checkpoint, then exit) and crash_at/crash_rank (SIGKILL this
    rank on the first attempt of an elastic job)."""
    import os
    import signal

    from clusterlm.api.train import train as run_training
    from clusterlm.config.run import load_run_config
    from clusterlm.train.trainer import Trainer

    torch.set_num_threads(1)
    cfg = load_run_config(None, spec["overrides"])
    rank = int(os.environ.get("RANK", "0"))
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))

    def on_step_end(trainer: Trainer) -> None:
        step = trainer.state.step
        if step == spec.get("stop_at"):
            trainer.request_stop("interrupted")
        if step == spec.get("crash_at") and rank == spec.get("crash_rank", 0) and restarts == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    result, _ = run_training(cfg, progress=False, on_step_end=on_step_end)
    return {"step": result.step, "stop_reason": result.stop_reason, "rank": rank, "restarts": restarts,
            "summary": result.summary}


def main() -> None:
    verb, spec = sys.argv[1], json.loads(sys.argv[2])
    result = {"parity": parity, "train": train}[verb](spec)
    # One write call: ranks launched by torchrun share a stdout pipe, and print() may split a line.
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), ("RESULT " + json.dumps(result) + "\n").encode())


if __name__ == "__main__":
    main()
