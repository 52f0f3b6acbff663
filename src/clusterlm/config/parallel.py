"""`parallel:` section — data/tensor/pipeline degrees for distributed training."""

from __future__ import annotations

from pydantic import Field

from clusterlm.config.base import Section


class ParallelConfig(Section):
    dp_replicate: int = Field(default=1, ge=1)  # DDP replicas
    dp_shard: int = Field(default=-1, ge=-1)  # FSDP2 shards; -1 = whatever is left of the world
    tp: int = Field(default=1, ge=1)  # DTensor tensor parallel (with sequence parallel on norms)
    pp: int = Field(default=1, ge=1)  # pipeline stages
