"""`parallel:` section — data/tensor/pipeline degrees and communication options for distributed training.

The degrees multiply to the world size (`clusterlm.distributed.mesh.ParallelDims` checks
this up front, with messages that say what to change). The communication options are the
knobs docs/distributed.md measures: DDP bucket size and gradient compression, FSDP2
resharding and prefetching, FSDP2 mixed precision.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from clusterlm.config.base import Section


class ParallelConfig(Section):
    dp_replicate: int = Field(default=1, ge=1)  # DDP replicas (HSDP replicas when combined with dp_shard/tp)
    dp_shard: int = Field(default=-1, ge=-1)  # FSDP2 shards; -1 = whatever is left of the world
    tp: int = Field(default=1, ge=1)  # DTensor tensor parallel (with sequence parallel on norms)
    pp: int = Field(default=1, ge=1)  # pipeline stages (only 1 is supported; see docs/distributed.md)

    # --- process group
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # auto: NCCL on CUDA GPUs, gloo on CPU
    timeout_s: float = Field(default=600.0, gt=0)  # a collective that waits longer fails the run

    # --- DDP (dp_replicate only)
    ddp_bucket_mb: float = Field(default=25.0, gt=0)  # gradients all-reduced per bucket (PyTorch default 25)
    # Gradients cast to 16 bits for the all-reduce (half the bytes), summed, cast back.
    grad_compression: Literal["none", "bf16", "fp16"] = "none"

    # --- FSDP2 (dp_shard)
    # Free the gathered weights after each block's forward (ZeRO-3, re-gathered in backward)
    # or keep them until backward (ZeRO-2-like: one all-gather per micro-batch fewer, more memory).
    # default: yes, except the last block group, which backward needs first anyway.
    fsdp_reshard_after_forward: Literal["default", "always", "never"] = "default"
    # Blocks whose all-gather is issued ahead of use: 0 keeps FSDP2's implicit one-ahead
    # prefetch, n > 0 sets explicit forward/backward prefetch lists n blocks deep.
    fsdp_prefetch: int = Field(default=0, ge=0)
    # FSDP2 MixedPrecisionPolicy: dtype of the gathered weights (auto: train.precision when it
    # is bf16/fp16, else fp32) and of the gradient reduce-scatter.
    fsdp_param_dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    fsdp_reduce_dtype: Literal["fp32", "bf16"] = "fp32"

    # --- measurement and checkpoints
    comm_stats: bool = True  # time and count every collective; logged per step in metrics.jsonl
    async_checkpoint: bool = False  # torch.distributed.checkpoint.async_save for periodic checkpoints
