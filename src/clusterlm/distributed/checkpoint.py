"""Distributed checkpoints with `torch.distributed.checkpoint` (DCP): sharded save, resharded load.

A distributed checkpoint directory (same place and `latest` pointer as a single-process one)::

    step-0000200/  meta.json            format, step, model config ("weights": "dcp"), written last
                   tokenizer.json       copy of the dataset's tokenizer
                   train_state.json     every non-tensor value of the train state (rank 0's)
                   dcp/.metadata        DCP index of the tensors below
                   dcp/__<rank>_0.distcp  each rank's shards of weights, AdamW moments, RNG tensors

Everything that must survive a restart — model, optimizer, schedule, loader, RNG, counters —
goes in as one state dict (torchtitan's pattern); model and optimizer through
`get_model_state_dict` / `get_optimizer_state_dict`, so a checkpoint written by ranks holding
FSDP/TP shards loads at any other world size (or into a plain single-process model: DCP
reshards on load). `consolidate` / `load_model_weights` turn one into a plain state dict for
`clusterlm export`, eval and generate.

Safety: DCP stores non-tensor values as pickles and its index as a pickle. Here only tensors
go through DCP (everything else is JSON), the index is read with an allow-list unpickler that
accepts DCP's own metadata classes only, and a planner refuses pickled entries — a tampered
checkpoint is a `CheckpointError`, never code execution.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clusterlm.errors import CheckpointError
from clusterlm.fsio import atomic_write_bytes, atomic_write_json

DCP_DIR = "dcp"
STATE_FILE = "train_state.json"
MODEL_KEY = "model"
_TENSOR = "__tensor__"


def is_dcp_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / DCP_DIR / ".metadata").is_file()


# ------------------------------------------------------------------------------ state splitting
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


# ------------------------------------------------------------------------------ safe reading
# Exactly the globals a DCP index pickles (dataclasses of torch.distributed.checkpoint.metadata,
# dtypes, sizes, paths). Anything else — a whole-module allow-list would admit functions that
# write files or unpickle further — is refused.
_DCP_METADATA = "torch.distributed.checkpoint.metadata"
_ALLOWED = {
    (_DCP_METADATA, name) for name in ("Metadata", "MetadataIndex", "StorageMeta", "TensorProperties",
                                       "TensorStorageMetadata", "ChunkStorageMetadata", "BytesStorageMetadata",
                                       "_MEM_FORMAT_ENCODING")
} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch.serialization", "_get_layout"),
    ("torch", "Size"), ("collections", "OrderedDict"), ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"),
    ("pathlib", "PurePosixPath"), ("pathlib", "PureWindowsPath"),
} | {("torch", name) for name in ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16",
                                  "int8", "uint8", "bool", "complex64", "complex128")}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise CheckpointError(f"DCP metadata references {module}.{name}, which a checkpoint index never needs")


def _reader(path: Path) -> Any:
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            meta_path = Path(self.path) / ".metadata"
            try:
                metadata = _MetadataUnpickler(io.BytesIO(meta_path.read_bytes())).load()
            except CheckpointError:
                raise
            except Exception as exc:  # noqa: BLE001 - truncated/garbled index
                raise CheckpointError(f"{meta_path} is corrupted ({type(exc).__name__})") from None
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(str(path))


def _planner() -> Any:
    from torch.distributed.checkpoint import DefaultLoadPlanner

    class TensorOnlyPlanner(DefaultLoadPlanner):
        def load_bytes(self, read_item: Any, value: Any) -> None:
            raise CheckpointError(f"checkpoint entry '{read_item.dest_index.fqn}' is a pickle; refusing to load it")

    return TensorOnlyPlanner()


# ------------------------------------------------------------------------------ state dicts
def _model_state(model: nn.Module, full: bool = False) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=full, cpu_offload=full))


def _gather_states(model: nn.Module, states: dict[str, Any]) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    out: dict[str, Any] = {MODEL_KEY: _model_state(model)}
    for name, obj in states.items():
        if isinstance(obj, torch.optim.Optimizer):
            out[name] = get_optimizer_state_dict(model, obj)
        else:
            out[name] = obj.state_dict()
    return out


def _apply_states(model: nn.Module, states: dict[str, Any], loaded: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    set_model_state_dict(model, loaded[MODEL_KEY])
    for name, obj in states.items():
        if isinstance(obj, torch.optim.Optimizer):
            set_optimizer_state_dict(model, obj, loaded[name])
        else:
            obj.load_state_dict(loaded[name])


# ------------------------------------------------------------------------------ the backend
class DCPBackend:
    """`CheckpointBackend` for sharded runs: every rank writes its shards (`collective`)."""

    collective = True

    def __init__(self, world: Any = None, async_save: bool = False) -> None:
        self.world = world
        self.async_save = async_save
        self._async_group: Any = None

    @property
    def _group(self) -> Any:
        return getattr(self.world, "control_group", None)

    def write(self, directory: Path, model: nn.Module, model_cfg: Any, tokenizer_path: Path | None,
              meta: dict[str, Any], states: dict[str, Any]) -> Any:
        """All ranks: shards into `directory/dcp`; rank 0: JSON state, tokenizer, meta.json (last).

        With `async_save` returns a pending handle whose `wait()` completes the write (the
        tensors are already staged, so training may change the weights meanwhile)."""
        import torch.distributed.checkpoint as dcp

        directory = Path(directory)
        skeleton, tensors = split_tensors(_gather_states(model, states))
        is_main = self.world is None or self.world.is_main
        writer = dcp.FileSystemWriter(str(directory / DCP_DIR))

        def finish() -> None:
            if is_main:
                atomic_write_json(directory / STATE_FILE, skeleton)
                if tokenizer_path is not None:
                    atomic_write_bytes(directory / "tokenizer.json", Path(tokenizer_path).read_bytes())
                atomic_write_json(directory / "meta.json", _meta(model_cfg, meta))

        if self.async_save:
            import torch.distributed as dist

            if self._async_group is None:
                # Background saves plan over their own gloo group, so they never interleave
                # with the training loop's collectives (torchtitan does the same).
                self._async_group = dist.new_group(backend="gloo")
            future = dcp.async_save(tensors, storage_writer=writer, process_group=self._async_group)
            return PendingSave(future, finish)
        with _single_process_ok():
            dcp.save(tensors, storage_writer=writer, process_group=self._group)
        finish()
        return None

    def read(self, directory: Path, model: nn.Module, states: dict[str, Any]) -> None:
        """Load a DCP checkpoint (any world size) or a single-process one into a sharded model."""
        directory = Path(directory)
        if not is_dcp_checkpoint(directory):
            load_local_into_sharded(directory, model, states)
            return
        template = _gather_states(model, states)
        skeleton_now, tensors = split_tensors(template)
        saved_skeleton = _read_state_json(directory)
        _load_tensors(directory, tensors, self._group)
        # Non-tensor values come from the checkpoint; tensor leaves were loaded in place
        # (resharded to this run's layout) into the template's tensors.
        _apply_states(model, states, _merge_saved(saved_skeleton, skeleton_now, tensors))


class PendingSave:
    """An in-flight `async_save`; `wait()` blocks until the shards are on disk, then finishes."""

    def __init__(self, future: Any, finish: Any) -> None:
        self.future, self.finish = future, finish

    def wait(self) -> None:
        result = self.future.result()
        if hasattr(result, "upload_completion"):  # newer DCP returns (staging, upload) futures
            result.upload_completion.result()
        self.finish()


def _meta(model_cfg: Any, meta: dict[str, Any]) -> dict[str, Any]:
    from clusterlm.model.serialization import FORMAT, VERSION

    return {"format": FORMAT, "version": VERSION, "step": int(meta.get("step", 0)),
            **{k: v for k, v in meta.items() if k not in ("format", "version", "step", "model")},
            "weights": "dcp", "model": model_cfg.model_dump(mode="json")}


def _read_state_json(directory: Path) -> Any:
    path = directory / STATE_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{directory} has no {STATE_FILE}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path} is corrupted (not valid JSON)") from None


def _load_tensors(directory: Path, tensors: dict[str, torch.Tensor], group: Any = None) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    try:
        with _single_process_ok():
            dcp.load(tensors, storage_reader=_reader(directory / DCP_DIR), planner=_planner(), process_group=group)
    except CheckpointError:
        raise
    # DCP wraps per-rank failures in CheckpointException (a BaseException).
    except (Exception, CheckpointException) as exc:  # noqa: BLE001
        first = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{directory / DCP_DIR}: cannot load the checkpoint ({first})") from None


@contextlib.contextmanager
def _single_process_ok() -> Iterator[None]:
    """DCP warns when it runs without a process group; loading into or saving from one process
    (export, eval, resuming at world size 1) is intended."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _merge_saved(saved: Any, now: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The saved skeleton with tensor references resolved against this run's loaded tensors."""
    try:
        return merge_tensors(saved, tensors)
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint does not match this run's state ({exc})") from None


