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

FORMATS = ("safetensors", "hf")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint dir or run dir")
    parser.add_argument("--out", required=True, help="output file (.safetensors) or directory (hf)")
    parser.add_argument("--format", choices=FORMATS, help="default: from --out's suffix")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")


def run(args: argparse.Namespace) -> int:
    from clusterlm.api.export import export

    for path in export(args.checkpoint, args.out, args.format, overwrite=args.overwrite):
        print(path)
    return 0
