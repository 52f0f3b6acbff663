"""`--cluster local`: probed on first use, cached per machine, N CPU ranks sharing its cores."""

from __future__ import annotations

import json

import pytest
import yaml

from clusterlm.cli.main import main
from clusterlm.cluster import local
from clusterlm.cluster.spec import load_cluster, preset_names


def probe_dict(threads: int, fp32: float, cores: int = 2) -> dict:
    return {"device": "cpu", "device_name": "Test CPU", "threads": threads, "matmul_flops": {"fp32": fp32, "bf16": fp32},
            "gemm_table": [[0.001, fp32 / 4], [2.0, fp32]], "attention_flops": fp32 / 2, "memory_bandwidth": 20e9,
            "kernel_overhead_s": 4e-6, "allreduce_latency_s": 1e-4, "allreduce_bus_bandwidth": 2e9,
            "runtime_overhead_gib": 0.3, "host_memory_gib": 16.0, "cpu_model": "Test CPU", "cpu_cores": cores}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache dir; `measured` counts the (fake) probes."""
    monkeypatch.setenv(local.CACHE_ENV, str(tmp_path / "cache"))
    calls = []

    def fake_measure(**_):
        calls.append(1)
        return {"all_threads": probe_dict(2, 80e9), "one_thread": probe_dict(1, 50e9)}

    monkeypatch.setattr(local, "measure", fake_measure)
    return calls


def test_first_use_probes_then_the_cache_answers(cache):
    assert local.LOCAL in preset_names()
    one = load_cluster("local")
    assert len(cache) == 1
    assert one.num_gpus == 1 and one.acc.peak_flops("fp32") == pytest.approx(80e9) and one.acc.kind == "cpu"
    load_cluster("local", 4)
    assert len(cache) == 1  # cached: no second probe
    stored = json.loads(local.cache_path().read_text())
    assert stored["machine"] == local.machine() and stored["machine"]["cpus"] >= 1


def test_another_machine_gets_its_own_probe(cache, monkeypatch):
    load_cluster("local")
    first = local.cache_path()
    monkeypatch.setattr(local, "machine", lambda: {"cpu_model": "Other CPU", "cpu_flags_sha256": "0", "cpus": 64})
    assert local.cache_path() != first
    load_cluster("local")
    assert len(cache) == 2


def test_ranks_share_the_cores(cache):
    two, four = load_cluster("local", 2), load_cluster("local", 4)
    # Up to one rank per core each computes at the one-thread rate; beyond, a time slice of C/N cores.
    assert two.acc.peak_flops("fp32") == pytest.approx(min(50e9, 80e9 / 2))
    assert four.acc.peak_flops("fp32") == pytest.approx(80e9 / 4)
    assert (four.nodes, four.gpus_per_node) == (1, 4) and four.acc.memory_gib == pytest.approx(16.0 / 4)
    assert four.acc.kernel_overhead_us == pytest.approx(2 * two.acc.kernel_overhead_us)  # oversubscribed 2×
    assert four.intra.bandwidth_gb_s == pytest.approx(two.intra.bandwidth_gb_s / 2)


def test_plan_on_local_ranks_and_probe_refresh(cache, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run.yaml"
    run.write_text(yaml.safe_dump({"model": {"style": "llama", "n_layer": 4, "n_head": 4, "n_kv_head": 2, "d_model": 64,
                                             "vocab_size": 512, "max_seq_len": 64, "tie_embeddings": False},
                                   "train": {"seq_len": 32, "micro_batch": 2, "precision": "fp32"}}))
    assert main(["plan", "--model", str(run), "--cluster", "local", "--gpus", "4", "--search", "--json",
                 "--chart", str(tmp_path / "s.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gpus"] == 4 and out["search"]["ranked"] and out["executable"]
    # `cluster probe` without --out measures again and replaces the cached file; --out writes a spec.
    assert main(["cluster", "probe"]) == 0
    assert len(cache) == 2 and "--cluster local" in capsys.readouterr().out
    from clusterlm.cluster import probe as probe_module
    from clusterlm.cluster.measured import ProbeResult

    monkeypatch.setattr(probe_module, "probe", lambda *a, **k: ProbeResult(**probe_dict(2, 70e9)))
    spec = tmp_path / "spec.yaml"
    assert main(["cluster", "probe", "--out", str(spec)]) == 0
    assert len(cache) == 2 and yaml.safe_load(spec.read_text())["node"]["accelerator"]["peak_tflops"]["fp32"] == 0.07
