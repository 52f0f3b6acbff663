"""Clean, tokenize and shard a text corpus into a dataset dir.

Inputs are files, directories (recursive) and globs of .txt .md .rst .py .html/.htm
.jsonl, optionally compressed (.gz .xz .zst). With no INPUT the embedded default
corpus is used: this Python's standard library sources (about 10 MB).

The dataset dir holds tokenizer.json, shards/{train,val}-NNNNN.bin, report.json
and manifest.json (written last). It is built under a temporary name and renamed
when complete.

examples:
  clusterlm prepare --out data/stdlib
  clusterlm prepare --out data/small --max-mb 2 --vocab-size 4096
  clusterlm prepare 'corpus/**/*.jsonl.zst' --out data/web --jsonl-field content --workers 8
  clusterlm prepare docs/ --out data/docs --tokenizer data/stdlib/tokenizer.json
  clusterlm prepare corpus/ data.clean.min_chars=0 data.clean.html=false --out data/x
  clusterlm prepare --config run.yaml --out data/x
"""

from __future__ import annotations

import argparse

from clusterlm.config.base import apply_overrides, load_yaml, validate
from clusterlm.config.data import DataConfig
from clusterlm.errors import ConfigError

# flag → DataConfig key; a flag left unset keeps the config file's (or default) value.
_FLAG_KEYS = {
    "vocab_size": "vocab_size",
    "tokenizer": "tokenizer",
    "val_fraction": "val_fraction",
    "workers": "workers",
    "seed": "seed",
    "max_mb": "max_input_mb",
    "max_file_mb": "max_file_mb",
    "max_line_mb": "max_line_mb",
    "tokenizer_sample_mb": "tokenizer_sample_mb",
    "shard_tokens": "shard_tokens",
    "jsonl_field": "jsonl_field",
    "min_chars": "clean.min_chars",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="INPUT|data.KEY=VALUE",
                        help="files, directories or globs (default: stdlib), and data.key=value overrides of "
                        "the data config (as for every verb), e.g. data.clean.html=false")
    parser.add_argument("--out", metavar="DIR", help="dataset dir to create (default: data.dir of --config)")
    parser.add_argument("--vocab-size", type=int, metavar="N", help="BPE vocabulary size (default 8192)")
    parser.add_argument("--tokenizer", metavar="JSON", help="reuse this tokenizer.json instead of training one")
    parser.add_argument("--val-fraction", type=float, metavar="F", help="share of documents in val (default 0.02)")
    parser.add_argument("--workers", type=int, metavar="N", help="encoding processes (default 1)")
    parser.add_argument("--seed", type=int, metavar="S", help="seed of the train/val split (default 0)")
    parser.add_argument("--max-mb", type=float, metavar="MB", help="stop reading input after this many MB")
    parser.add_argument("--max-file-mb", type=float, metavar="MB",
                        help="read at most this many MB (decompressed) of any one file; the rest is skipped "
                        "and counted (default 16000; data.max_file_mb=null for no cap)")
    parser.add_argument("--max-line-mb", type=float, metavar="MB",
                        help="skip (and count) JSONL lines longer than this (default 16; data.max_line_mb=null "
                        "for no cap)")
    parser.add_argument("--tokenizer-sample-mb", type=float, metavar="MB",
                        help="train the tokenizer on a hash sample of about this many MB of a larger corpus "
                        "(default 256; data.tokenizer_sample_mb=null trains on everything)")
    parser.add_argument("--shard-tokens", type=int, metavar="N", help="tokens per shard file (default 16M)")
    parser.add_argument("--jsonl-field", metavar="NAME", help="text field of .jsonl records (default 'text')")
    parser.add_argument("--min-chars", type=int, metavar="N", help="drop documents shorter than this (default 32)")
    parser.add_argument("--config", metavar="YAML", help="a run config; its data: section is the starting point")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def config_from_args(args: argparse.Namespace) -> DataConfig:
    """DataConfig from --config's data: section, then data.key=value overrides, then explicit flags."""
    data = {}
    if args.config:
        whole = load_yaml(args.config)
        section = whole.get("data", {})
        if not isinstance(section, dict):
            raise ConfigError(f"{args.config}: 'data' must be a mapping")
        data = section
    overrides = [item[len("data."):] for item in args.inputs if _is_override(item)]
    inputs = [item for item in args.inputs if not _is_override(item)]
    for flag, key in _FLAG_KEYS.items():
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value!s}" if not isinstance(value, str) else f"{key}={_yaml_str(value)}")
    data = apply_overrides(data, overrides)
    if inputs:
        data["inputs"] = inputs
    return validate(DataConfig, data, prefix="data")


def _is_override(item: str) -> bool:
    """`data.KEY=VALUE` (one syntax for every verb); anything else is an input path or glob."""
    key, sep, _ = item.partition("=")
    return bool(sep) and key.startswith("data.")


def _yaml_str(value: str) -> str:
    # Overrides are parsed as YAML; quote strings so paths like 'on' or '1e3' stay strings.
    return "'" + value.replace("'", "''") + "'"


def run(args: argparse.Namespace) -> int:
    from clusterlm.api.prepare import prepare

    if args.vocab_size is not None:
        from clusterlm.data.tokenizer import check_vocab_size

        check_vocab_size(args.vocab_size)  # a message about the flag, not the config key
    prepare(config_from_args(args), args.out, overwrite=args.overwrite, quiet=args.quiet)
    return 0
