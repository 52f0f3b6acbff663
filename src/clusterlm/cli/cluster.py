"""Describe or measure a cluster's hardware.

  clusterlm cluster show SPEC [--gpus N] [--diagram topology.png]
      Tables per accelerator, per node and for the whole cluster (FLOP/s by precision, memory,
      bandwidths, power, storage, price) and a topology diagram (nodes, accelerators, NVLink
      domain, network, storage). SPEC is a preset (dgx-a100-superpod, dgx-h100,
      tpu-v4-pod-slice, …), a cluster YAML, or `local`: this machine, probed on first use and
      cached per machine; `--gpus N` on `local` means N CPU training processes on it.

  clusterlm cluster probe [--out spec.yaml] [--quick]
      Measure this machine — matmul FLOP/s (fp32, bf16) and a GEMM size/efficiency table,
      fused-attention FLOP/s, memory bandwidth and how fast element-wise kernels run against it,
      disk write/read, loopback all-reduce latency and bandwidth between 2 gloo processes, the
      training process's baseline memory — and write a cluster spec that `clusterlm plan
      --cluster` accepts (--out). Without --out, on the CPU, it also measures one thread and
      replaces the cached description `--cluster local` uses (probed on first use otherwise).
      Timings are medians: on a shared machine they describe it under the load of the moment
      (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="tables and a topology diagram of a cluster spec")
    show.add_argument("spec", metavar="SPEC", help="cluster preset name or YAML file")
    show.add_argument("--gpus", type=int, help="scale to N accelerators (whole nodes)")
    show.add_argument("--diagram", default=None,
                      help="topology PNG path (default: <preset>-topology.png in the current directory)")
    show.add_argument("--no-diagram", action="store_true", help="tables only")
    show.add_argument("--overwrite", action="store_true", help="replace an existing diagram file")
    show.add_argument("--json", action="store_true", help="print the resolved numbers as JSON")
    probe = sub.add_parser("probe", help="measure this machine and write a cluster spec")
    probe.add_argument("--out", help="write the spec YAML here")
    probe.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    probe.add_argument("--quick", action="store_true", help="shorter timings (≈ 3 s, noisier)")
    probe.add_argument("--disk-dir", default=".", help="directory for the disk bandwidth test (default .)")
    probe.add_argument("--no-disk", action="store_true", help="skip the disk test")
    probe.add_argument("--no-allreduce", action="store_true", help="skip the 2-process all-reduce test")
    probe.add_argument("--name", default="this machine (probed)", help="cluster name in the spec")
    probe.add_argument("--overwrite", action="store_true", help="replace an existing --out file")


def run(args: argparse.Namespace) -> int:
    return _show(args) if args.action == "show" else _probe(args)


def _show(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from rich.console import Console

    from clusterlm.api.cluster import show
    from clusterlm.cluster.report import cluster_tables, topology_diagram
    from clusterlm.errors import OutputExistsError

    cluster = show(args.spec, args.gpus)
    slug = Path(args.spec).stem if Path(args.spec).suffix else args.spec
    diagram = None if args.no_diagram or args.json else Path(args.diagram or f"{slug}-topology.png")
    if diagram is not None and diagram.exists() and not args.overwrite:
        raise OutputExistsError(f"{diagram} exists; pass --overwrite to replace it, --diagram PATH to write "
                                "elsewhere, or --no-diagram")
    if args.json:
        print(json.dumps({"name": cluster.name, "nodes": cluster.nodes, "gpus_per_node": cluster.gpus_per_node,
                          "num_gpus": cluster.num_gpus, "accelerator": asdict(cluster.acc),
                          "intra_node": asdict(cluster.intra) if cluster.intra else None,
                          "network": asdict(cluster.net), "nics_per_node": cluster.nics_per_node,
                          "storage": asdict(cluster.storage), "node_power_w": cluster.node_power_w,
                          "pue": cluster.pue, "price_per_gpu_hour": cluster.price_per_gpu_hour}, indent=2))
        return 0
    console = Console()
    for table in cluster_tables(cluster):
        console.print(table)
    if diagram is not None:
        console.print(f"topology diagram: {topology_diagram(cluster, diagram)}")
    return 0


def _probe(args: argparse.Namespace) -> int:
    from clusterlm.api.cluster import probe

    probed = probe(args.device, quick=args.quick, disk_dir=None if args.no_disk else args.disk_dir,
                   allreduce=not args.no_allreduce, name=args.name, out=args.out, overwrite=args.overwrite)
    res = probed.result
    lines = [
        f"device            {res.device_name} ({res.threads} threads)",
        f"matmul fp32       {res.matmul_flops['fp32'] / 1e9:,.1f} GFLOP/s",
        f"matmul bf16       {res.matmul_flops['bf16'] / 1e9:,.1f} GFLOP/s",
        "GEMM table        " + ", ".join(f"{g:.3g} GFLOP: {f / 1e9:,.1f}" for g, f in res.gemm_table),
        f"attention (SDPA)  {(res.attention_flops or 0) / 1e9:,.1f} GFLOP/s executed",
        f"memory bandwidth  {res.memory_bandwidth / 1e9:,.1f} GB/s (copy); element-wise kernels at "
        f"{res.elementwise_efficiency:.0%} of it",
        f"kernel overhead   {res.kernel_overhead_s * 1e6:,.1f} µs per op",
    ]
    if res.disk_write:
        lines.append(f"disk              write {res.disk_write / 1e9:,.2f} GB/s, read {res.disk_read / 1e9:,.2f} GB/s "
                     f"({res.disk_dir})")
    if res.allreduce_bus_bandwidth:
        lines.append(f"all-reduce (2×gloo) latency {res.allreduce_latency_s * 1e6:,.0f} µs, "
                     f"bus bandwidth {res.allreduce_bus_bandwidth / 1e9:,.2f} GB/s")
    if res.runtime_overhead_gib is not None:
        lines.append(f"process baseline  {res.runtime_overhead_gib:,.2f} GiB resident")
    lines.append(f"probe took        {res.seconds:,.1f} s")
    if res.load_average is not None and res.load_average > 0.5 * res.cpu_cores:
        lines.append(f"note: load average {res.load_average:.1f} on {res.cpu_cores} cores — other processes "
                     "share this machine; the numbers describe it under that load")
    print("\n".join(lines))
    if probed.written:
        print(f"wrote {probed.written}")
    if probed.cached:
        print(f"updated the cached description `--cluster local` uses: {probed.cached}")
    return 0
