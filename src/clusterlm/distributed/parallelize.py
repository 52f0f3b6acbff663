"""Parallelism as a transformation of a single-device model (torchtitan's `parallelize_llama` shape).

    parallelize(model, layout, ...):  TP → activation checkpointing → compile → FSDP2 / DDP

* TP (`apply_tp`): DTensor `parallelize_module` — embeddings vocabulary-sharded, wq/wk/wv and
  w1/w3 column-wise, wo/w2 row-wise, norms sequence-parallel (activations between blocks are
  split along the sequence), output head column-wise gathered back to full logits, because
  the trainer computes the loss on plain logits.
* Activation checkpointing and `torch.compile` (per block) are applied to the TP'd blocks, so
  recompute and compiled graphs include the TP collectives.
* FSDP2 (`apply_fsdp`): `fully_shard` per block, then the root; HSDP when dp_replicate > 1.
  DDP (`apply_ddp`) when only dp_replicate > 1: torch's DistributedDataParallel with the
  configured bucket size and (optional) 16-bit gradient compression.

The model module keeps its parameter names (state dicts stay interchangeable with
single-process checkpoints); only DDP returns a wrapper, as the module the loop calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)
from torch.nn.parallel import DistributedDataParallel

from clusterlm.config.parallel import ParallelConfig
from clusterlm.distributed.comm_stats import DDPHookState, FunctionalCollectiveTap, ddp_comm_hook, fsdp_comms
from clusterlm.errors import ConfigError, DistributedError
from clusterlm.runtime.mesh import Layout
from clusterlm.runtime.precision import DTYPES


@dataclass
class Parallelized:
    """What `parallelize` produced: the module to call and how to control its gradient sync."""

    train_module: nn.Module
    kind: str  # "ddp" | "fsdp" | "tp" (TP without data parallelism) | "none" (one process)
    tensor_parallel: bool = False  # DTensor collectives inside forward/backward (tapped when measuring)
    recorder: Any = None  # clusterlm.distributed.comm_stats.CommRecorder, when measuring

    @contextlib.contextmanager
    def micro_step(self, model: nn.Module, sync: bool) -> Iterator[None]:
        """One micro-batch's forward + backward; gradients are synchronised only when `sync`
        (the last micro-batch of an accumulation), never redundantly before."""
        tap: Any = contextlib.nullcontext()
        if self.recorder is not None and self.tensor_parallel:
            tap = FunctionalCollectiveTap(self.recorder)
        if self.kind == "ddp":
            ctx = self.train_module.no_sync() if not sync else contextlib.nullcontext()
            with ctx, tap:
                yield
            return
        if self.kind == "fsdp":
            model.set_requires_gradient_sync(sync)
        with tap:
            yield

    @staticmethod
    def clip_grad_norm(model: nn.Module, max_norm: float) -> torch.Tensor:
        """Clip the global gradient norm (over all shards) and return it as a plain tensor."""
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        full = getattr(norm, "full_tensor", None)  # a DTensor when parameters are sharded
        return full() if full is not None else norm


def parallelize(model: nn.Module, layout: Layout, parallel: ParallelConfig, device: torch.device, *,
                precision: str = "fp32", compile: bool = False, recorder: Any = None) -> Parallelized:
    """Apply the parallelism `layout.plan` describes to `model` (in place) on `layout.mesh`.

    One process (no mesh): just activation checkpointing and compile, on the plain model.
    A model built on the meta device stays there (the caller then materialises only this
    rank's shards with `to_empty` and initialises them); any other is moved to `device` first."""
    plan, mesh = layout.plan, layout.mesh
    if not is_meta(model):
        model.to(device)
    if mesh is None:
        if plan.recompute == "full":
            apply_activation_checkpointing(model)
        # The compiled wrapper shares the parameters; checkpoints are always written from `model`,
        # so no `_orig_mod.` prefixes ever reach a state dict on disk.
        train_module = torch.compile(model) if compile else model
        return Parallelized(train_module, "none")
    if plan.tp > 1:
        apply_tp(model, mesh["tp"])
    if plan.recompute == "full":
        apply_activation_checkpointing(model)
    if compile:
        apply_compile(model)
    if plan.fsdp:
        dp_mesh = mesh["dp_replicate", "dp_shard"] if plan.dp_replicate > 1 else mesh["dp_shard"]
        apply_fsdp(model, dp_mesh, param_dtype=_fsdp_param_dtype(parallel.fsdp_param_dtype, precision),
                   reduce_dtype=DTYPES[parallel.fsdp_reduce_dtype],
                   reshard_after_forward=parallel.fsdp_reshard_after_forward, prefetch=parallel.fsdp_prefetch,
                   recorder=recorder)
        return Parallelized(model, "fsdp", plan.tp > 1, recorder)
    if plan.ddp:
        ddp = apply_ddp(model, mesh["dp_replicate"].get_group(), device, bucket_mb=parallel.ddp_bucket_mb,
                        compression=parallel.grad_compression, recorder=recorder)
        return Parallelized(ddp, "ddp", False, recorder)
    return Parallelized(model, "tp" if plan.tp > 1 else "none", plan.tp > 1, recorder)


def is_meta(model: nn.Module) -> bool:
    return any(p.is_meta for p in model.parameters())


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each transformer block in backward instead of storing its activations.

    torch's checkpoint wrapper keeps state-dict keys unchanged, so checkpoints are
    interchangeable with runs without it; the RNG state is replayed so dropout masks match.
    """
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleDict):
        raise ConfigError("train.activation_checkpointing applies to transformer models (model.layers)")
    for name in list(layers.keys()):
        layers[name] = checkpoint_wrapper(
            layers[name], checkpoint_impl=CheckpointImpl.NO_REENTRANT, preserve_rng_state=True
        )


# ------------------------------------------------------------------------------------ tensor parallel
def apply_tp(model: nn.Module, tp_mesh: Any) -> None:
    """Megatron-style tensor parallelism with sequence parallelism on the norms."""
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleDict):
        raise DistributedError("tensor parallelism needs a transformer model (model.layers)")
    # Embeddings: rows (vocabulary / positions) split over TP ranks, outputs summed to a full
    # activation; the (tok + pos) sum is then split along the sequence for the first norm.
    root_plan: dict[str, Any] = {}
    if getattr(model, "tok_embeddings", None) is not None:  # a pipeline stage may lack either end
        root_plan["tok_embeddings"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())
        root_plan["dropout"] = PrepareModuleInput(input_layouts=(Replicate(),), desired_input_layouts=(Shard(1),),
                                                  use_local_output=True)
        if getattr(model, "pos_embeddings", None) is not None:
            root_plan["pos_embeddings"] = RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())
    if getattr(model, "output", None) is not None:
        root_plan["norm"] = SequenceParallel()
        root_plan["output"] = ColwiseParallel(input_layouts=Shard(1), output_layouts=Replicate())
    parallelize_module(model, tp_mesh, root_plan)
    for block in layers.values():
        plan: dict[str, Any] = {
            "attention_norm": SequenceParallel(),
            # Attention's extra arguments (rope tables, kv cache, start_pos) stay as they are.
            "attention": PrepareModuleInput(input_layouts=(Shard(1), None, None, None),
                                            desired_input_layouts=(Replicate(), None, None, None)),
            "attention.wq": ColwiseParallel(),
            "attention.wk": ColwiseParallel(),
            "attention.wv": ColwiseParallel(),
            "attention.wo": RowwiseParallel(output_layouts=Shard(1)),
            "ffn_norm": SequenceParallel(),
            "feed_forward": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),)),
            "feed_forward.w1": ColwiseParallel(),
            "feed_forward.w2": RowwiseParallel(output_layouts=Shard(1)),
        }
        if hasattr(block.feed_forward, "w3"):
            plan["feed_forward.w3"] = ColwiseParallel()
        parallelize_module(block, tp_mesh, plan)
    # Sharding replaced each module's parameters; a tied head must point at the embedding's
    # (identically sharded) weight again, or the two would train apart.
    if getattr(getattr(model, "config", None), "tie_embeddings", False) and hasattr(model, "tie_weights"):
        model.tie_weights()


# ------------------------------------------------------------------------------------ compile
def apply_compile(model: nn.Module) -> None:
    """Compile each block separately: repeated structure compiles once, and FSDP wraps the
    compiled blocks (torchtitan's choice over compiling the whole model)."""
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleDict):
        raise DistributedError("train.compile with data/tensor parallelism needs a transformer (model.layers)")
    for name in list(layers.keys()):
        layers[name] = torch.compile(layers[name])


# ------------------------------------------------------------------------------------ FSDP2
def apply_fsdp(model: nn.Module, dp_mesh: Any, *, param_dtype: torch.dtype | None, reduce_dtype: torch.dtype,
               reshard_after_forward: str, prefetch: int, recorder: Any = None) -> None:
    """`fully_shard` each block, then the root (embeddings, final norm, head)."""
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype if param_dtype else None)
    reshard = reshard_after_forward != "never"
    layers = getattr(model, "layers", None)
    blocks = list(layers.values()) if isinstance(layers, nn.ModuleDict) else []
    for i, block in enumerate(blocks):
        # Backward starts with the last block, so re-gathering it right after forward would be
        # wasted work ("default"); "always" reshards it anyway to save memory.
        last = i == len(blocks) - 1
        fully_shard(block, mesh=dp_mesh, mp_policy=mp,
                    reshard_after_forward=reshard and (reshard_after_forward == "always" or not last))
    # The root group holds the embeddings, final norm and head; a tied head shares the
    # embedding's weight, which FSDP2 requires to live in one group — the root.
    fully_shard(model, mesh=dp_mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward == "always")
    if prefetch > 0 and len(blocks) > 1:
        for i, block in enumerate(blocks):
            block.set_modules_to_forward_prefetch(blocks[i + 1 : i + 1 + prefetch])
            block.set_modules_to_backward_prefetch(list(reversed(blocks[max(0, i - prefetch) : i])))
    if recorder is not None:
        all_gather, reduce_scatter = fsdp_comms(recorder)
        for module in [*blocks, model]:
            module.set_custom_all_gather(all_gather)
            module.set_custom_reduce_scatter(reduce_scatter)


def _fsdp_param_dtype(setting: str, train_precision: str) -> torch.dtype | None:
    """None means FSDP2 keeps parameters in their own dtype (fp32)."""
    if setting == "auto":
        return DTYPES[train_precision] if train_precision in ("bf16", "fp16") else None
    return None if setting == "fp32" else DTYPES[setting]


# ------------------------------------------------------------------------------------ DDP
def apply_ddp(model: nn.Module, group: Any, device: torch.device, *, bucket_mb: float, compression: str,
              recorder: Any = None) -> nn.Module:
    """torch DDP over the replicate group; our comm hook when compressing or measuring."""
    ddp = DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, process_group=group,
        bucket_cap_mb=bucket_mb, gradient_as_bucket_view=True,
    )
    compress = DTYPES.get(compression) if compression != "none" else None
    if compress is not None or recorder is not None:
        ddp.register_comm_hook(DDPHookState(group, recorder, compress), ddp_comm_hook)
    return ddp


