"""The process group a distributed run lives in: torchrun's environment → a `DistributedWorld`.

torchrun (and `srun torchrun`) tells each worker who it is through environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT, TORCHELASTIC_RESTART_COUNT). `init_world`
reads them, picks the backend (NCCL for CUDA tensors, gloo for CPU — chosen automatically,
never NCCL-only), starts the default process group with a timeout so a dead peer fails the
run instead of hanging it, validates the parallel degrees and builds the `DeviceMesh`.

The resulting `DistributedWorld` has the shape of the single-process `train.world.World`
the training loop expects; metric reductions and barriers go over a gloo group on CPU
tensors, so they never wait on the accelerator stream.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch

from clusterlm.config.parallel import ParallelConfig
from clusterlm.distributed.slurm_env import slurm_task
from clusterlm.errors import DistributedError
from clusterlm.train.world import World


# Stop reasons in increasing precedence when ranks disagree (None: keep training).
STOP_REASONS = (None, "max_steps", "early_stopping", "max_minutes", "interrupted")


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
    from clusterlm.train.precision import resolve_device

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


@dataclass
class DistributedWorld(World):
    """A `World` backed by torch.distributed, with the mesh and degrees of this run."""

    dims: Any = None  # clusterlm.distributed.mesh.ParallelDims
    mesh: Any = None  # torch.distributed.device_mesh.DeviceMesh ("dp_replicate", "dp_shard", "tp")
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    backend: str = "gloo"
    restart_count: int = 0
    comm: Any = None  # clusterlm.distributed.comm_stats.CommRecorder, or None when disabled
    control_group: Any = None  # gloo group for CPU scalars, barriers and checkpoint planning
    _comm_window: list = field(default_factory=list, repr=False)  # (CommStep, step_time_s) since last log
    _comm_run: list = field(default_factory=list, repr=False)  # every logged step of the run

    def _reduce(self, value: float, op: Any) -> float:
        import torch.distributed as dist

        t = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(t, op=op, group=self.control_group)
        return float(t.item())

    def reduce_mean(self, value: float) -> float:
        import torch.distributed as dist

        return self._reduce(value, dist.ReduceOp.SUM) / self.world_size

    def reduce_sum(self, value: float) -> float:
        import torch.distributed as dist

        return self._reduce(value, dist.ReduceOp.SUM)

    def reduce_max(self, value: float) -> float:
        import torch.distributed as dist

        return self._reduce(value, dist.ReduceOp.MAX)

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier(group=self.control_group)

    # -- the hooks of train.world.World -------------------------------------------------------
    def parallelize(self, model: Any, train_cfg: Any) -> Any:
        from clusterlm.distributed.parallelize import parallelize

        return parallelize(model, self, train_cfg)

    def checkpoint_backend(self) -> Any:
        from clusterlm.distributed.checkpoint import DCPBackend

        return DCPBackend(self, async_save=self.parallel.async_checkpoint)

    def step_end(self, step_time_s: float) -> float:
        # Ranks must agree on elapsed time: a time budget and the schedule depend on it.
        step_time_s = self.reduce_max(step_time_s)
        if self.comm is not None:
            self._comm_window.append((self.comm.take(), step_time_s))
        return step_time_s

    def agree(self, stop_reason: str | None) -> str | None:
        # A signal or a time budget may reach ranks at different steps; stopping alone would
        # leave the others waiting in a collective. The highest-ranked reason wins everywhere.
        code = STOP_REASONS.index(stop_reason) if stop_reason in STOP_REASONS else len(STOP_REASONS) - 1
        return STOP_REASONS[int(self.reduce_max(code))]

    def comm_metrics(self) -> dict[str, Any]:
        window, self._comm_window = self._comm_window, []
        self._comm_run.extend(window)
        return _comm_average(window)

    def comm_summary(self) -> dict[str, Any]:
        steps = self._comm_run + self._comm_window
        # The first step builds DDP buckets / FSDP buffers and is not representative.
        figures = _comm_average(steps[1:] if len(steps) > 1 else steps)
        return {"parallel": self.dims.describe(), "world_size": self.world_size, **figures}

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        """Rank `src`'s Python object on every rank (small control data only)."""
        import torch.distributed as dist

        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src, group=self.control_group)
        return box[0]


def _comm_average(steps: list[tuple[Any, float]]) -> dict[str, Any]:
    """Per-step means of a list of (CommStep, step_time_s); the fraction is total comm / total time."""
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


def init_world(parallel: ParallelConfig, device_spec: str = "auto", env: LaunchEnv | None = None, *,
               model: Any = None, seq_len: int | None = None) -> DistributedWorld | None:
    """Join the torchrun job this process belongs to; None when not launched by torchrun
    (or launched as a single worker), so the caller falls back to the one-process `World`.

    The degrees are checked against the world size (and, given `model`/`seq_len`, against the
    model's heads, widths and sequence length) before any rendezvous."""
    import torch.distributed as dist

    from clusterlm.distributed.mesh import ParallelDims

    env = env or launch_env()
    if env is None or env.world_size == 1:
        return None
    dims = ParallelDims.from_config(parallel, env.world_size)  # fail before any rendezvous
    if model is not None:
        dims.check_model(model, seq_len if seq_len is not None else model.max_seq_len)
    device = worker_device(device_spec, env)
    backend = select_backend(device, parallel.backend)
    if not dist.is_initialized():
        timeout = timedelta(seconds=parallel.timeout_s)
        store, _, _ = next(dist.rendezvous(env.rendezvous, env.rank, env.world_size, timeout=timeout))
        # After an elastic restart the workers reuse the agent's store, where the previous
        # attempt's keys (e.g. gloo peer addresses of dead workers) are still set; a prefix per
        # attempt keeps a restarted job from connecting to its own ghosts.
        store = dist.PrefixStore(f"clusterlm/attempt-{env.restart_count}", store)
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, store=store, timeout=timeout, rank=env.rank,
                                world_size=env.world_size, **kwargs)
    control = None if backend == "gloo" else dist.new_group(backend="gloo",
                                                            timeout=timedelta(seconds=parallel.timeout_s))
    mesh = dims.build_mesh(device.type)
    comm = None
    if parallel.comm_stats:
        from clusterlm.distributed.comm_stats import CommRecorder

        comm = CommRecorder()
    return DistributedWorld(
        rank=env.rank, world_size=env.world_size, local_rank=env.local_rank, device=device,
        dp_rank=dims.dp_rank(env.rank), dp_world_size=dims.dp, dims=dims, mesh=mesh, parallel=parallel,
        backend=backend, restart_count=env.restart_count, comm=comm, control_group=control,
    )


def shutdown() -> None:
    """Leave the process group (idempotent)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
