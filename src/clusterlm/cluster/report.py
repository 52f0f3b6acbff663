"""Presentation: rich tables for clusters and plans, matplotlib charts and a topology diagram.

Nothing here computes a prediction; it formats `Cluster`, `Estimate` and validation rows.
matplotlib is imported inside the functions that draw (Agg backend, files only).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

from rich.table import Table

from clusterlm.cluster.estimator import Estimate
from clusterlm.cluster.totals import run_totals
from clusterlm.cluster.spec import Cluster
from clusterlm.cluster.validation import Row, Source, max_abs_error, mean_abs_error, summary
from clusterlm.fsio import atomic_write_bytes

GIB = 2**30
MEMORY_PARTS = ("weights", "grads", "optimizer", "activations", "embedding_logits", "temporary", "runtime")
TIME_PARTS = ("compute", "recompute", "tp_comm", "cp_comm", "pp_p2p", "pp_bubble", "dp_comm", "optimizer")


def _fmt_flops(flops: float) -> str:
    for unit, scale in (("EFLOP/s", 1e18), ("PFLOP/s", 1e15), ("TFLOP/s", 1e12), ("GFLOP/s", 1e9)):
        if flops >= scale:
            return f"{flops / scale:,.1f} {unit}"
    return f"{flops:,.0f} FLOP/s"


def _fmt_bytes_s(bps: float) -> str:
    for unit, scale in (("TB/s", 1e12), ("GB/s", 1e9), ("MB/s", 1e6)):
        if bps >= scale:
            return f"{bps / scale:,.1f} {unit}"
    return f"{bps:,.0f} B/s"


def cluster_tables(cluster: Cluster) -> list[Table]:
    """Per-node and aggregate figures of a cluster."""
    acc, n = cluster.acc, cluster.gpus_per_node
    nodes = cluster.nodes
    head = Table(title=f"{cluster.name}: {nodes} node(s) × {n} × {acc.display}", show_header=True)
    head.add_column("")
    head.add_column("per accelerator", justify="right")
    head.add_column("per node", justify="right")
    head.add_column(f"cluster ({cluster.num_gpus})", justify="right")
    for dtype in ("fp32", "tf32", "bf16", "fp16", "fp8"):
        if dtype in acc.peak_tflops:
            f = acc.peak_tflops[dtype] * 1e12
            head.add_row(f"peak {dtype} (dense)", _fmt_flops(f), _fmt_flops(f * n), _fmt_flops(f * n * nodes))
    mem = acc.memory_gib
    head.add_row("accelerator memory", f"{mem:,.0f} GiB", f"{mem * n:,.0f} GiB", f"{mem * n * nodes / 1024:,.1f} TiB")
    hbm = acc.memory_bandwidth_gb_s * 1e9
    head.add_row("memory bandwidth", _fmt_bytes_s(hbm), _fmt_bytes_s(hbm * n), _fmt_bytes_s(hbm * n * nodes))
    if cluster.intra is not None:
        bw = cluster.intra.bandwidth_gb_s * 1e9
        head.add_row(f"intra-node: {cluster.intra.name} (per direction)", _fmt_bytes_s(bw), _fmt_bytes_s(bw * n), "")
    if nodes > 1:
        nic = cluster.nic_bytes_per_s_per_gpu
        head.add_row(f"network: {cluster.net.display}", _fmt_bytes_s(nic), _fmt_bytes_s(nic * n),
                     f"{cluster.topology}, bisection {_fmt_bytes_s(nic * n * nodes / 2)}")
    spec = cluster.spec.node
    if spec.host_memory_gib:
        head.add_row("host memory", "", f"{spec.host_memory_gib:,.0f} GiB", f"{spec.host_memory_gib * nodes / 1024:,.1f} TiB")
    if spec.cpu or spec.cpu_cores:
        head.add_row("CPU", "", f"{spec.cpu or ''} ({spec.cpu_cores or '?'} cores)", "")
    head.add_row("power", f"{acc.tdp_w:,.0f} W TDP", f"{cluster.node_power_w / 1e3:,.1f} kW",
                 f"{cluster.node_power_w * nodes / 1e6:,.2f} MW × PUE {cluster.pue}")
    st = cluster.storage
    head.add_row(f"storage: {st.display}", "", "",
                 f"read {_fmt_bytes_s(st.read_gb_s * 1e9)}, write {_fmt_bytes_s(st.write_gb_s * 1e9)}"
                 + (f", {st.capacity_tb:,.0f} TB" if st.capacity_tb else ""))
    if cluster.price_per_gpu_hour is not None:
        head.add_row("price", f"{cluster.price_per_gpu_hour:.2f} {cluster.currency}/h", "",
                     f"{cluster.price_per_gpu_hour * cluster.num_gpus:,.0f} {cluster.currency}/h")
    return [head]


def _pm(band: float | None) -> str:
    return f" ± {band:.0%}" if band else ""


def plan_tables(est: Estimate, bands: dict[str, float] | None = None) -> list[Table]:
    """Memory, time and run-total tables for one plan (± the held-out uncertainty when given)."""
    time_pm = _pm((bands or {}).get("time"))
    mem = est.memory.gib()
    t_mem = Table(title=f"memory per accelerator ({est.memory.stage} pipeline stage)")
    t_mem.add_column("part")
    t_mem.add_column("GiB", justify="right")
    for part in MEMORY_PARTS:
        t_mem.add_row(part.replace("_", " "), f"{mem[part]:,.2f}")
    verdict = "fits" if est.fits else "DOES NOT FIT"
    t_mem.add_row("total", f"{mem['total']:,.2f}{_pm((bands or {}).get('memory'))} of {mem['capacity']:,.0f} "
                  f"({verdict})", style="bold")
    times = est.time.as_dict()
    t_time = Table(title=f"step time ({est.micro_batches} micro-batches per pipeline, "
                         f"{est.global_batch} sequences per step)")
    t_time.add_column("part")
    t_time.add_column("seconds", justify="right")
    t_time.add_column("share", justify="right")
    for part in TIME_PARTS:
        t_time.add_row(part.replace("_", " "), f"{times[part]:.4g}", f"{times[part] / times['total']:.1%}")
    t_time.add_row("total", f"{times['total']:.4g}{time_pm}", "100%", style="bold")
    totals = run_totals(est)
    t_run = Table(title="throughput and run totals" + (f" (±1σ = ±{bands['time']:.0%}: RMS error on held-out "
                                                       "published runs)" if bands else ""))
    t_run.add_column("")
    t_run.add_column("value", justify="right")
    t_run.add_row("tokens/s", f"{est.tokens_per_s:,.0f}{time_pm}")
    t_run.add_row("model TFLOP/s per GPU", f"{est.model_tflops_per_gpu:,.1f}{time_pm}")
    t_run.add_row("hardware TFLOP/s per GPU", f"{est.hardware_tflops_per_gpu:,.1f}{time_pm}")
    t_run.add_row("MFU", f"{est.mfu:.1%}" + (f" (± {bands['time']:.0%} of it)" if bands else ""))
    if totals.steps is not None:
        ramp = f" ({totals.rampup_steps:,.0f} in the batch ramp-up)" if totals.rampup_steps else ""
        t_run.add_row("steps", f"{totals.steps:,.0f}{ramp}")
        t_run.add_row("wall clock", f"{totals.days:,.2f} days{time_pm}")
        t_run.add_row("GPU-hours", f"{totals.gpu_hours:,.0f}{time_pm}")
        t_run.add_row("energy (incl. PUE)", f"{totals.energy_kwh:,.0f} kWh{time_pm}")
        if totals.cost is not None:
            t_run.add_row("cost", f"{totals.cost:,.0f} {est.cluster.currency}{time_pm}")
    t_run.add_row("checkpoint (weights + optimizer)", f"{totals.checkpoint_gb:,.1f} GB")
    t_run.add_row("checkpoint write / restore", f"{totals.checkpoint_write_s:,.1f} s / {totals.checkpoint_restore_s:,.1f} s")
    t_run.add_row("data read needed / storage read",
                  f"{totals.data_read_gb_s * 1e3:,.2f} MB/s / {totals.storage_read_gb_s:,.0f} GB/s")
    return [t_mem, t_time, t_run]


def search_table(ranked: list[Estimate], title: str) -> Table:
    table = Table(title=title)
    for col in ("#", "t", "p", "d", "b", "v", "recompute", "ZeRO", "step s", "tokens/s", "MFU", "mem GiB"):
        table.add_column(col, justify="right" if col not in ("recompute",) else "left")
    for i, est in enumerate(ranked, 1):
        e = est.execution
        table.add_row(str(i), str(e.tp), str(e.pp), str(e.dp), str(e.micro_batch), str(e.interleave), e.recompute,
                      str(e.zero), f"{est.step_time_s:.3g}", f"{est.tokens_per_s:,.0f}", f"{est.mfu:.1%}",
                      f"{est.memory.total / GIB:,.1f}")
    return table


def not_executable_table(pairs: list[tuple[Estimate, str]], title: str) -> Table:
    """Layouts that fit but that clusterlm's trainer cannot run, with the reason."""
    table = Table(title=title)
    for col in ("layout", "step s", "tokens/s", "mem GiB", "why not"):
        table.add_column(col, justify="left" if col in ("layout", "why not") else "right")
    for est, reason in pairs:
        table.add_row(est.execution.describe(), f"{est.step_time_s:.3g}", f"{est.tokens_per_s:,.0f}",
                      f"{est.memory.total / GIB:,.1f}", reason)
    return table


