"""Build what a run needs from its config: dataset, model config, model, batch shape.

`setup_model` is the one place a model is made ready for training (seeded init or
weights from `train.init_from`, activation checkpointing, `torch.compile`); a
distributed trainer slots `parallelize(model, mesh)` in here, leaving the model
code itself single-device.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clusterlm.config.run import RunConfig
from clusterlm.config.train import TrainConfig
from clusterlm.errors import CheckpointError, ConfigError, DataError
from clusterlm.model.config import ModelConfig
from clusterlm.train.world import World

# Fields that do not change the shape or meaning of the weights; a checkpoint may be
# resumed or used for init with different values of these.
_NON_WEIGHT_FIELDS = ("preset", "dropout", "init_std")


def open_dataset(cfg: RunConfig) -> Any:
    """The dataset dir named by `data.dir`, opened and verified (DataError otherwise)."""
    from clusterlm.data.loader import Dataset

    if not cfg.data.dir:
        raise ConfigError("data.dir is not set: point it at a dataset dir made by 'clusterlm prepare'")
    return Dataset.open(cfg.data.dir)


def resolve_model_config(model_cfg: ModelConfig, dataset: Any, train_cfg: TrainConfig) -> ModelConfig:
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


def resolve_grad_accum(train_cfg: TrainConfig, world: World) -> int:
    """Micro-batches per optimizer step on each rank, from batch_size or grad_accum."""
    if train_cfg.batch_size is None:
        return train_cfg.grad_accum
    per_step = train_cfg.micro_batch * world.dp_world_size
    if train_cfg.batch_size % per_step:
        raise ConfigError(
            f"train.batch_size ({train_cfg.batch_size}) is not a multiple of micro_batch × data-parallel "
            f"ranks ({train_cfg.micro_batch} × {world.dp_world_size} = {per_step})"
        )
    accum = train_cfg.batch_size // per_step
    if "grad_accum" in train_cfg.model_fields_set and train_cfg.grad_accum != accum:
        raise ConfigError(
            f"train.grad_accum ({train_cfg.grad_accum}) contradicts train.batch_size ({train_cfg.batch_size}) "
            f"= micro_batch {train_cfg.micro_batch} × ranks {world.dp_world_size} × accumulation {accum}; "
            "set only one of them"
        )
    return accum


def check_splits(dataset: Any, seq_len: int, micro_batch: int) -> None:
    """Both splits must hold at least one window; training needs one micro-batch's worth."""
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
    diffs = []
    for name in ModelConfig.model_fields:
        if name in _NON_WEIGHT_FIELDS:
            continue
        va, vb = getattr(ra, name), getattr(rb, name)
        # Derived defaults (d_ff None vs 4·d, bias None vs True) compare by their effect.
        if name == "d_ff":
            va, vb = ra.ffn_dim, rb.ffn_dim
        elif name == "bias":
            va, vb = ra.use_bias, rb.use_bias
        elif name == "n_kv_head":
            va, vb = ra.kv_heads, rb.kv_heads
        if va != vb:
            diffs.append(f"{name} {vb} vs {va}")
    return diffs


def describe_mismatch(diffs: list[str]) -> str:
    shown = ", ".join(diffs[:3]) + (f" (+{len(diffs) - 3} more)" if len(diffs) > 3 else "")
    return shown


@dataclass
class ModelHandles:
    model: nn.Module  # the plain module: checkpoints are saved from and loaded into this
    train_module: nn.Module  # what the loop calls (possibly compiled); shares parameters with `model`
    parallel: Any = None  # clusterlm.distributed.parallelize.Parallelized for distributed runs

    @property
    def fused_loss(self) -> bool:
        """Whether the loop may call `train_module(x, targets=y)`, the output projection fused with
        cross-entropy (model/loss.py: same value and gradients, no (B·T, V) logits tensor, ~10 %
        faster on small CPU models). Not with a tensor-parallel (sharded) output head."""
        return self.parallel is None or not self.parallel.tensor_parallel

    def micro_step(self, sync: bool) -> Any:
        """Context for one micro-batch's forward + backward. `sync=False` (every micro-batch but
        an accumulation's last) lets DDP/FSDP skip the gradient reduction; no-op for one process."""
        if self.parallel is None:
            return contextlib.nullcontext()
        return self.parallel.micro_step(self.model, sync)

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        """Clip the global gradient norm (over all shards) and return it as a plain tensor."""
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        full = getattr(norm, "full_tensor", None)  # a DTensor when parameters are sharded
        return full() if full is not None else norm


def setup_model(model_cfg: ModelConfig, train_cfg: TrainConfig, world: World,
                init_from: str | Path | None = None) -> ModelHandles:
    """Build the model on the world's device: seeded init or `init_from` weights, then AC and compile."""
    from clusterlm.model.build import build_model

    torch.manual_seed(train_cfg.seed)
    model = build_model(model_cfg, device="cpu")
    if hasattr(model, "init_weights"):
        model.init_weights(train_cfg.seed)
    if init_from is not None:
        load_init_weights(model, model_cfg, init_from)
    model.train()
    # Distributed runs: TP → activation checkpointing → compile → FSDP2/DDP, applied from outside.
    parallel = world.parallelize(model, train_cfg)
    if parallel is not None:
        return ModelHandles(model=model, train_module=parallel.train_module, parallel=parallel)
    model.to(world.device)
    if train_cfg.activation_checkpointing:
        apply_activation_checkpointing(model)
    train_module: nn.Module = model
    if train_cfg.compile:
        # The compiled wrapper shares the parameters; checkpoints are always written from
        # `model`, so no `_orig_mod.` prefixes ever reach a state dict on disk.
        train_module = torch.compile(model)  # type: ignore[assignment]
    return ModelHandles(model=model, train_module=train_module)


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each transformer block in backward instead of storing its activations.

    torch's checkpoint wrapper keeps state-dict keys unchanged, so checkpoints are
    interchangeable with runs without it; the RNG state is replayed so dropout masks match.
    """
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleDict):
        raise ConfigError("train.activation_checkpointing applies to transformer models (model.layers)")
    for name in list(layers.keys()):
        layers[name] = checkpoint_wrapper(
            layers[name], checkpoint_impl=CheckpointImpl.NO_REENTRANT, preserve_rng_state=True
        )


def load_init_weights(model: nn.Module, model_cfg: ModelConfig, source: str | Path) -> Path:
    """`train.init_from`: weights only (no optimizer state) from a checkpoint, run dir,
    single-file export or HF model dir; the architecture must match the run's model config."""
    from clusterlm.model.serialization import load_model_dir, load_state

    loaded = load_model_dir(source, device="cpu")
    diffs = same_weights_config(model_cfg, loaded.config)
    if diffs:
        raise CheckpointError(
            f"train.init_from {loaded.path} holds a different model config ({describe_mismatch(diffs)}); "
            "use a matching model config"
        )
    load_state(model, loaded.model.state_dict(), loaded.path)
    return loaded.path


def read_meta(ckpt_dir: Path) -> dict[str, Any]:
    from clusterlm.model.serialization import read_meta as _read_meta

    return _read_meta(Path(ckpt_dir))
