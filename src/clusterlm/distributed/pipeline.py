"""Pipeline parallelism with `torch.distributed.pipelining`: stages, schedules, one step.

    model (meta) ──split──▶ stages 0 … S−1 (whole layers; S = pp × virtual stages)
    rank r of the pipeline holds stages r, r + pp, r + 2·pp, …  (one stage unless interleaved)
    each stage: TP → activation checkpointing → compile → FSDP2/DDP, like a whole model
    schedule (GPipe, 1F1B, interleaved 1F1B) runs m micro-batches through the stages

A stage is a copy of the model with the layers of other stages deleted (the `layers` dict keeps
its global keys, so parameter names are those of the whole model), without the embedding unless
it is the first stage and without the final norm and head unless it is the last
(torchtitan's manual split). `StageUnion` presents the stages a rank holds as one module with
the whole model's parameter names: checkpoints, the optimizer and initialisation use it.

The schedule divides gradients by the number of micro-batches (mean over the step's batch, as
gradient accumulation does) and the loss lives on the last stage, which shares it with the
pipeline group. Gradient clipping takes the norm over every stage.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe, ScheduleInterleaved1F1B

from clusterlm.config.parallel import ParallelPlan
from clusterlm.distributed.parallelize import parallelize

SCHEDULES = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B, "interleaved_1f1b": ScheduleInterleaved1F1B}
IGNORE = -100  # targets the eval statistics skip (padding rows)


def local_stages(plan: ParallelPlan, pp_rank: int) -> list[int]:
    """The stages pipeline rank `pp_rank` runs ("loop" placement, what interleaved 1F1B expects)."""
    return [pp_rank + k * plan.pp for k in range(plan.interleave)]


def split_stage(model: nn.Module, stage: int, layers_per_stage: tuple[int, ...]) -> nn.Module:
    """A copy of `model` (on the meta device) keeping only what `stage` runs."""
    part = copy.deepcopy(model)
    start = sum(layers_per_stage[:stage])
    keep = {str(i) for i in range(start, start + layers_per_stage[stage])}
    for key in list(part.layers.keys()):
        if key not in keep:
            del part.layers[key]
    if stage != 0:
        part.tok_embeddings = None
        part.pos_embeddings = None
    if stage != len(layers_per_stage) - 1:
        part.norm = None
        part.output = None
    return part


class StageUnion(nn.Module):
    """The stages of one rank as one module, parameters named as in the whole model (no forward)."""

    def __init__(self, parts: list[nn.Module], config: Any) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleDict()
        for index, part in enumerate(parts):
            for key, block in part.layers.items():
                self.layers[key] = block
            for name, child in part.named_children():
                if name == "layers" or child is None:
                    continue
                self.add_module(name if not hasattr(self, name) else f"_{name}_{index}", child)
        self._parts = parts  # a plain list: not registered twice

    def train(self, mode: bool = True) -> StageUnion:
        super().train(mode)
        for part in self._parts:
            part.train(mode)
        return self

    def to_empty(self, *, device: torch.device | str | None, recurse: bool = True) -> StageUnion:
        for part in self._parts:  # the stage roots own the parameters (and their FSDP state)
            part.to_empty(device=device, recurse=recurse)
        return self

    @torch.no_grad()
    def init_weights(self, seed: int = 0) -> None:
        for part in self._parts:
            part.init_weights(seed)

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - schedules run the stages
        raise RuntimeError("a pipeline-parallel model runs through its schedule, not forward()")


class PipelineParallel:
    """The schedule of one rank's stages: training steps, evaluation, gradient clipping."""

    kind = "pp"
    tensor_parallel = True  # the loss is taken on the last stage's logits (never the fused loss)

    def __init__(self, plan: ParallelPlan, stages: list[int], parts: list[nn.Module], mesh: Any,
                 device: torch.device) -> None:
        self.group = mesh["pp"].get_group()
        self.first, self.last = 0 in stages, plan.stages - 1 in stages
        pipeline_stages = [PipelineStage(part, s, plan.stages, device, group=self.group)
                           for s, part in zip(stages, parts)]
        schedule_cls = SCHEDULES[plan.pp_schedule]
        stage_arg = pipeline_stages if plan.pp_schedule == "interleaved_1f1b" else pipeline_stages[0]
        self.schedule = schedule_cls(stage_arg, n_microbatches=plan.grad_accum, loss_fn=self._loss,
                                     scale_grads=True)
        self._eval_stats: Any = None  # while evaluating: the TokenStats the last stage adds to

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self._eval_stats is not None:
            self._eval_stats.update(logits, targets)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)

    def step(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One optimizer step's forward + backward over all micro-batches → the mean loss (every rank)."""
        losses: list[torch.Tensor] = []
        args = (inputs,) if self.first else ()
        self.schedule.step(*args, target=targets if self.last else None, losses=losses)
        return self._shared_mean(losses, inputs.device)

    @torch.no_grad()
    def evaluate(self, inputs: torch.Tensor, targets: torch.Tensor, stats: Any) -> None:
        """Forward only; the last stage adds the batch to `stats` (padding rows have IGNORE targets)."""
        self._eval_stats = stats
        try:
            args = (inputs,) if self.first else ()
            self.schedule.eval(*args, target=targets if self.last else None, losses=[])
        finally:
            self._eval_stats = None

    def _shared_mean(self, losses: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        local = torch.stack([loss.detach().float() for loss in losses]).mean() if losses \
            else torch.zeros((), device=device)
        dist.all_reduce(local, group=self.group)  # only the last stage contributes
        return local

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> torch.Tensor:
        """Clip by the norm over every stage's gradients (each rank holds only its stages')."""
        params = [p for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm([p.grad for p in params], norm_type=2.0)
        full = getattr(norm, "full_tensor", None)  # a DTensor when parameters are sharded
        norm = (full() if full is not None else norm).float()
        squared = norm**2
        dist.all_reduce(squared, group=self.group)
        total = squared.sqrt()
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
        return total


def pipeline_parts(model: nn.Module, layout: Any, parallel_cfg: Any, device: torch.device, *, precision: str,
                   compile: bool, recorder: Any = None) -> tuple[StageUnion, list[int], list[nn.Module]]:
    """Split a meta-device model into this rank's stages and parallelize each like a whole model.

    Returns the stages as one `StageUnion` (still on the meta device: materialise it with `to_empty`
    and `init_weights`), their stage numbers, and the modules the schedule runs."""
    plan = layout.plan
    stages = local_stages(plan, layout.pp_rank)
    counts = plan.layers_per_stage(model.config.n_layer)
    parts, modules = [], []
    for stage in stages:
        part = split_stage(model, stage, counts)
        parallel = parallelize(part, layout, parallel_cfg, device, precision=precision, compile=compile,
                               recorder=recorder)
        parts.append(part)
        modules.append(parallel.train_module)
    return StageUnion(parts, model.config), stages, modules
