"""`clusterlm export`: a checkpoint → one self-describing safetensors file, or a Hugging Face dir."""

from __future__ import annotations

from pathlib import Path

from clusterlm.checkpoint.formats import save_single_file, single_file_outputs
from clusterlm.checkpoint.hf import hf_config, save_hf_dir
from clusterlm.checkpoint.load import LoadedModel, load_model
from clusterlm.data.tokenizer import EOS_TOKEN
from clusterlm.errors import OutputExistsError, UsageError
from clusterlm.fsio import atomic_dir

FORMATS = ("safetensors", "hf")


def default_format(out: Path) -> str:
    return "safetensors" if Path(out).suffix == ".safetensors" else "hf"


def export(checkpoint: str | Path, out: str | Path, fmt: str | None = None, overwrite: bool = False) -> list[Path]:
    """Export the model at `checkpoint` (any format `load_model` reads; DCP shards are consolidated)
    to `out`; returns the paths written. Every output is checked for `overwrite` before any is written."""
    out = Path(out)
    fmt = fmt or default_format(out)
    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "safetensors" and out.suffix != ".safetensors":
        raise UsageError(f"--out for --format safetensors must end in .safetensors, got {out}")
    loaded = load_model(checkpoint, device="cpu")
    if fmt == "safetensors":
        targets = single_file_outputs(out, loaded.tokenizer_path is not None)
    else:
        hf_config(loaded.config)  # refuse (UsageError) before creating anything
        targets = [out]
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{existing[0]} exists; pass --overwrite to replace it")
    return _write(loaded, out, fmt, overwrite)


def _write(loaded: LoadedModel, out: Path, fmt: str, overwrite: bool) -> list[Path]:
    tokenizer = loaded.tokenizer
    eos_id = tokenizer.token_to_id(EOS_TOKEN) if tokenizer is not None else None
    if fmt == "safetensors":
        meta = {k: v for k, v in (loaded.meta or {}).items() if k in ("step", "tokens_seen", "val_loss")}
        meta.update(source=str(loaded.path), eos_id=eos_id)
        return save_single_file(out, loaded.model, loaded.config, meta, loaded.tokenizer_path)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        written = save_hf_dir(tmp, loaded.model, loaded.config, loaded.tokenizer_path, eos_id=eos_id)
    return [out / p.name for p in written]
