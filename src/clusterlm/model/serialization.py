"""Model weights on disk: the checkpoint directory's model part, and a single-file export.

    CKPT/model.safetensors   state dict of the plain model (tied weights stored once)
    CKPT/tokenizer.json      copy of the dataset's tokenizer (optional)
    CKPT/meta.json           {"format": "clusterlm-checkpoint", "version": 1, "step", "model": ModelConfig,
                              "weights_sha256", ...caller's fields}

Only safetensors and JSON are read here — never pickles — so a checkpoint from an untrusted
source cannot run code. Anything wrong with a checkpoint (missing file, truncated or altered
weights, weights that do not fit the config) is a `CheckpointError` with a one-line message.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clusterlm.errors import CheckpointError, ConfigError
from clusterlm.fsio import atomic_write_bytes, atomic_write_json
from clusterlm.model.config import ModelConfig

FORMAT = "clusterlm-checkpoint"
VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"
TOKENIZER_FILE = "tokenizer.json"
LATEST_FILE = "latest"


@dataclass
class LoadedModel:
    model: nn.Module  # in eval mode
    config: ModelConfig
    tokenizer: Any | None  # tokenizers.Tokenizer, when the checkpoint carries one
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path = Path()
    tokenizer_path: Path | None = None  # the file `tokenizer` came from


# --- writing -----------------------------------------------------------------------------------

def weights_bytes(model: nn.Module, metadata: dict[str, str] | None = None) -> bytes:
    """The model's state dict as safetensors bytes (shared tensors such as a tied head stored once)."""
    from safetensors.torch import save

    state = model.state_dict()
    # safetensors refuses aliased tensors; keep the first name of each tied group.
    dropped = {name for names in _alias_groups(state) for name in names[1:]}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items() if k not in dropped}
    return save(tensors, metadata=metadata)


def save_model_dir(dir: Path, model: nn.Module, cfg: ModelConfig, tokenizer_path: Path | None,
                   meta: dict[str, Any]) -> None:
    """Write weights, tokenizer copy and meta.json into `dir` (each file atomically, meta last).

    meta.json is written last, so a directory with a meta.json has all its other files.
    """
    directory = Path(dir)
    directory.mkdir(parents=True, exist_ok=True)
    data = weights_bytes(model)
    atomic_write_bytes(directory / WEIGHTS_FILE, data)
    if tokenizer_path is not None:
        atomic_write_bytes(directory / TOKENIZER_FILE, Path(tokenizer_path).read_bytes())
    full = {
        "format": FORMAT,
        "version": VERSION,
        "step": int(meta.get("step", 0)),
        **{k: v for k, v in meta.items() if k not in ("format", "version", "step", "model")},
        "model": cfg.model_dump(mode="json"),
        "weights_sha256": hashlib.sha256(data).hexdigest(),
    }
    atomic_write_json(directory / META_FILE, full)


# --- finding -----------------------------------------------------------------------------------

def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint dir as given, or a run dir's newest checkpoint (its `latest` pointer)."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p} does not exist")
    if p.is_file() and p.suffix == ".safetensors":
        return p  # a single-file export
    if (p / META_FILE).is_file() or (p / "config.json").is_file():
        return p
    pointer = p / LATEST_FILE
    if pointer.is_file():
        target = p / "checkpoints" / pointer.read_text(encoding="utf-8").strip()
        if (target / META_FILE).is_file():
            return target
    ckpts = sorted(c for c in (p / "checkpoints").glob("step-*") if (c / META_FILE).is_file())
    if ckpts:
        return ckpts[-1]  # `latest` missing or stale: the newest complete one
    raise CheckpointError(f"{p} is neither a checkpoint dir (no {META_FILE}) nor a run dir with checkpoints")


# --- reading -----------------------------------------------------------------------------------

def read_meta(ckpt: Path) -> dict[str, Any]:
    path = ckpt / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt} has no {META_FILE} (incomplete or not a clusterlm checkpoint)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path} is corrupted (not valid JSON)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a clusterlm checkpoint (format != '{FORMAT}')")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path} has version {meta.get('version')}; this clusterlm reads version {VERSION}")
    return meta


def config_from_meta(meta: dict[str, Any], where: Path) -> ModelConfig:
    from clusterlm.config.base import validate

    model = meta.get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"{where} records no model config")
    try:
        return validate(ModelConfig, model, prefix="model")
    except ConfigError as exc:
        raise CheckpointError(f"{where} has an invalid model config: {exc}") from None


