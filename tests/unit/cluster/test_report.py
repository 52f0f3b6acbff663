from __future__ import annotations

from rich.console import Console

from clusterlm.cluster import report, validation
from clusterlm.cluster.estimator import Execution, Workload, estimate
from clusterlm.cluster.spec import load_cluster

from planhelp import gpt, toy_cluster


def _render(renderable) -> str:
    console = Console(record=True, width=200)
    console.print(renderable)
    return console.export_text()


def test_cluster_tables_show_aggregates():
    text = _render(report.cluster_tables(load_cluster("dgx-a100-superpod"))[0])
    assert "peak bf16" in text and "312.0 TFLOP/s" in text and "349.4 PFLOP/s" in text  # 1,120 × 312
    assert "nvlink3" in text and "InfiniBand HDR" in text


def test_plan_tables_and_chart(tmp_path):
    est = estimate(Workload(gpt(), seq_len=128, global_batch=16, steps=10), toy_cluster(2, 4),
                   Execution(dp=8, micro_batch=2))
    text = "\n".join(_render(t) for t in report.plan_tables(est))
    assert "optimizer" in text and "MFU" in text and "fits" in text
    path = report.plan_chart([est, est], tmp_path / "plan.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_topology_diagram(tmp_path):
    path = report.topology_diagram(load_cluster("dgx-h100"), tmp_path / "topo.png")
    assert path.stat().st_size > 10_000


def test_validation_markdown_lists_every_row():
    rows = validation.rows()
    md = report.validation_markdown(list(rows))
    sources = {r.run.source.key for r in rows}
    assert md.count("\n| ") == len(rows) + len(sources)  # one header row per source table
    assert md.index("(held-out)") < md.index("(calibration)")  # held-out first


def test_validation_report_prints_every_command():
    console = Console(record=True, width=400)
    report.validation_report(console, list(validation.rows()))
    text = console.export_text()
    assert text.splitlines()[0].startswith("held-out speed")
    assert all(r.run.command in text for r in validation.rows())
