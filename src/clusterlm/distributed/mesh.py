"""Parallel degrees → a validated `ParallelDims` → a `DeviceMesh` with named dimensions.

    world = dp_replicate × dp_shard × tp × pp        (dp_shard = -1 takes what is left)

Ranks are laid out row-major over ("dp_replicate", "dp_shard", "tp"): tensor parallel is
innermost (neighbouring ranks, the fastest links), data parallel outside it — the layout of
Megatron-LM and torchtitan, and the one `clusterlm.cluster.comms` assumes when it prices a plan.

Everything here is checked before any process group exists, so a bad combination fails in
milliseconds with a message naming the setting to change (torchtitan's `ParallelDims`
pattern, with our own messages).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clusterlm.config.parallel import ParallelConfig
from clusterlm.errors import DistributedError
from clusterlm.model.config import ModelConfig

MESH_DIMS = ("dp_replicate", "dp_shard", "tp")


@dataclass(frozen=True)
class ParallelDims:
    dp_replicate: int
    dp_shard: int
    tp: int
    pp: int
    world_size: int

    @classmethod
    def from_config(cls, cfg: ParallelConfig, world_size: int) -> ParallelDims:
        """Resolve `dp_shard = -1` and check the degrees multiply to `world_size`."""
        if world_size < 1:
            raise DistributedError(f"world size must be ≥ 1, got {world_size}")
        if cfg.pp > 1:
            raise DistributedError(
                f"parallel.pp={cfg.pp}: pipeline parallelism is not supported by clusterlm train; "
                "set parallel.pp=1 and use parallel.tp / parallel.dp_shard to split the model"
            )
        fixed = cfg.dp_replicate * cfg.tp * cfg.pp
        degrees = (f"dp_replicate {cfg.dp_replicate} × dp_shard {cfg.dp_shard} × tp {cfg.tp} × pp {cfg.pp}")
        if cfg.dp_shard == -1:
            if world_size % fixed:
                raise DistributedError(
                    f"parallel degrees {degrees}: world size {world_size} is not divisible by "
                    f"dp_replicate × tp × pp = {fixed}; choose degrees whose product divides {world_size}"
                )
            dp_shard = world_size // fixed
        elif cfg.dp_shard == 0:
            raise DistributedError("parallel.dp_shard must be ≥ 1, or -1 to use the rest of the world")
        else:
            dp_shard = cfg.dp_shard
            if fixed * dp_shard != world_size:
                raise DistributedError(
                    f"parallel degrees {degrees} multiply to {fixed * dp_shard}, but the world size is "
                    f"{world_size}; make the product equal {world_size} (or set parallel.dp_shard=-1 "
                    "to fill the rest)"
                )
        dims = cls(cfg.dp_replicate, dp_shard, cfg.tp, cfg.pp, world_size)
        if cfg.grad_compression != "none" and not dims.ddp:
            raise DistributedError(
                f"parallel.grad_compression={cfg.grad_compression} compresses DDP's all-reduce, but these degrees "
                f"({dims.describe()}) use FSDP2; set parallel.fsdp_reduce_dtype=bf16 instead"
            )
        return dims

    # ----------------------------------------------------------------- derived
    @property
    def dp(self) -> int:
        """Data-parallel ranks: each reads its own slice of the global batch."""
        return self.dp_replicate * self.dp_shard

    @property
    def fsdp(self) -> bool:
        """Parameters are FSDP2-managed: sharded (dp_shard > 1) or HSDP-replicated alongside TP."""
        return self.dp_shard > 1 or (self.dp_replicate > 1 and self.tp > 1)

    @property
    def ddp(self) -> bool:
        """Plain replicated data parallel (torch DDP): only dp_replicate is > 1."""
        return self.dp_replicate > 1 and not self.fsdp

    @property
    def sharded(self) -> bool:
        """Some rank holds only part of a weight: checkpoints must go through DCP."""
        return self.dp_shard > 1 or self.tp > 1

    def describe(self) -> str:
        parts = [f"{name}={getattr(self, name)}" for name in MESH_DIMS if getattr(self, name) > 1]
        return " ".join(parts) or "single process"

    def coordinates(self, rank: int) -> dict[str, int]:
        """This rank's index along each mesh dimension (row-major, tp innermost)."""
        tp_rank = rank % self.tp
        shard_rank = (rank // self.tp) % self.dp_shard
        replicate_rank = rank // (self.tp * self.dp_shard)
        return {"dp_replicate": replicate_rank, "dp_shard": shard_rank, "tp": tp_rank}

    def dp_rank(self, rank: int) -> int:
        """Position of `rank` among the data-parallel ranks (its loader shard)."""
        c = self.coordinates(rank)
        return c["dp_replicate"] * self.dp_shard + c["dp_shard"]

    # ----------------------------------------------------------------- checks
    def check_model(self, model: ModelConfig, seq_len: int) -> None:
        """Tensor parallelism splits heads, FFN columns and the sequence (sequence parallel)."""
        if self.tp == 1:
            return
        if not model.is_transformer:
            raise DistributedError(
                f"parallel.tp={self.tp} needs a transformer (model.style gpt2 or llama); "
                f"a {model.style} model can only use data parallelism (set parallel.tp=1)"
            )
        problems = [
            (model.n_head, "model.n_head (attention heads)"),
            (model.kv_heads, "model.n_kv_head (key/value heads)"),
            (model.ffn_dim, "model.d_ff (feed-forward width)"),
            (seq_len, "train.seq_len (sequence parallel splits it)"),
        ]
        for value, name in problems:
            if value % self.tp:
                raise DistributedError(
                    f"parallel.tp={self.tp} does not divide {name} = {value}; choose a tp that divides it "
                    f"(e.g. {_largest_divisor(value, self.tp)}) or change {name.split()[0]}"
                )

    def build_mesh(self, device_type: str) -> Any:
        """The 3-D `DeviceMesh` ("dp_replicate", "dp_shard", "tp"); size-1 dimensions included."""
        from torch.distributed.device_mesh import init_device_mesh

        return init_device_mesh(device_type, (self.dp_replicate, self.dp_shard, self.tp),
                                mesh_dim_names=MESH_DIMS)


def _largest_divisor(value: int, limit: int) -> int:
    return max(d for d in range(1, limit + 1) if value % d == 0)
