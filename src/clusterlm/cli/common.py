"""Argument helpers shared by verbs that take a run config."""

from __future__ import annotations

import argparse

from clusterlm.config.run import RunConfig, load_run_config


def add_config_args(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """`[CONFIG.yaml] [section.key=value ...]`: a YAML file and/or dotted overrides."""
    parser.add_argument(
        "config_and_overrides",
        nargs="*" if not required else "+",
        metavar="CONFIG|KEY=VALUE",
        help="a config YAML file, then dotted overrides such as train.lr=3e-4 model.preset=tiny",
    )


def split_config_args(items: list[str]) -> tuple[str | None, list[str]]:
    """First non-override item is the YAML path; the rest are `key=value` overrides."""
    path = None
    overrides: list[str] = []
    for item in items:
        if "=" in item:
            overrides.append(item)
        elif path is None:
            path = item
        else:
            from clusterlm.errors import UsageError

            raise UsageError(f"expected one config file, got '{path}' and '{item}'")
    return path, overrides


def load_config_from_args(args: argparse.Namespace, extra: list[str] | None = None) -> RunConfig:
    path, overrides = split_config_args(getattr(args, "config_and_overrides", []) or [])
    return load_run_config(path, overrides + list(extra or []))


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (argparse turns the ValueError into a one-line usage error)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be ≥ 1, got {value}")
    return value