def _fits(row: Row) -> str:
    """Whether the run's layout is predicted to fit (meaningful for runs that ran, not memory rows)."""
    return "—" if row.run.kind == "memory" else ("yes" if row.fits else "no")


def _stats(rows: list[Row]) -> str:
    """'speed: mean |error| x, max y; memory: …' over the kinds present."""
    parts = []
    for kind, kinds in (("speed", ("time", "rate")), ("memory", ("memory",))):
        part = [r for r in rows if r.run.kind in kinds]
        if part:
            parts.append(f"{kind} mean |error| {mean_abs_error(part):.1%}, max {max_abs_error(part):.1%}")
    return "; ".join(parts)


def validation_table(rows: list[Row], title: str) -> Table:
    table = Table(title=f"{title} — {_stats(rows)}")
    for col in ("case", "quantity", "published", "predicted", "error", "fits"):
        table.add_column(col, justify="left" if col in ("case", "quantity") else "right")
    for r in rows:
        table.add_row(r.case, r.quantity, f"{r.published:,.2f}", f"{r.predicted:,.2f}", f"{r.error:+.1%}",
                      _fits(r))
    return table


def _by_source(rows: list[Row]) -> Iterator[tuple[str, Source, list[Row]]]:
    """(split, source, that source's rows) for each source in `rows`, held-out first, in row order."""
    for split in ("held_out", "calibration"):
        groups: dict[str, list[Row]] = {}
        for r in rows:
            if r.run.split == split:
                groups.setdefault(r.run.source.key, []).append(r)
        for part in groups.values():
            yield split, part[0].run.source, part


