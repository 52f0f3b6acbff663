"""Shared test fixtures."""

from __future__ import annotations

import os

import pytest

# Deterministic, quiet, and never touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOKENIZER_TEXT = ["the quick brown fox jumps over the lazy dog. " * 4, "hello world, hello model. " * 4,
                  "def f(x):\n    return x + 1\n" * 3]


def _probe(threads: int, scale: float) -> dict:
    """Measurements of a 2-core CPU (the numbers of configs/clusters/probed-epyc-2core.yaml, × scale)."""
    return {"device": "cpu", "device_name": "Test CPU", "threads": threads,
            "matmul_flops": {"fp32": 67e9 * scale, "bf16": 33.6e9 * scale},
            "gemm_table": [[0.000524, 0.04e9], [0.0336, 2.8e9], [0.268, 16.7e9], [2.147, 67e9 * scale]],
            "attention_flops": 33.6e9 * scale, "memory_bandwidth": 16.8e9 * scale, "elementwise_efficiency": 0.25,
            "kernel_overhead_s": 2.65e-6, "disk_write": 0.85e9, "disk_read": 2.08e9, "disk_dir": "/tmp",
            "allreduce_latency_s": 2.2e-4 if threads > 1 else None,
            "allreduce_bus_bandwidth": 1.26e9 if threads > 1 else None,
            "runtime_overhead_gib": 0.303 if threads > 1 else None, "host_memory_gib": 23.5,
            "cpu_model": "Test CPU", "cpu_cores": 2, "disk_free_tb": 0.08, "seconds": 10.0, "load_average": 1.0}


@pytest.fixture(autouse=True, scope="session")
def local_cluster_cache(tmp_path_factory):
    """`--cluster local` in tests never probes nor touches the user's cache: a session cache dir
    (inherited by subprocesses) holding a fixed probe of a 2-core CPU for this machine."""
    from clusterlm.cluster import local

    path = tmp_path_factory.mktemp("clusterlm-cache")
    before = os.environ.get(local.CACHE_ENV)
    os.environ[local.CACHE_ENV] = str(path)
    local.store({"all_threads": _probe(2, 1.0), "one_thread": _probe(1, 0.55)})
    yield path
    if before is None:
        os.environ.pop(local.CACHE_ENV, None)
    else:
        os.environ[local.CACHE_ENV] = before


@pytest.fixture(scope="session")
def tokenizer():
    """A tiny byte-level BPE trained on ASCII only, so non-ASCII text splits into byte tokens."""
    from clusterlm.data.tokenizer import train_tokenizer

    return train_tokenizer(TOKENIZER_TEXT, vocab_size=300, min_frequency=1)


@pytest.fixture
def one_thread():
    """Batch-1 decoding of tiny models is dominated by thread wake-ups when the two CI cores are
    shared with other tests; one intra-op thread makes these tests ~10× faster (results are the same).
    Directories of such tests request it from an autouse fixture in their conftest."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