# ------------------------------------------------------------------------------ 1 → N
def load_local_into_sharded(directory: Path, model: nn.Module, states: dict[str, Any]) -> None:
    """A single-process checkpoint (model.safetensors + train_state.pt) into a parallelized model."""
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    from clusterlm.train.checkpoint import load_train_state

    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"{directory} has neither DCP shards ({DCP_DIR}/) nor model.safetensors")
    full = load_file(str(weights))
    # Tied weights are stored once; every name of the group gets the tensor.
    for names in _tied_groups(model):
        present = [n for n in names if n in full]
        for n in names:
            if present:
                full.setdefault(n, full[present[0]])
    options = StateDictOptions(full_state_dict=True, strict=True)
    set_model_state_dict(model, full, options=options)
    saved = load_train_state(directory)
    for name, obj in states.items():
        if name not in saved:
            raise CheckpointError(f"{directory} lacks state for: {name}")
        if isinstance(obj, torch.optim.Optimizer):
            set_optimizer_state_dict(model, obj, _optimizer_by_fqn(model, obj, saved[name]), options=options)
        else:
            obj.load_state_dict(saved[name])


def _tied_groups(model: nn.Module) -> list[list[str]]:
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(_clean_fqn(name))
    return [names for names in groups.values() if len(names) > 1]


