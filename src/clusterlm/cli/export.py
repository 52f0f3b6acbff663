"""Export a checkpoint's model for use elsewhere.

`clusterlm export CKPT --out PATH [--format safetensors|hf] [--overwrite]`

  safetensors  PATH.safetensors holding the weights with the model config in its header,
               plus PATH.json (config and metadata) and PATH.tokenizer.json when available.
               `clusterlm generate PATH.safetensors` loads it back.
  hf           a Hugging Face transformers dir (config.json, model.safetensors, tokenizer):
               GPT-2 style → GPT2LMHeadModel, Llama style → LlamaForCausalLM, loadable with
               `AutoModelForCausalLM.from_pretrained(PATH)`. Recurrent models have no HF form.

The format defaults to safetensors when PATH ends in .safetensors, else hf. CKPT is a
checkpoint dir or a run dir (its latest checkpoint), single-process or distributed (DCP shards
are consolidated). Outputs are written under temporary
names and renamed into place; an existing output is kept unless --overwrite is given.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

FORMATS = ("safetensors", "hf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint dir or run dir")
    parser.add_argument("--out", required=True, help="output file (.safetensors) or directory (hf)")
    parser.add_argument("--format", choices=FORMATS, help="default: from --out's suffix")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    fmt = args.format or ("safetensors" if out.suffix == ".safetensors" else "hf")
    loaded = load_for_export(args.checkpoint)
    written = export_model(loaded, out, fmt, overwrite=args.overwrite)
    for path in written:
        print(path)
    return 0


def load_for_export(path: str | Path) -> Any:
    """The model to export, as a `LoadedModel`.

    Single-process checkpoints (model.safetensors) load directly; sharded distributed (DCP)
    checkpoints are consolidated into one plain model by `load_model_dir` itself.
    """
    from clusterlm.model.serialization import load_model_dir

    return load_model_dir(path, device="cpu")


def export_model(loaded: Any, out: Path, fmt: str, overwrite: bool = False) -> list[Path]:
    """Write `loaded` (a LoadedModel) to `out` in `fmt`; returns the paths written."""
    from clusterlm.data.tokenizer import EOS_TOKEN
    from clusterlm.errors import OutputExistsError, UsageError
    from clusterlm.fsio import atomic_dir
    from clusterlm.model.hf import save_hf_dir
    from clusterlm.model.serialization import save_single_file

    if fmt not in FORMATS:
        raise UsageError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    tokenizer = loaded.tokenizer
    eos_id = tokenizer.token_to_id(EOS_TOKEN) if tokenizer is not None else None
    if fmt == "safetensors":
        if out.suffix != ".safetensors":
            raise UsageError(f"--out for --format safetensors must end in .safetensors, got {out}")
        meta = {k: v for k, v in (loaded.meta or {}).items() if k in ("step", "tokens_seen", "val_loss")}
        meta["source"] = str(loaded.path)
        meta["eos_id"] = eos_id
        return save_single_file(out, loaded.model, loaded.config, meta, loaded.tokenizer_path)
    from clusterlm.model.hf import hf_config

    hf_config(loaded.config)  # refuse (UsageError) before creating anything
    with atomic_dir(out, overwrite=overwrite) as tmp:
        written = save_hf_dir(tmp, loaded.model, loaded.config, loaded.tokenizer_path, eos_id=eos_id)
    return [out / p.name for p in written]
