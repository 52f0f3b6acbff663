"""A checkpoint ready to generate from: the model in eval mode on a device, and its tokenizer.

Shared by `clusterlm generate`, `clusterlm serve` and the benchmarks, so all accept exactly the
same CKPT and --device values.
"""

from __future__ import annotations

from typing import Any

from clusterlm.checkpoint.load import LoadedModel, load_model
from clusterlm.data.tokenizer import EOS_TOKEN
from clusterlm.errors import CheckpointError
from clusterlm.runtime.device import resolve_device


def load_for_generation(checkpoint: str, device_name: str) -> LoadedModel:
    """Load CKPT (in eval mode) on `device_name`, insisting on a tokenizer; bad input is a one-line error."""
    loaded = load_model(checkpoint, device=resolve_device(device_name, option="--device"))
    if loaded.tokenizer is None:
        raise CheckpointError(f"{loaded.path} has no tokenizer.json; cannot encode the prompt")
    return loaded


def eos_id(tokenizer: Any) -> int | None:
    """The end-of-text id that ends a generation (None if the tokenizer has none)."""
    return tokenizer.token_to_id(EOS_TOKEN)