def _optimizer_by_fqn(model: nn.Module, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> dict[str, Any]:
    """A `torch.optim` state dict (params numbered in group order) keyed by parameter names.

    The optimizer was built by the same `build_optimizer` on a model with the same parameter
    order, so number i here is number i in the checkpoint."""
    names = {id(p): _clean_fqn(n) for n, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    saved_groups = saved["param_groups"]
    if sum(len(g["params"]) for g in saved_groups) != len(order):
        raise CheckpointError("checkpoint optimizer state has a different number of parameters than this model")
    state = {order[int(i)]: s for i, s in saved["state"].items()}
    groups = [{**g, "params": [order[int(i)] for i in g["params"]]} for g in saved_groups]
    return {"state": state, "param_groups": groups}


def _clean_fqn(name: str) -> str:
    for wrapper in ("_checkpoint_wrapped_module.", "_orig_mod.", "module."):
        name = name.replace(wrapper, "")
    return name


# ------------------------------------------------------------------------------ N → plain model
def load_model_weights(directory: str | Path, model: nn.Module) -> None:
    """Fill a plain single-device model from a DCP checkpoint's (sharded) weights."""
    directory = Path(directory)
    tensors = {f"{MODEL_KEY}.{k}": v for k, v in model.state_dict().items()}
    # Tied tensors appear under two names; load into one, then it is shared anyway.
    _load_tensors(directory, _dedupe(tensors))


def _dedupe(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    seen: set[int] = set()
    out = {}
    for k, v in tensors.items():
        if v.data_ptr() in seen and v.device.type != "meta":
            continue
        seen.add(v.data_ptr())
        out[k] = v
    return out
