"""`clusterlm prepare`: clean, tokenize and shard a corpus into a dataset dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clusterlm.config.data import DataConfig
from clusterlm.data.prepare import prepare_dataset
from clusterlm.errors import UsageError


def prepare(config: DataConfig, out: str | Path | None = None, *, overwrite: bool = False,
            quiet: bool = True) -> dict[str, Any]:
    """Build the dataset `config` describes in `out` (default `config.dir`); returns its report."""
    out = out or config.dir
    if not out:
        raise UsageError("--out DIR is required (or a --config whose data.dir names the dataset dir)")
    return prepare_dataset(config, out, overwrite=overwrite, quiet=quiet)
