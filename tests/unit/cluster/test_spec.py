from __future__ import annotations

import pytest
import yaml

from clusterlm.cluster.spec import load_cluster, preset_names
from clusterlm.errors import ConfigError

from planhelp import toy_cluster


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads(name):
    cluster = load_cluster(name)
    assert cluster.num_gpus >= 1 and cluster.acc.memory_bytes > 0
    assert cluster.storage.read_gb_s > 0


def test_presets_cover_the_issue():
    assert {"dgx-a100-superpod", "dgx-h100", "tpu-v4-pod-slice", "local"} <= set(preset_names())


def test_dgx_a100_nic_bandwidth_per_gpu():
    cluster = load_cluster("dgx-a100-superpod")
    assert cluster.nic_bytes_per_s_per_gpu == pytest.approx(25e9)  # 8 × 200 Gb/s shared by 8 GPUs


def test_scaling_to_whole_nodes():
    cluster = load_cluster("dgx-h100", gpus=16384)
    assert (cluster.nodes, cluster.num_gpus) == (2048, 16384)
    assert load_cluster("dgx-h100", gpus=4).num_gpus == 4  # one partial node
    with pytest.raises(ConfigError, match="whole number of 8-accelerator nodes"):
        load_cluster("dgx-h100", gpus=12)
    with pytest.raises(ConfigError, match="partial node"):
        load_cluster("dgx-h100", gpus=3)


def _write(tmp_path, data) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_unknown_key_names_the_key(tmp_path):
    data = {"name": "x", "nodes": 1, "node": {"accelerator": "h100-sxm", "accelerators_per_nod": 8}}
    with pytest.raises(ConfigError, match="node.accelerators_per_nod"):
        load_cluster(_write(tmp_path, data))


def test_unknown_accelerator(tmp_path):
    data = {"name": "x", "nodes": 1, "node": {"accelerator": "h1000", "accelerators_per_node": 1}}
    with pytest.raises(ConfigError, match="unknown accelerator 'h1000'"):
        load_cluster(_write(tmp_path, data))


def test_multi_node_needs_a_network(tmp_path):
    data = {"name": "x", "nodes": 2, "node": {"accelerator": "h100-sxm", "accelerators_per_node": 1}}
    with pytest.raises(ConfigError, match="need a network"):
        load_cluster(_write(tmp_path, data))


def test_catalog_values_can_be_overridden(tmp_path):
    data = {"name": "x", "nodes": 1, "node": {"accelerator": {"name": "a100-80gb", "gemm_efficiency": 0.5},
                                               "accelerators_per_node": 8, "intra_node": "nvlink3"}}
    cluster = load_cluster(_write(tmp_path, data))
    assert cluster.acc.gemm_efficiency == 0.5 and cluster.acc.memory_gib == 80


def test_explicit_accelerator():
    cluster = toy_cluster()
    assert cluster.acc.peak_flops("bf16") == 100e12 and cluster.num_gpus == 8
    assert cluster.nic_bytes_per_s_per_gpu == pytest.approx(10e9)


def test_missing_file_is_config_error():
    with pytest.raises(ConfigError, match="not found"):
        load_cluster("does/not/exist.yaml")
