"""State dicts of models and optimizers — the one path every load and save goes through.

`torch.distributed.checkpoint.state_dict` (`get_/set_model_state_dict`, `get_/set_optimizer_state_dict`)
gives fully-qualified names that are the same for a plain model, an FSDP2/TP-sharded one, or a
model wrapped for activation checkpointing or compile; one process is simply world size 1. So a
single-file checkpoint loads into a sharded model and a sharded one into a plain model by the
same calls, with our own checks (missing, unexpected, wrong shape) in front for one-line errors.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from clusterlm.errors import CheckpointError
from clusterlm.model.init import clean_fqn

_TENSOR = "__tensor__"


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors by name: local shards (DTensors) for a sharded model, plain tensors otherwise."""
    return get_model_state_dict(model)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Whole tensors on the CPU (gathered from the shards of a parallel model; a collective then)."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def tied_groups(model: nn.Module) -> list[list[str]]:
    """Names that share one parameter (a tied output head and embedding)."""
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(clean_fqn(name))
    return [names for names in groups.values() if len(names) > 1]


def load_full_state(model: nn.Module, tensors: dict[str, torch.Tensor], where: Path | str) -> None:
    """Load whole tensors (e.g. read from safetensors) into `model`, plain or sharded, strictly.

    Tied tensors may be stored under one of their names. Anything that does not fit the model is a
    CheckpointError naming the first mismatch."""
    tensors = dict(tensors)
    for names in tied_groups(model):
        present = [n for n in names if n in tensors]
        for n in names:
            if present:
                tensors.setdefault(n, tensors[present[0]])
    expected = {name: tuple(t.shape) for name, t in model_state(model).items()}  # global shapes
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{where} does not match the model config ({what})")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != expected[name]:
            raise CheckpointError(f"{where} does not match the model config: {name} has shape "
                                  f"{tuple(tensor.shape)}, the config needs {expected[name]}")
    # Every rank must hand the tensors over in the same order: loading full tensors into a sharded
    # model scatters them key by key (and safetensors returns its keys in hash order).
    ordered = {name: tensors[name] for name in expected}
    set_model_state_dict(model, ordered, options=StateDictOptions(full_state_dict=True, strict=True))


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load tensors in the layout `model_state` returned (already resharded for this model)."""
    set_model_state_dict(model, state)


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return get_optimizer_state_dict(model, optimizer)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                         full: bool = False) -> None:
    options = StateDictOptions(full_state_dict=True, strict=True) if full else None
    set_optimizer_state_dict(model, optimizer, state, options=options)


def optimizer_by_fqn(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> dict[str, Any]:
    """A `torch.optim` state dict (params numbered in group order) re-keyed by parameter names.

    The optimizer was built by the same `build_optimizer` on a model with the same parameter
    order, so number i here is number i in the checkpoint."""
    names = {id(p): clean_fqn(n) for n, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    try:
        saved_groups = saved["param_groups"]
        if sum(len(g["params"]) for g in saved_groups) != len(order):
            raise CheckpointError("checkpoint optimizer state has a different number of parameters than this model")
        state = {order[int(i)]: s for i, s in saved["state"].items()}
        groups = [{**g, "params": [order[int(i)] for i in g["params"]]} for g in saved_groups]
        if any(int(i) < 0 for g in saved_groups for i in g["params"]) or any(int(i) < 0 for i in saved["state"]):
            raise IndexError("negative parameter index")
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        raise CheckpointError("checkpoint optimizer state is malformed") from None
    return {"state": state, "param_groups": groups}


def check_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """A whole (unsharded) optimizer state keyed by parameter name, as `optimizer_by_fqn` returns it,
    must fit this optimizer: the same groups holding the same parameters, finite hyperparameters, and
    per parameter AdamW moments of the parameter's shape, finite, second moments ≥ 0."""
    names = {id(p): clean_fqn(n) for n, p in model.named_parameters()}
    shapes = {clean_fqn(n): tuple(p.shape) for n, p in model.named_parameters()}
    ours = [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]
    if [list(g["params"]) for g in saved["param_groups"]] != ours:
        raise CheckpointError(f"the optimizer's parameter groups do not match this model's ({len(saved['param_groups'])} "
                              f"saved, {len(ours)} here, or the parameters in them differ)")
    for group in saved["param_groups"]:
        values = [group[k] for k in ("lr", "eps", "weight_decay") if k in group] + list(group.get("betas", ()))
        if not all(_finite_number(v) and v >= 0 for v in values):
            raise CheckpointError(f"optimizer group '{group.get('name', '?')}' has invalid hyperparameters")
    for name, per_param in saved["state"].items():
        if not isinstance(per_param, dict):
            raise CheckpointError(f"optimizer state of '{name}' is not a mapping")
        for key, value in per_param.items():
            _check_moment(name, key, value, shapes[name])


def _finite_number(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() == 1 and bool(torch.isfinite(value).all())
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_moment(name: str, key: str, value: Any, shape: tuple[int, ...]) -> None:
    if key == "step":
        if not (_finite_number(value) and float(value) >= 0):
            raise CheckpointError(f"optimizer state '{name}.step' must be a finite count ≥ 0")
        return
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise CheckpointError(f"optimizer state '{name}.{key}' must be a floating-point tensor")
    if tuple(value.shape) != shape:
        raise CheckpointError(f"optimizer state '{name}.{key}' has shape {tuple(value.shape)}, the parameter {shape}")
    if not bool(torch.isfinite(value).all()) or (key == "exp_avg_sq" and bool((value < 0).any())):
        raise CheckpointError(f"optimizer state '{name}.{key}' holds non-finite or negative values")


# --------------------------------------------------------------------------- nested state ↔ JSON + tensors
def split_tensors(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Replace every tensor leaf of a nested dict/list by a reference; return (skeleton, tensors).

    The skeleton is JSON data (tuples become lists); the tensors are a flat dict for DCP.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[path] = x
            return {_TENSOR: path}
        if isinstance(x, dict):
            return {str(k): walk(v, f"{path}.{k}" if path else str(k)) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(x)]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise CheckpointError(f"cannot checkpoint a value of type {type(x).__name__} at '{path}'")

    return walk(obj, prefix), tensors


def merge_tensors(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `split_tensors`."""
    if isinstance(skeleton, dict):
        if set(skeleton) == {_TENSOR}:
            key = skeleton[_TENSOR]
            if key not in tensors:
                raise CheckpointError(f"checkpoint lacks tensor '{key}'")
            return tensors[key]
        return {k: merge_tensors(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [merge_tensors(v, tensors) for v in skeleton]
    return skeleton