def validation_report(console, rows: list[Row]) -> None:
    """`plan --validate`: the held-out summary first, per-source tables, every row's command."""
    for key, s in summary().items():
        split, kind = key.split("/")
        fit = f", predicted to fit {s['fit']:.0%}" if "fit" in s else ""
        console.print(f"[bold]{split.replace('_', '-')} {kind}[/bold]: {s['n']} rows, mean |error| "
                      f"{s['mean_abs_error']:.1%}, max {s['max_abs_error']:.1%}{fit}")
    for split, src, part in _by_source(rows):
        console.print(validation_table(part, f"{src.org} {src.year} ({split.replace('_', '-')}): {src.software}"))
    console.print("[bold]commands[/bold] (each reproduces its row; add --json for every figure):")
    for r in rows:
        console.print(f"{r.run.id}: {r.run.command}", soft_wrap=True, highlight=False, markup=False)


def validation_markdown(rows: list[Row]) -> str:
    """The docs tables: one per source, held-out first, with each row's command."""
    out = []
    for split, src, part in _by_source(rows):
        out += [f"**{src.citation}** ({split.replace('_', '-')}) — {_stats(part)}", "",
                "| case | quantity | published | predicted | error | fits |", "|---|---|---:|---:|---:|---|"]
        out += [f"| {r.case} | {r.quantity} | {r.published:,.2f} | {r.predicted:,.2f} | {r.error:+.1%} | "
                f"{_fits(r)} |" for r in part]
        out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------------ drawings
