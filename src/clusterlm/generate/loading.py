"""A checkpoint ready to generate from: the model in eval mode on a device, and its tokenizer.

Shared by `clusterlm generate`, `clusterlm serve` and the benchmarks, so all accept exactly the
same CKPT and --device values. Checkpoint reading and device resolution each happen at one
call below (the checkpoint and runtime packages will own them).
"""

from __future__ import annotations

from typing import Any

from clusterlm.data.tokenizer import EOS_TOKEN
from clusterlm.errors import CheckpointError, ConfigError, UsageError
from clusterlm.model.serialization import LoadedModel, load_model_dir
from clusterlm.train.precision import resolve_device


def load_for_generation(checkpoint: str, device_name: str) -> LoadedModel:
    """Load CKPT (in eval mode) on `device_name`, insisting on a tokenizer; bad input is a one-line error."""
    try:
        device = resolve_device(device_name)
    except ConfigError as exc:
        raise UsageError(str(exc).replace("train.device", "--device")) from None
    loaded = load_model_dir(checkpoint, device=device)
    if loaded.tokenizer is None:
        raise CheckpointError(f"{loaded.path} has no tokenizer.json; cannot encode the prompt")
    return loaded


def eos_id(tokenizer: Any) -> int | None:
    """The end-of-text id that ends a generation (None if the tokenizer has none)."""
    return tokenizer.token_to_id(EOS_TOKEN)
