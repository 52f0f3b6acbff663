"""Build what a run needs from its config: dataset, model config, layout, model, optimizer, loader.

`build_components` is the one place a model is made ready for training: seeded initialisation
or `train.init_from` weights, then the parallelisms of the run's `ParallelPlan` applied from
outside (`distributed.parallelize`: TP → activation checkpointing → compile → FSDP2/DDP; for
one process only the last two), leaving the model code itself single-device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clusterlm.checkpoint.backends import CheckpointBackend, DCPBackend, LocalBackend
from clusterlm.checkpoint.load import open_model
from clusterlm.checkpoint.store import CheckpointStore
from clusterlm.config.model import ModelConfig
from clusterlm.config.run import RunConfig, parallel_plan
from clusterlm.config.train import TrainConfig
from clusterlm.data.loader import Dataset, TokenLoader
from clusterlm.distributed.comm_stats import CommRecorder
from clusterlm.distributed.parallelize import Parallelized, parallelize
from clusterlm.distributed.pipeline import PipelineParallel, pipeline_parts
from clusterlm.errors import CheckpointError, ConfigError, DataError
from clusterlm.model.build import build_model, model_bytes
from clusterlm.runtime.memory import require_memory
from clusterlm.runtime.mesh import Layout, make_layout
from clusterlm.runtime.precision import Precision, select_precision
from clusterlm.runtime.process import Process
from clusterlm.train.optim import WarmupCosineSchedule, build_optimizer

# Fields that do not change the shape or meaning of the weights; a checkpoint may be
# resumed or used for init with different values of these.
_NON_WEIGHT_FIELDS = ("preset", "dropout", "init_std")


def open_dataset(cfg: RunConfig) -> Dataset:
    """The dataset dir named by `data.dir`, opened and verified (DataError otherwise)."""
    if not cfg.data.dir:
        raise ConfigError("data.dir is not set: point it at a dataset dir made by 'clusterlm prepare'")
    return Dataset.open(cfg.data.dir)


def resolve_model_config(model_cfg: ModelConfig, dataset: Dataset, train_cfg: TrainConfig) -> ModelConfig:
    """Fill the vocabulary from the dataset and check the model can read its batches."""
    vocab = dataset.vocab_size
    if model_cfg.vocab_size is None:
        model_cfg = model_cfg.model_copy(update={"vocab_size": vocab})
    elif model_cfg.vocab_size < vocab:
        raise ConfigError(
            f"model.vocab_size ({model_cfg.vocab_size}) is smaller than the dataset's vocabulary ({vocab}); "
            f"set model.vocab_size={vocab} or leave it unset"
        )
    if model_cfg.is_transformer and train_cfg.seq_len > model_cfg.max_seq_len:
        raise ConfigError(
            f"train.seq_len ({train_cfg.seq_len}) exceeds the model's context model.max_seq_len "
            f"({model_cfg.max_seq_len}); lower train.seq_len or raise model.max_seq_len"
        )
    return model_cfg


def check_splits(dataset: Dataset, seq_len: int) -> None:
    """Both splits must hold at least one window."""
    for split in ("train", "val"):
        n = dataset.num_tokens(split)
        if n < seq_len + 1:
            raise DataError(
                f"dataset {dataset.path}: split '{split}' has {n} tokens, fewer than train.seq_len + 1 "
                f"= {seq_len + 1}; lower train.seq_len or prepare more data"
            )


def same_weights_config(a: ModelConfig | dict[str, Any], b: ModelConfig | dict[str, Any]) -> list[str]:
    """Fields that differ in a way that changes the weights (empty when compatible)."""
    da = a.model_dump(mode="json") if isinstance(a, ModelConfig) else dict(a)
    db = b.model_dump(mode="json") if isinstance(b, ModelConfig) else dict(b)
    # Compare resolved configs so `preset: tiny` and its expanded fields agree.
    ra = ModelConfig.model_validate({k: v for k, v in da.items() if k != "preset"})
    rb = ModelConfig.model_validate({k: v for k, v in db.items() if k != "preset"})
    derived = {"d_ff": "ffn_dim", "bias": "use_bias", "n_kv_head": "kv_heads"}  # compare by effect
    diffs = []
    for name in ModelConfig.model_fields:
        if name in _NON_WEIGHT_FIELDS:
            continue
        va, vb = getattr(ra, derived.get(name, name)), getattr(rb, derived.get(name, name))
        if va != vb:
            diffs.append(f"{name} {vb} vs {va}")
    return diffs


def describe_mismatch(diffs: list[str]) -> str:
    return ", ".join(diffs[:3]) + (f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else "")


@dataclass
class Components:
    """Everything the step loop and its callbacks work on."""

    dataset: Dataset
    model_cfg: ModelConfig
    layout: Layout
    device: torch.device
    precision: Precision
    model: nn.Module  # the plain module: checkpoints are saved from and loaded into this
    parallel: Parallelized | PipelineParallel  # what the loop calls and how gradients sync
    optimizer: torch.optim.Optimizer
    schedule: WarmupCosineSchedule
    scaler: torch.amp.GradScaler | None
    loader: Any  # TokenLoader (tests substitute any iterator of (x, y))
    recorder: CommRecorder | None = None

    @property
    def fused_loss(self) -> bool:
        """Whether the loop may call `module(x, targets=y)`, the output projection fused with
        cross-entropy (model/loss.py: same value and gradients, no (B·T, V) logits tensor, ~10 %
        faster on small CPU models). Not with a tensor-parallel (sharded) output head."""
        return not self.parallel.tensor_parallel

    @property
    def pipelined(self) -> bool:
        return isinstance(self.parallel, PipelineParallel)

    def micro_step(self, sync: bool) -> Any:
        """Context for one micro-batch's forward + backward. `sync=False` (every micro-batch but an
        accumulation's last) lets DDP/FSDP skip the gradient reduction; no-op for one process."""
        return self.parallel.micro_step(self.model, sync)

    def stateful(self, train_state: Any, rng: Any) -> dict[str, Any]:
        """Everything besides the weights that an exact resume needs (the checkpoint's train state)."""
        states: dict[str, Any] = {"optimizer": self.optimizer, "schedule": self.schedule, "loader": self.loader,
                                  "train": train_state, "rng": rng}
        if self.scaler is not None:
            states["grad_scaler"] = self.scaler
        return states

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        """Clip the global gradient norm (over all shards) and return it as a plain tensor."""
        return self.parallel.clip_grad_norm(self.model, max_norm)