def _save(fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt  # matplotlib is imported only to draw (≈ 0.5 s)

    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def plan_chart(estimates: list[Estimate], path: str | Path, bands: dict[str, float] | None = None) -> Path:
    """Stacked bars: memory breakdown (GiB, with capacity) and step-time breakdown per layout,
    with ±1σ error bars on the totals when `bands` (held-out uncertainty) is given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib is imported only to draw (≈ 0.5 s)

    labels = [e.execution.describe().replace(" recompute=", "\nrec=").replace(" zero=", " z=") for e in estimates]
    fig, (ax_m, ax_t) = plt.subplots(1, 2, figsize=(max(8, 2.2 * len(estimates) + 4), 4.8))
    colors = plt.get_cmap("tab10").colors
    for ax, parts, getter, unit in (
        (ax_m, MEMORY_PARTS, lambda e: e.memory.gib(), "GiB per accelerator"),
        (ax_t, TIME_PARTS, lambda e: e.time.as_dict(), "seconds per step"),
    ):
        bottoms = [0.0] * len(estimates)
        for i, part in enumerate(parts):
            values = [getter(e)[part] for e in estimates]
            ax.bar(range(len(estimates)), values, bottom=bottoms, label=part.replace("_", " "), color=colors[i % 10])
            bottoms = [b + v for b, v in zip(bottoms, values)]
        if bands:
            band = bands["memory" if ax is ax_m else "time"]
            ax.errorbar(range(len(estimates)), bottoms, yerr=[b * band for b in bottoms], fmt="none",
                        ecolor="black", capsize=4, label="±1σ (held-out)")
        ax.set_xticks(range(len(estimates)), labels, fontsize=7)
        ax.set_ylabel(unit)
        ax.legend(fontsize=7)
    cap = estimates[0].memory.capacity / GIB
    ax_m.axhline(cap, color="black", linestyle="--", linewidth=1)
    ax_m.set_title(f"memory (capacity {cap:,.0f} GiB)")
    ax_t.set_title("step time")
    fig.suptitle(f"{estimates[0].workload.model.preset or 'model'} on {estimates[0].cluster.name}")
    return _save(fig, path)


def topology_diagram(cluster: Cluster, path: str | Path, max_nodes_drawn: int = 4) -> Path:
    """Nodes with their accelerators and NVLink domain, the network, and storage."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib is imported only to draw (≈ 0.5 s)
    from matplotlib.patches import FancyBboxPatch, Rectangle

    nodes, gpn = cluster.nodes, cluster.gpus_per_node
    drawn = list(range(min(nodes, max_nodes_drawn)))
    if nodes > max_nodes_drawn:
        drawn[-1] = nodes - 1  # first few … last
    per_row = min(gpn, 8)
    rows = (gpn + per_row - 1) // per_row
    node_w, node_h = 1.0 + per_row * 0.55, 1.3 + rows * 0.55
    gap = 0.6
    width = len(drawn) * (node_w + gap) + (gap if nodes > max_nodes_drawn else 0)
    fig, ax = plt.subplots(figsize=(max(7, width * 0.9), 5.2))
    net_y, storage_y = node_h + 1.4, node_h + 3.0
    x = 0.0
    centers = []
    for k, node in enumerate(drawn):
        if nodes > max_nodes_drawn and k == len(drawn) - 1:
            ax.text(x + gap / 2 - 0.3, node_h / 2, "…", fontsize=22, ha="center", va="center")
            x += gap
        ax.add_patch(FancyBboxPatch((x, 0), node_w, node_h, boxstyle="round,pad=0.05", fc="#eef3fb", ec="#2b5797"))
        ax.text(x + node_w / 2, node_h - 0.25, f"node {node}", ha="center", fontsize=9, weight="bold")
        for g in range(gpn):
            r, c = divmod(g, per_row)
            gx, gy = x + 0.5 + c * 0.55, 0.35 + r * 0.55
            ax.add_patch(Rectangle((gx, gy), 0.45, 0.4, fc="#76b900" if cluster.acc.kind == "gpu" else "#f4a261",
                                   ec="black", lw=0.6))
        if cluster.intra is not None and gpn > 1:
            ax.add_patch(Rectangle((x + 0.4, node_h - 0.62), node_w - 0.8, 0.18, fc="#2b5797", ec="none"))
            ax.text(x + node_w / 2, node_h - 0.53, cluster.intra.name, color="white", ha="center", va="center",
                    fontsize=7)
        centers.append(x + node_w / 2)
        x += node_w + gap
    if nodes > 1:
        ax.add_patch(FancyBboxPatch((0, net_y - 0.25), x - gap, 0.5, boxstyle="round,pad=0.05", fc="#fde2e4", ec="#9d0208"))
        nic = cluster.nic_bytes_per_s_per_gpu * gpn
        ax.text((x - gap) / 2, net_y, f"{cluster.net.display} — {cluster.topology}, "
                f"{cluster.nics_per_node} NIC(s)/node, {_fmt_bytes_s(nic)} per node", ha="center", va="center",
                fontsize=8)
        for cx in centers:
            ax.plot([cx, cx], [node_h + 0.05, net_y - 0.3], color="#9d0208", lw=1.2)
    top = net_y if nodes > 1 else node_h
    ax.add_patch(FancyBboxPatch(((x - gap) / 2 - 2.2, storage_y - 0.3), 4.4, 0.6, boxstyle="round,pad=0.05",
                                fc="#fff3b0", ec="#8d6e00"))
    st = cluster.storage
    ax.text((x - gap) / 2, storage_y, f"storage: {st.display}\nread {st.read_gb_s:,.0f} GB/s, write "
            f"{st.write_gb_s:,.0f} GB/s", ha="center", va="center", fontsize=8)
    ax.plot([(x - gap) / 2, (x - gap) / 2], [top + 0.3, storage_y - 0.35], color="#8d6e00", lw=1.2)
    ax.set_xlim(-0.3, x)
    ax.set_ylim(-0.3, storage_y + 0.7)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"{cluster.name}: {nodes} × {gpn} × {cluster.acc.display}", fontsize=10)
    return _save(fig, path)
