"""Small hand-checkable models and clusters for the planner tests (imported as `planhelp`)."""

from __future__ import annotations

from clusterlm.cluster.spec import ClusterSpec, resolve
from clusterlm.config.base import validate
from clusterlm.config.model import ModelConfig


def toy_cluster(nodes: int = 2, gpus_per_node: int = 4, **accelerator):
    """Round numbers: 100 TFLOP/s, 1 TB/s HBM, 100 GB/s links, 10 GB/s per GPU network."""
    acc = {"name": "toy", "peak_tflops": {"bf16": 100.0, "fp32": 10.0}, "memory_gib": 40,
           "memory_bandwidth_gb_s": 1000, "tdp_w": 500, "gemm_efficiency": 1.0, "memory_efficiency": 1.0,
           "kernel_overhead_us": 0.0, "runtime_overhead_gib": 0.0, **accelerator}
    spec = {"name": "toy", "nodes": nodes,
            "node": {"accelerator": acc, "accelerators_per_node": gpus_per_node, "power_w": 2000,
                     "intra_node": {"bandwidth_gb_s": 100, "latency_us": 0, "efficiency": 1.0}},
            "network": {"type": "ib-hdr", "nics_per_node": gpus_per_node, "port_gbit_s": 80, "latency_us": 0,
                        "efficiency": 1.0},
            "storage": {"read_gb_s": 10, "write_gb_s": 5, "capacity_tb": 100},
            "pue": 1.5, "price_per_gpu_hour": 2.0}
    return resolve(validate(ClusterSpec, spec))


def gpt(n_layer=4, n_head=8, d_model=256, vocab=1024, seq=128, **kw) -> ModelConfig:
    return ModelConfig(style="gpt2", n_layer=n_layer, n_head=n_head, d_model=d_model, vocab_size=vocab,
                       max_seq_len=seq, **kw)