def checkpoint_store(cfg: RunConfig, process: Process, backend: CheckpointBackend | None = None) -> CheckpointStore:
    """The run dir's checkpoints: whole files from one process, DCP shards from several."""
    backend = backend or (DCPBackend(process.is_main, process.collectives.group, cfg.parallel.async_checkpoint)
                          if process.distributed else LocalBackend())
    return CheckpointStore(cfg.train.out_dir, cfg.train.keep_last, backend, is_main=process.is_main,
                           barrier=process.collectives.barrier)


def load_init_weights(model: nn.Module, model_cfg: ModelConfig, source: str | Path) -> Path:
    """`train.init_from`: weights only (no optimizer state) from a checkpoint, run dir, single-file
    export or HF model dir, into the (possibly already sharded) model; the architecture must match."""
    found = open_model(source)
    diffs = same_weights_config(model_cfg, found.config)
    if diffs:
        raise CheckpointError(
            f"train.init_from {found.path} holds a different model config ({describe_mismatch(diffs)}); "
            "use a matching model config"
        )
    found.load_into(model)
    return found.path


def check_model_fits(model_cfg: ModelConfig, shards: int, process: Process) -> None:
    """Refuse a model whose fp32 weights, gradients and AdamW moments (16 bytes per parameter, split
    over the ranks that shard them) exceed the device's free memory, before anything is allocated.
    Every rank refuses if one does (alone, it would leave the others waiting in a collective)."""
    params, weight_bytes = model_bytes(model_cfg)
    need = (4 * weight_bytes) // max(1, shards)
    problem: ConfigError | None = None
    try:
        require_memory(need, process.device, f"the model ({params:,} parameters; fp32 weights, gradients and "
                       "AdamW state)", "choose a smaller model (model.d_model, model.n_layer, model.vocab_size) "
                       "or shard it over more ranks (parallel.dp_shard, parallel.tp, parallel.pp)")
    except ConfigError as exc:
        problem = exc
    if process.collectives.reduce_max(1.0 if problem is not None else 0.0) > 0:
        raise problem or ConfigError("another rank lacks the free memory for its part of the model; "
                                     "choose a smaller model or shard it over more ranks")


def build_components(cfg: RunConfig, process: Process, dataset: Dataset, model_cfg: ModelConfig,
                     init_from: str | None) -> Components:
    """The model on this rank's device with the run's layout applied, and its optimizer and loader.

    A layout that splits the model (FSDP2 shards, tensor or pipeline parallel) builds it on the
    meta device, applies the parallelisms, and only then allocates and initialises this rank's
    part (`to_empty` + `init_weights`, which gives every layout the one-process weights), so no
    rank ever holds the whole model. `train.init_from` weights load into that part the same way.
    Replicated layouts (one process, DDP) build the whole model on the CPU and move it.
    """
    tcfg, pcfg = cfg.train, cfg.parallel
    plan = parallel_plan(cfg.model_copy(update={"model": model_cfg}), process.world_size)
    layout = make_layout(plan, process.rank, process.world_size, process.device.type)
    split = plan.fsdp or plan.tp > 1 or plan.pp > 1
    precision = select_precision(tcfg.precision, process.device, process.collectives, fp16_ok=not split)
    check_model_fits(model_cfg, plan.dp_shard * plan.tp * plan.pp, process)
    torch.manual_seed(tcfg.seed)
    # init_from weights replace every initial value: skip the seeded initialisation they would overwrite.
    model = build_model(model_cfg, device="meta" if split else "cpu",
                        seed=None if init_from is not None else tcfg.seed)
    if init_from is not None and not split:
        load_init_weights(model, model_cfg, init_from)
    recorder = CommRecorder() if process.distributed and pcfg.comm_stats else None
    options = dict(precision=precision.name, compile=tcfg.compile, recorder=recorder)
    if plan.pp > 1:
        model, stages, stage_modules = pipeline_parts(model, layout, pcfg, process.device, **options)
    else:
        parallel: Parallelized | PipelineParallel = parallelize(model, layout, pcfg, process.device, **options)
    if split:
        model.to_empty(device=process.device)
        model.init_weights(tcfg.seed)
        if init_from is not None:
            load_init_weights(model, model_cfg, init_from)
    if plan.pp > 1:
        parallel = PipelineParallel(plan, stages, stage_modules, layout.mesh, process.device)
    model.train()
    optimizer = build_optimizer(model, tcfg)
    scaler = torch.amp.GradScaler(process.device.type) if precision.needs_grad_scaler else None
    loader = TokenLoader(dataset, "train", tcfg.micro_batch, tcfg.seq_len, seed=tcfg.seed,
                         rank=layout.dp_rank, world_size=layout.dp_size, mode="random")
    return Components(dataset, model_cfg, layout, process.device, precision, model, parallel, optimizer,
                      WarmupCosineSchedule.from_config(tcfg), scaler, loader, recorder)
