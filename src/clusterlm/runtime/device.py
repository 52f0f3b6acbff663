"""Which device a run uses: `auto` → the first CUDA GPU if present, else the CPU."""

from __future__ import annotations

import torch

from clusterlm.errors import ConfigError

SUPPORTED_TYPES = ("cpu", "cuda")


def resolve_device(spec: str, option: str = "train.device") -> torch.device:
    """`auto` → cuda if available, else cpu; explicit devices must exist (ConfigError naming `option`)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ConfigError(f"{option}: unknown device '{spec}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type not in SUPPORTED_TYPES:
        raise ConfigError(f"{option}: unsupported device type '{device.type}' (use auto, cpu, cuda or cuda:N)")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{option} is '{spec}' but no CUDA GPU is available; use {option}=cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{option} {spec}: only {torch.cuda.device_count()} CUDA device(s) present")
    return device
