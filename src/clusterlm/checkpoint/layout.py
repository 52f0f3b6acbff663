"""Names and the metadata schema of checkpoints, defined once.

A checkpoint dir (`RUN/checkpoints/step-0000200/`, or any dir `clusterlm export` accepts)::

    meta.json            CheckpointMeta: format, version, step, model config, weights kind, hashes
    model.safetensors    weights of a single-process run (tied tensors stored once)
    train_state.pt       everything else an exact resume needs (weights_only-loadable)
    dcp/                 or: torch.distributed.checkpoint shards of a sharded run ...
    train_state.json     ... with the non-tensor train state as JSON
    tokenizer.json       copy of the dataset's tokenizer

`meta.json` is written last, so a directory with one has all its other files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from clusterlm.config.base import validate
from clusterlm.config.model import ModelConfig
from clusterlm.errors import CheckpointError, ConfigError
from clusterlm.fsio import atomic_write_json

FORMAT = "clusterlm-checkpoint"
VERSION = 1
META_FILE = "meta.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
TRAIN_STATE_FILE = "train_state.pt"
TRAIN_STATE_JSON = "train_state.json"
DCP_DIR = "dcp"
LATEST_FILE = "latest"
CHECKPOINTS_DIR = "checkpoints"
STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}"


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps of the checkpoints in `RUN/checkpoints/` (hidden temporary dirs excluded), ascending."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = (STEP_DIR.match(p.name) for p in root.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint `RUN/latest` names; if the pointer is missing, stale or not a step dir's
    name (never a path out of `checkpoints/`), the one with the highest step."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    pointer = Path(run_dir) / LATEST_FILE
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8", errors="replace").strip()
        if STEP_DIR.match(name) and (root / name).is_dir():
            return root / name
    steps = checkpoint_steps(run_dir)
    return root / checkpoint_name(steps[-1]) if steps else None


class CheckpointMeta(BaseModel):
    """`meta.json`. Callers may add fields of their own (a fine-tuned head's labels, the source of
    an export); the ones below are typed and checked on every read."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    format: Literal["clusterlm-checkpoint"] = FORMAT
    version: int = VERSION
    step: int = 0
    weights: Literal["safetensors", "dcp"] = "safetensors"
    model: dict[str, Any]  # a ModelConfig, as JSON
    weights_sha256: str | None = None
    tokens_seen: int | None = None
    dataset_dir: str | None = None
    val_loss: float | None = None
    config: dict[str, Any] | None = None  # the whole RunConfig that trained it

    def model_cfg(self, where: Path) -> ModelConfig:
        try:
            return validate(ModelConfig, self.model, prefix="model")
        except ConfigError as exc:
            raise CheckpointError(f"{where} has an invalid model config: {exc}") from None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def new_meta(model_cfg: ModelConfig, weights: str = "safetensors", **fields: Any) -> CheckpointMeta:
    """The metadata of a checkpoint about to be written (`fields`: step and the caller's own keys)."""
    step = int(fields.get("step") or 0)
    fields = {k: v for k, v in fields.items() if k not in ("format", "version", "step", "model", "weights")}
    return CheckpointMeta(step=step, weights=weights, model=model_cfg.model_dump(mode="json"), **fields)


def parse_meta(data: Any, where: Path) -> CheckpointMeta:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{where} is not a clusterlm checkpoint (format != '{FORMAT}')")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{where} has version {data.get('version')}; this clusterlm reads version {VERSION}")
    if not isinstance(data.get("model"), dict):
        raise CheckpointError(f"{where} records no model config")
    try:
        return CheckpointMeta.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first.get("loc", ()))
        raise CheckpointError(f"{where}: field '{key}' is invalid ({first['msg']})") from None


def read_meta(ckpt: Path) -> CheckpointMeta:
    path = Path(ckpt) / META_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt} has no {META_FILE} (incomplete or not a clusterlm checkpoint)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path} is corrupted (not valid JSON)") from None
    return parse_meta(data, path)


def write_meta(ckpt: Path, meta: CheckpointMeta) -> None:
    atomic_write_json(Path(ckpt) / META_FILE, meta.as_dict())
