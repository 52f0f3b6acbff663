from __future__ import annotations

import pytest

from clusterlm.cluster import catalog
from clusterlm.errors import ConfigError


@pytest.mark.parametrize("name,dtype,expected", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.4e12),
    ("NVIDIA H100 PCIe", "bf16", 756e12),  # the more specific pattern wins over plain "h100"
    ("NVIDIA A100-SXM4-80GB", "bf16", 312e12),
    ("NVIDIA A100-SXM4-40GB", "fp32", 19.5e12),
    ("NVIDIA H200", "fp8", 1978.9e12),
    ("NVIDIA L40S", "bf16", 362.05e12),  # not confused with L4
    ("NVIDIA L4", "bf16", 121e12),
    ("Tesla V100-SXM2-32GB", "fp16", 125e12),
])
def test_peak_flops_for_torch_device_names(name, dtype, expected):
    assert catalog.peak_flops_for_device(name, dtype) == pytest.approx(expected)


@pytest.mark.parametrize("name,dtype", [("cpu:x86_64:2threads", "fp32"), ("Some Future GPU", "bf16"),
                                        ("Tesla V100-SXM2-32GB", "bf16"), ("", "fp32")])
def test_unknown_device_or_precision_is_none(name, dtype):
    assert catalog.peak_flops_for_device(name, dtype) is None


def test_every_catalog_entry_is_sourced_and_positive():
    for acc in catalog.ACCELERATORS.values():
        assert acc.source, acc.name
        assert acc.memory_gib > 0 and acc.memory_bandwidth_gb_s > 0 and acc.peak_tflops
        assert 0 < acc.gemm_efficiency <= 1 and 0 < acc.memory_efficiency <= 1
    for table in (catalog.LINKS, catalog.NETWORKS, catalog.STORAGE):
        for item in table.values():
            assert item.source or item.name in ("none",), item.name


def test_reference_numbers():
    # /shared/REFERENCE.md hardware table
    assert catalog.accelerator("a100-80gb").memory_bandwidth_gb_s == 2039
    assert catalog.accelerator("h100-sxm").peak_flops("bf16") == pytest.approx(989.4e12)
    assert catalog.accelerator("tpu-v4").peak_flops("bf16") == pytest.approx(275e12)
    assert catalog.link("nvlink3").bandwidth_gb_s == 300  # 600 GB/s bidirectional, per direction
    assert catalog.network("ib-ndr").port_gbit_s == 400


def test_unknown_names_suggest_the_closest():
    with pytest.raises(ConfigError, match="unknown accelerator 'a100-80g'.*a100-80gb"):
        catalog.accelerator("a100-80g")
    with pytest.raises(ConfigError, match="unknown network"):
        catalog.network("myrinet")


def test_missing_precision_is_a_clear_error():
    with pytest.raises(ConfigError, match="no bf16 peak"):
        catalog.accelerator("v100-32gb").peak_flops("bf16")
