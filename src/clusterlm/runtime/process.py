"""This process's place in a job, and joining the job's process group.

torchrun (and `srun torchrun`) tells each worker who it is through environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT, TORCHELASTIC_RESTART_COUNT). `join` reads them,
picks the backend (NCCL for CUDA tensors, gloo for CPU — chosen automatically, never NCCL-only),
and starts the default process group with a timeout, so a dead peer fails the run instead of
hanging it. Outside a job it returns a one-process `Process` and creates no group at all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from clusterlm.config.parallel import ParallelConfig
from clusterlm.errors import DistributedError
from clusterlm.runtime.collectives import Collectives
from clusterlm.runtime.device import resolve_device
from clusterlm.runtime.slurm_env import slurm_task


@dataclass(frozen=True)
class LaunchEnv:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    restart_count: int  # elastic restarts so far (torchrun --max-restarts)
    rendezvous: str = "env://"  # torchrun: MASTER_ADDR/PORT; `srun` tasks: tcp://FIRST_NODE:PORT


def launch_env(environ: dict[str, str] | None = None) -> LaunchEnv | None:
    """This worker's place in a torchrun job (or an `srun` job step), or None when alone."""
    env = os.environ if environ is None else environ
    if "RANK" not in env or "WORLD_SIZE" not in env:
        task = slurm_task(env)  # `srun clusterlm train`: one Slurm task per rank, no torchrun
        return None if task is None else LaunchEnv(task.rank, task.world_size, task.local_rank,
                                                   task.local_world_size, task.restart_count, task.rendezvous_url)
    try:
        rank, world_size = int(env["RANK"]), int(env["WORLD_SIZE"])
        local_rank = int(env.get("LOCAL_RANK", rank))
        local_world_size = int(env.get("LOCAL_WORLD_SIZE", world_size))
        restarts = int(env.get("TORCHELASTIC_RESTART_COUNT", 0))
    except ValueError:
        raise DistributedError("RANK/WORLD_SIZE/LOCAL_RANK must be integers (are you running under torchrun?)") from None
    if not 0 <= rank < world_size:
        raise DistributedError(f"RANK {rank} is outside WORLD_SIZE {world_size}")
    return LaunchEnv(rank, world_size, local_rank, local_world_size, restarts)


def select_backend(device: torch.device, requested: str = "auto") -> str:
    """NCCL for CUDA devices (with gloo for CPU tensors), gloo otherwise."""
    if requested == "nccl" and device.type != "cuda":
        raise DistributedError("parallel.backend=nccl needs CUDA GPUs; use parallel.backend=auto (gloo on CPU)")
    if device.type == "cuda" and requested in ("auto", "nccl"):
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def worker_device(device_spec: str, env: LaunchEnv) -> torch.device:
    """One GPU per worker (cuda:LOCAL_RANK) when GPUs are used, else CPU."""
    device = resolve_device(device_spec)
    if device.type == "cuda":
        if env.local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"LOCAL_RANK {env.local_rank} but only {torch.cuda.device_count()} GPU(s) on this node; "
                "start at most one process per GPU (--nproc-per-node)"
            )
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    return device


@dataclass(frozen=True)
class Process:
    """Who this process is in the job (rank 0 of 1 when not launched as a job)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # ranks on this host (torchrun's LOCAL_WORLD_SIZE, or Slurm's tasks per node)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # None: no process group
    restart_count: int = 0
    collectives: Collectives = field(default_factory=Collectives)

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, plots and (for single-file checkpoints) the checkpoint."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def join(parallel: ParallelConfig, device_spec: str = "auto", env: LaunchEnv | None = None) -> Process:
    """Join the torchrun job this process belongs to (a one-process `Process` outside one)."""
    env = env or launch_env()
    if env is None or env.world_size == 1:
        return Process(device=resolve_device(device_spec))
    device = worker_device(device_spec, env)
    backend = select_backend(device, parallel.backend)
    timeout = timedelta(seconds=parallel.timeout_s)
    if not dist.is_initialized():
        store, _, _ = next(dist.rendezvous(env.rendezvous, env.rank, env.world_size, timeout=timeout))
        # After an elastic restart the workers reuse the agent's store, where the previous
        # attempt's keys (e.g. gloo peer addresses of dead workers) are still set; a prefix per
        # attempt keeps a restarted job from connecting to its own ghosts.
        store = dist.PrefixStore(f"clusterlm/attempt-{env.restart_count}", store)
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, store=store, timeout=timeout, rank=env.rank,
                                world_size=env.world_size, **kwargs)
    control = None if backend == "gloo" else dist.new_group(backend="gloo", timeout=timeout)
    return Process(rank=env.rank, world_size=env.world_size, local_rank=env.local_rank,
                   local_world_size=env.local_world_size, device=device, backend=backend,
                   restart_count=env.restart_count, collectives=Collectives(env.rank, env.world_size, control))


def shutdown() -> None:
    """Leave the process group (idempotent)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cpu_threads_per_rank(process: Process, environ: dict[str, str] | None = None) -> int | None:
    """Intra-op threads each CPU rank should use: the host's cores shared by its local ranks.

    torch would give every process all the cores, and N ranks on one host would then fight over
    them. The count is taken on rank 0 and broadcast, so ranks never disagree (nodes of one job
    are alike). None: leave torch alone (one process, a GPU, or OMP_NUM_THREADS set by the user,
    as torchrun does)."""
    env = os.environ if environ is None else environ
    if not process.distributed or process.device.type != "cpu" or "OMP_NUM_THREADS" in env:
        return None
    local = max(1, process.local_world_size)
    return process.collectives.decide_on_main(lambda: max(1, (os.cpu_count() or 1) // local))