def load_weights_bytes(model: nn.Module, data: bytes, where: Path) -> None:
    """Load safetensors bytes into `model` strictly; CheckpointError on corruption or mismatch."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise CheckpointError(f"{where} is corrupted or not a safetensors file ({exc})") from None
    load_state(model, tensors, where)


def load_state(model: nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    """Strict `load_state_dict` with one-line CheckpointErrors naming the first mismatch."""
    tensors = dict(tensors)
    expected = model.state_dict()
    # Tied parameters appear under every name in the state dict but are stored once.
    aliases = _alias_groups(expected)
    for names in aliases:
        present = [n for n in names if n in tensors]
        if present:
            for n in names:
                tensors.setdefault(n, tensors[present[0]])
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{where} does not match the model config ({what})")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(
                f"{where} does not match the model config: {name} has shape {tuple(tensor.shape)}, "
                f"the config needs {tuple(expected[name].shape)}"
            )
    model.load_state_dict(tensors, strict=True)


def _alias_groups(state: dict[str, torch.Tensor]) -> list[list[str]]:
    by_ptr: dict[tuple[str, int], list[str]] = {}
    for name, t in state.items():
        if t.device.type != "meta":
            by_ptr.setdefault((str(t.device), t.data_ptr()), []).append(name)
    return [names for names in by_ptr.values() if len(names) > 1]


def materialize(cfg: ModelConfig, device: torch.device | str) -> nn.Module:
    """A model on `device` whose weights are about to be overwritten by a load."""
    from clusterlm.model.build import build_model

    return build_model(cfg, device=device)


def load_model_dir(path: str | Path, device: torch.device | str = "cpu", verify: bool = True) -> LoadedModel:
    """Load a checkpoint dir, a run dir (its latest checkpoint), a single-file export or an HF dir."""
    ckpt = resolve_checkpoint(path)
    if ckpt.is_file():
        return load_single_file(ckpt, device)
    if not (ckpt / META_FILE).is_file() and (ckpt / "config.json").is_file():
        from clusterlm.model.hf import load_hf_dir

        loaded = load_hf_dir(ckpt, device=device)
        return _loaded(loaded.model, loaded.config, ckpt / TOKENIZER_FILE, {}, ckpt)
    meta = read_meta(ckpt)
    cfg = config_from_meta(meta, ckpt / META_FILE)
    if meta.get("weights") == "dcp":  # sharded torch.distributed.checkpoint: consolidate on load
        from clusterlm.distributed.checkpoint import load_model_weights

        model = materialize(cfg, device)
        load_model_weights(ckpt, model)
        model.eval()
        return _loaded(model, cfg, ckpt / TOKENIZER_FILE, meta, ckpt)
    weights = ckpt / WEIGHTS_FILE
    try:
        data = weights.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{ckpt} has no {WEIGHTS_FILE}") from None
    expected_sha = meta.get("weights_sha256")
    if verify and expected_sha and hashlib.sha256(data).hexdigest() != expected_sha:
        raise CheckpointError(f"{weights} is corrupted (sha256 differs from the one in {META_FILE})")
    model = materialize(cfg, device)
    load_weights_bytes(model, data, weights)
    model.eval()
    return _loaded(model, cfg, ckpt / TOKENIZER_FILE, meta, ckpt)


def _loaded(model: nn.Module, cfg: ModelConfig, tokenizer_path: Path, meta: dict[str, Any],
            path: Path) -> LoadedModel:
    tokenizer = _load_tokenizer(tokenizer_path)
    return LoadedModel(model, cfg, tokenizer, meta, path, tokenizer_path if tokenizer is not None else None)


def _load_tokenizer(path: Path) -> Any | None:
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception on bad JSON
        raise CheckpointError(f"{path} is not a valid tokenizer ({exc})") from None


# --- single-file export --------------------------------------------------------------------------

def save_single_file(out: Path, model: nn.Module, cfg: ModelConfig, meta: dict[str, Any],
                     tokenizer_path: Path | None = None) -> list[Path]:
    """OUT.safetensors with the config in its header, plus OUT.json (and OUT.tokenizer.json).

    The header copy makes the one file self-describing; the JSON sidecar is for people and tools.
    """
    out = Path(out)
    info = {"format": FORMAT, "version": VERSION, **meta, "model": cfg.model_dump(mode="json")}
    info_json = json.dumps(info)
    data = weights_bytes(model, metadata={"clusterlm": info_json})
    atomic_write_bytes(out, data)
    written = [out]
    sidecar = out.with_suffix(".json")
    atomic_write_json(sidecar, info | {"weights_sha256": hashlib.sha256(data).hexdigest()})
    written.append(sidecar)
    if tokenizer_path is not None:
        tok = out.with_suffix(".tokenizer.json")
        atomic_write_bytes(tok, Path(tokenizer_path).read_bytes())
        written.append(tok)
    return written


def load_single_file(path: Path, device: torch.device | str = "cpu") -> LoadedModel:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupted or not a safetensors file ({exc})") from None
    if "clusterlm" not in header:
        raise CheckpointError(f"{path} carries no clusterlm model config in its header")
    try:
        meta = json.loads(header["clusterlm"])
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: the model config in its header is not valid JSON") from None
    cfg = config_from_meta(meta, path)
    model = materialize(cfg, device)
    load_weights_bytes(model, path.read_bytes(), path)
    model.eval()
    return _loaded(model, cfg, path.with_suffix(".tokenizer.json"), meta, path)
