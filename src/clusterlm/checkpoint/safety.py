"""The pickle policy, in one place: nothing read from a checkpoint can run code.

* Weights are safetensors (no code by construction).
* `train_state.pt` is read with `torch.load(weights_only=True)`: tensors and plain data only.
* A DCP checkpoint's index (`dcp/.metadata`) is a pickle; it is read with an unpickler that
  admits exactly the classes a DCP index contains, and the load planner refuses any entry
  stored as pickled bytes (clusterlm only ever writes tensors through DCP).

A file that breaks these rules is a `CheckpointError`, never an executed payload.
"""

from __future__ import annotations

import io
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner, FileSystemReader
from torch.distributed.checkpoint.metadata import StorageMeta

from clusterlm.errors import CheckpointError


def load_torch_file(path: Path) -> Any:
    """A `torch.save` file with `weights_only=True`; any failure is a one-line CheckpointError."""
    try:
        with warnings.catch_warnings():
            # torch warns before refusing a disguised pickle; the refusal is the message that matters.
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip failure means a bad file
        raise CheckpointError(f"{path} is corrupted or unreadable ({type(exc).__name__})") from None


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


class MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise CheckpointError(f"DCP metadata references {module}.{name}, which a checkpoint index never needs")


class SafeReader(FileSystemReader):
    """DCP's file reader with the index read through `MetadataUnpickler`."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        meta_path = Path(self.path) / ".metadata"
        try:
            metadata = MetadataUnpickler(io.BytesIO(meta_path.read_bytes())).load()
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - truncated/garbled index
            raise CheckpointError(f"{meta_path} is corrupted ({type(exc).__name__})") from None
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class TensorOnlyPlanner(DefaultLoadPlanner):
    """Loads tensors; an entry stored as pickled bytes is refused instead of unpickled."""

    def load_bytes(self, read_item: Any, value: Any) -> None:
        raise CheckpointError(f"checkpoint entry '{read_item.dest_index.fqn}' is a pickle; refusing to load it")
