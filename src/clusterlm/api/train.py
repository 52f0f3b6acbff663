"""`clusterlm train`: one process, or every worker of a torchrun/Slurm job, runs this."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from clusterlm.config.run import RunConfig, parallel_plan
from clusterlm.runtime.process import cpu_threads_per_rank, join, launch_env, shutdown
from clusterlm.train.resume import Resume
from clusterlm.train.trainer import Trainer, TrainResult


def train(cfg: RunConfig, *, resume: Resume = "auto", progress: bool = True,
          on_step_end: Callable[[Trainer], Any] | None = None, overwrite: bool = False) -> tuple[TrainResult, bool]:
    """Train `cfg`; returns (result, is_main). Under torchrun (RANK/WORLD_SIZE set) this process
    joins the job first; the layout is validated against the world size before any rendezvous."""
    env = launch_env()
    parallel_plan(cfg, env.world_size if env is not None else 1)  # fail in milliseconds, not after a rendezvous
    process = join(cfg.parallel, cfg.train.device, env)
    threads = cpu_threads_per_rank(process)
    if threads is not None:  # CPU ranks sharing a host share its cores
        torch.set_num_threads(threads)
    try:
        result = Trainer(cfg, process=process, resume=resume, progress=progress, on_step_end=on_step_end,
                         overwrite=overwrite).run()
    finally:
        shutdown()
    return result, process.is_main
