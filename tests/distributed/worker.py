"""Worker process for the multi-process tests (started by harness.run_workers or torchrun).

    python worker.py parity '<json spec>'   → RESULT {"runs": {name: {"losses": [...], "comm": {...}}}}

The process joins the job through `clusterlm.distributed.env.init_world`, exactly as
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

from clusterlm.config.parallel import ParallelConfig  # noqa: E402
from clusterlm.distributed.env import init_world, shutdown  # noqa: E402
from clusterlm.distributed.parallelize import parallelize  # noqa: E402
from clusterlm.train.setup import ModelHandles  # noqa: E402


def parity(spec: dict) -> dict:
    """Run each named parallel config on the same data; report losses and measured comms."""
    torch.set_num_threads(1)
    out = {}
    for name, run in spec["runs"].items():
        t_start = time.perf_counter()
        pcfg = ParallelConfig(**{"timeout_s": 60, **run["parallel"]})
        world = init_world(pcfg, "cpu")
        tcfg = loop.train_config(**run.get("train", {}))
        model = loop.build(loop.model_config(run["model"]), seed=tcfg.seed)
        par = parallelize(model, world, tcfg)
        handles = ModelHandles(model, par.train_module, par)
        data = loop.batches(spec["steps"], run["global_batch"], model.config.vocab_size)
        comm_steps = []

        def reduce_mean(v: float) -> float:
            if world.comm is not None:
                comm_steps.append(world.comm.take())
            return world.reduce_mean(v)

        losses = loop.run_steps(
            model, par.train_module, tcfg, data, dp_rank=world.dp_rank, dp_size=world.dp_world_size,
            grad_accum=run.get("grad_accum", 1), reduce_mean=reduce_mean,
            clip=lambda params, max_norm: handles.clip_grad_norm(max_norm), micro_step=handles.micro_step,
        )
        last = comm_steps[-1] if comm_steps else None
        out[name] = {"losses": losses, "kind": par.kind, "time": time.perf_counter() - t_start,
                     "comm": None if last is None else {"bytes": last.bytes_by_kind, "count": last.count_by_kind,
                                                         "wire_bytes": last.wire_bytes,
                                                         "comm_time_s": last.comm_time_s}}
        world.barrier()
    shutdown()
    return {"runs": out}


def train(spec: dict) -> dict:
    """`clusterlm train` with `spec["overrides"]`, plus test-only faults from the step callback:
    stop_at (a clean interrupt: checkpoint, then exit) and crash_at/crash_rank (SIGKILL this
    rank on the first attempt of an elastic job)."""
    import os
    import signal

    from clusterlm.config.run import load_run_config
    from clusterlm.train.trainer import Trainer

    torch.set_num_threads(1)
    cfg = load_run_config(None, spec["overrides"])
    world = init_world(cfg.parallel, cfg.train.device, model=cfg.model, seq_len=cfg.train.seq_len)
    rank = world.rank if world is not None else 0
    restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))

    def on_step_end(trainer: Trainer) -> None:
        step = trainer.state.step
        if step == spec.get("stop_at"):
            trainer.request_stop("interrupted")
        if step == spec.get("crash_at") and rank == spec.get("crash_rank", 0) and restarts == 0:
            os.kill(os.getpid(), signal.SIGKILL)

    result = Trainer(cfg, world=world, progress=False, on_step_end=on_step_end).run()
    shutdown()
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
