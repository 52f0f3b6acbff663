from __future__ import annotations

import pytest
import torch

from clusterlm.errors import ConfigError
from clusterlm.runtime import precision as prec
from clusterlm.runtime.device import resolve_device


def test_cpu_auto_follows_measured_speed(monkeypatch):
    monkeypatch.setattr(prec, "cpu_matmul_speeds", lambda: (88e9, 1e9))  # AVX2: bf16 emulated
    assert prec.select_precision("auto", torch.device("cpu")).name == "fp32"
    monkeypatch.setattr(prec, "cpu_matmul_speeds", lambda: (100e9, 400e9))  # AMX / AVX512-BF16
    chosen = prec.select_precision("auto", torch.device("cpu"))
    assert chosen.name == "bf16" and "4.0×" in chosen.reason


def test_explicit_precisions_and_errors():
    assert prec.select_precision("fp32", torch.device("cpu")).name == "fp32"
    assert prec.select_precision("bf16", torch.device("cpu")).name == "bf16"
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        prec.select_precision("fp16", torch.device("cpu"))


def test_bf16_autocast_runs_matmul_in_bf16_on_cpu():
    p = prec.Precision("bf16", "test")
    a = torch.randn(4, 4)
    with p.autocast(torch.device("cpu")):
        assert (a @ a).dtype == torch.bfloat16
    with prec.Precision("fp32", "test").autocast(torch.device("cpu")):
        assert (a @ a).dtype == torch.float32


def test_device_resolution_errors():
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ConfigError):
        resolve_device("tpu9")
