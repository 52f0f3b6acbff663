from __future__ import annotations

import json

import torch

from clusterlm.train.metrics import MetricsLogger, peak_memory_gib, read_metrics
from clusterlm.train.peak import PEAK_CACHE_FILE, device_peak_flops


def test_resume_truncates_records_after_the_checkpoint_and_old_summary(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False)
    for step in (2, 4, 6):
        log.log({"kind": "train", "step": step, "loss": 1.0 / step})
    log.log({"kind": "summary", "step": 6, "stop_reason": "interrupted"})
    log.close()
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"kind": "train", "step": 8, "lo')  # torn line from a kill -9
    resumed = MetricsLogger(tmp_path, tensorboard=False, resume_step=4)
    resumed.log({"kind": "train", "step": 6, "loss": float("nan")})
    resumed.close()
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["kind"], r["step"]) for r in records] == [("train", 2), ("train", 4), ("train", 6)]
    assert records[-1]["loss"] is None  # NaN written as JSON null, the file stays valid JSON lines
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line)


def test_fresh_run_starts_a_new_file(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    MetricsLogger(tmp_path, tensorboard=False).close()
    assert read_metrics(tmp_path / "metrics.jsonl") == []


def test_peak_flops_measured_once_then_cached_in_run_dir(tmp_path, monkeypatch):
    import clusterlm.train.peak as probe  # where the measurement is looked up

    calls = []
    monkeypatch.setattr(probe, "measure_matmul_flops", lambda *a, **k: calls.append(1) or 5e10)
    first = device_peak_flops(torch.device("cpu"), "fp32", cache_dir=tmp_path)
    second = device_peak_flops(torch.device("cpu"), "fp32", cache_dir=tmp_path)
    assert (first.flops, first.source) == (5e10, "measured")
    assert (second.flops, second.source) == (5e10, "cached") and len(calls) == 1
    assert (tmp_path / PEAK_CACHE_FILE).is_file()


def test_peak_memory_is_positive_on_cpu():
    assert 0 < peak_memory_gib(torch.device("cpu")) < 64
