"""Predicted vs published: the planner's accuracy targets (see docs/planner.md for the table)."""

from __future__ import annotations

import pytest

from clusterlm.cluster import validation


@pytest.fixture(scope="module")
def groups():
    return validation.all_rows()


def test_korthikanti_table5_iteration_time(groups):
    rows = groups["table5"]
    assert len(rows) == 8
    mae = validation.mean_abs_error(rows)
    assert mae <= 0.05, validation_report(rows)
    assert mae < 0.0365, "Calculon reports 3.65 % on the same table; we should beat it"
    assert max(abs(r.error) for r in rows) < 0.06


def test_narayanan_2021_throughput(groups):
    rows = groups["narayanan"]
    assert len(rows) == 7
    assert validation.mean_abs_error(rows) <= 0.05, validation_report(rows)
    assert max(abs(r.error) for r in rows) < 0.06


def test_korthikanti_fig1_memory(groups):
    rows = groups["fig1"]
    assert len(rows) == 12
    assert validation.mean_abs_error(rows) <= 0.10, validation_report(rows)


def test_data_parallel_scaling_trend(groups):
    # Throughput falls as d grows at fixed batch (fewer micro-batches per pipeline → bigger bubble).
    rows = groups["narayanan"]
    assert rows[0].predicted > rows[1].predicted > rows[2].predicted
    assert rows[3].predicted > rows[4].predicted > rows[5].predicted


def test_selective_recompute_speedup_matches_paper(groups):
    rows = groups["table5"]
    for full, seqsel in zip(rows[0::2], rows[1::2]):
        published = full.published / seqsel.published
        predicted = full.predicted / seqsel.predicted
        assert predicted == pytest.approx(published, rel=0.04)


def validation_report(rows) -> str:
    return "\n".join(f"{r.case}: {r.published} vs {r.predicted:.2f} ({r.error:+.1%})" for r in rows)
