"""Predicted vs published: the planner's accuracy targets (tables in docs/planner.md).

Calibration rows (Megatron-LM on A100) must stay within the issue's 5 % target. The held-out
rows are bounded by the figures docs/planner.md reports (the 10 % / 20 % targets are not met;
the docs name the modelling gap behind each large error), so any regression fails here.
"""

from __future__ import annotations

import json
import math
import shlex

import pytest

from clusterlm.cli.main import main
from clusterlm.cluster import validation

# docs/planner.md, "Held-out accuracy": mean 13.3 %, max 48.7 % (MPT-13b on 8 × H100).
HELD_OUT_MEAN_BOUND = 0.14
HELD_OUT_MAX_BOUND = 0.50
HELD_OUT_MEMORY_MEAN_BOUND = 0.15


@pytest.fixture(scope="module")
def rows():
    return validation.rows()


def test_published_runs_are_package_data_with_citations():
    runs = validation.load_runs()
    held = [r for r in runs if r.split == "held_out" and r.kind != "memory"]
    assert len(held) >= 10
    assert len({r.source.org for r in held}) >= 6 and len({r.source.year for r in held}) >= 3
    hardware = " ".join(r.source.hardware for r in held)
    assert all(part in hardware for part in ("A100", "H100", "B200", "TPU"))
    for run in runs:
        src = run.source
        assert src.citation and src.org and src.year and src.hardware and src.software, run.id
        assert run.published > 0 and run.request.cluster, run.id
    assert len({r.id for r in runs}) == len(runs)


def test_calibration_within_five_percent(rows):
    speed = validation.select("calibration", "speed")
    assert len(speed) == 15
    assert validation.mean_abs_error(speed) <= 0.05, _report(speed)
    memory = validation.select("calibration", "memory")
    assert len(memory) == 12 and validation.mean_abs_error(memory) <= 0.01  # Korthikanti's own formula


def test_held_out_stays_within_the_documented_figures(rows):
    speed = validation.select("held_out", "speed")
    assert validation.mean_abs_error(speed) <= HELD_OUT_MEAN_BOUND, _report(speed)
    assert validation.max_abs_error(speed) <= HELD_OUT_MAX_BOUND, _report(speed)
    memory = validation.select("held_out", "memory")
    assert validation.mean_abs_error(memory) <= HELD_OUT_MEMORY_MEAN_BOUND, _report(memory)


def test_every_row_is_reproduced_by_its_command(rows, capsys):
    for row in rows:
        argv = shlex.split(row.run.command)
        assert argv[:2] == ["clusterlm", "plan"]
        main(["plan", *argv[2:], "--json"])
        plan = json.loads(capsys.readouterr().out)
        assert validation.predicted_value(row.run.quantity, plan) == pytest.approx(row.predicted, rel=1e-9), row.run.id


def test_uncertainty_band_is_the_rms_of_held_out_errors(rows):
    speed = validation.select("held_out", "speed")
    expected = math.sqrt(sum(r.time_error**2 for r in speed) / len(speed))
    bands = validation.bands()
    assert bands["time"] == pytest.approx(expected)
    assert 0 < bands["memory"] < 1


def test_data_parallel_scaling_trend(rows):
    # Throughput falls as d grows at fixed batch (fewer micro-batches per pipeline → bigger bubble).
    by_id = {r.run.id: r.predicted for r in rows}
    assert by_id["n21-175b-384"] > by_id["n21-175b-768"] > by_id["n21-175b-1536"]
    assert by_id["n21-530b-560"] > by_id["n21-530b-1120"] > by_id["n21-530b-2240"]


def test_selective_recompute_speedup_matches_paper(rows):
    by_id = {r.run.id: r for r in rows}
    for size in ("22b", "175b", "530b", "1t"):
        full, sel = by_id[f"k22-{size}-full"], by_id[f"k22-{size}-sel"]
        assert full.predicted / sel.predicted == pytest.approx(full.published / sel.published, rel=0.04)


def _report(rows) -> str:
    return "\n".join(f"{r.run.id}: {r.published} vs {r.predicted:.2f} ({r.error:+.1%})" for r in rows)
