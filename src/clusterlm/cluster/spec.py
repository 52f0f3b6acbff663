"""Cluster spec: a YAML description of nodes, accelerators, links, network, storage, power and price.

`load_cluster(name_or_path)` reads a preset (`configs/clusters/<name>.yaml`) or any YAML file,
validates it (unknown keys and impossible values are one-line `ConfigError`s naming the key),
resolves catalog names into numbers and returns a `Cluster` — the plain-number view the
estimator works with. Any catalog number can be overridden in the file, and a probed machine
(`clusterlm cluster probe`) writes an explicit accelerator block instead of a catalog name.

```yaml
name: DGX A100 SuperPOD
nodes: 140
node:
  accelerator: a100-80gb          # catalog name, or a mapping with explicit numbers
  accelerators_per_node: 8
  intra_node: nvlink3             # catalog link, or {bandwidth_gb_s, latency_us, efficiency}
  cpu: 2x AMD EPYC 7742
  cpu_cores: 128
  host_memory_gib: 2048
  power_w: 6500                   # whole node at full load (accelerators, CPUs, NICs, fans)
network: {type: ib-hdr, nics_per_node: 8, topology: fat-tree}
storage: {type: ddn-a3i}
pue: 1.1
price_per_gpu_hour: 2.0
```
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from clusterlm.cluster import catalog, local
from clusterlm.config.base import Section, load_yaml, validate
from clusterlm.errors import ConfigError

Topology = Literal["fat-tree", "rail-optimized", "torus", "dragonfly", "single-node"]


class AcceleratorSpec(Section):
    """An accelerator: a catalog `name` plus any overrides, or a fully explicit part."""

    name: str
    display: str | None = None
    kind: Literal["gpu", "tpu", "cpu"] | None = None
    peak_tflops: dict[str, float] | None = None
    memory_gib: float | None = Field(default=None, gt=0)
    memory_bandwidth_gb_s: float | None = Field(default=None, gt=0)
    tdp_w: float | None = Field(default=None, ge=0)
    gemm_efficiency: float | None = Field(default=None, gt=0, le=1)
    memory_efficiency: float | None = Field(default=None, gt=0, le=1)
    attention_efficiency: float | None = Field(default=None, gt=0, le=1)
    attention_efficiency_fa3: float | None = Field(default=None, gt=0, le=1)
    gemm_efficiency_fp8: float | None = Field(default=None, gt=0, le=1)
    kernel_overhead_us: float | None = Field(default=None, ge=0)
    gemm_table: list[tuple[float, float]] | None = None
    runtime_overhead_gib: float | None = Field(default=None, ge=0)
    source: str | None = None

    @model_validator(mode="after")
    def _check(self) -> AcceleratorSpec:
        for dtype, tf in (self.peak_tflops or {}).items():
            if dtype not in catalog.DTYPES:
                raise ValueError(f"peak_tflops: unknown precision '{dtype}' (use {', '.join(catalog.DTYPES)})")
            if tf <= 0:
                raise ValueError(f"peak_tflops.{dtype} must be positive, got {tf}")
        for gflop, eff in self.gemm_table or []:
            if gflop <= 0 or not 0 < eff <= 1.5:
                raise ValueError(f"gemm_table entries are [GFLOP > 0, efficiency in (0, 1.5]], got [{gflop}, {eff}]")
        return self

    def resolve(self) -> catalog.Accelerator:
        overrides = self.model_dump(exclude={"name"}, exclude_none=True)
        if "gemm_table" in overrides:
            overrides["gemm_table"] = tuple(sorted((float(g), float(e)) for g, e in overrides["gemm_table"]))
        if self.name.lower() in catalog.ACCELERATORS:
            return catalog.with_overrides(catalog.accelerator(self.name), **overrides)
        missing = [k for k in ("peak_tflops", "memory_gib", "memory_bandwidth_gb_s") if k not in overrides]
        if missing:
            catalog.accelerator(self.name)  # raises "unknown accelerator ... did you mean"
        return catalog.Accelerator(
            name=self.name,
            display=self.display or self.name,
            kind=self.kind or "gpu",
            peak_tflops=dict(self.peak_tflops or {}),
            memory_gib=float(self.memory_gib or 0),
            memory_bandwidth_gb_s=float(self.memory_bandwidth_gb_s or 0),
            tdp_w=float(self.tdp_w or 0),
            **{k: v for k, v in overrides.items()
               if k not in ("display", "kind", "peak_tflops", "memory_gib", "memory_bandwidth_gb_s", "tdp_w")},
        )


class LinkSpec(Section):
    type: str | None = None  # catalog link name
    bandwidth_gb_s: float | None = Field(default=None, gt=0)  # per accelerator, per direction
    latency_us: float | None = Field(default=None, ge=0)
    efficiency: float | None = Field(default=None, gt=0, le=1)

    def resolve(self) -> catalog.Link:
        if self.type is not None:
            base = catalog.link(self.type)
        elif self.bandwidth_gb_s is None:
            raise ConfigError("node.intra_node needs a catalog 'type' or an explicit 'bandwidth_gb_s'")
        else:
            base = catalog.Link("custom", "custom link", self.bandwidth_gb_s, 5.0, 0.7)
        return replace(base, **self.model_dump(exclude={"type"}, exclude_none=True))


class NodeSpec(Section):
    accelerator: str | AcceleratorSpec
    accelerators_per_node: int = Field(ge=1, le=1024)
    intra_node: str | LinkSpec | None = None  # None: no intra-node link (one accelerator per node)
    cpu: str | None = None
    cpu_cores: int | None = Field(default=None, ge=1)
    host_memory_gib: float | None = Field(default=None, gt=0)
    power_w: float | None = Field(default=None, gt=0)  # None: accelerators' TDP × 1.5 (host, NICs, fans)


class NetworkSpec(Section):
    type: str = "none"  # catalog network name
    nics_per_node: int = Field(default=1, ge=0)
    port_gbit_s: float | None = Field(default=None, gt=0)
    latency_us: float | None = Field(default=None, ge=0)
    efficiency: float | None = Field(default=None, gt=0, le=1)
    topology: Topology = "fat-tree"
    oversubscription: float = Field(default=1.0, ge=1.0)  # 2.0 = half bisection bandwidth


class StorageSpec(Section):
    type: str | None = None
    read_gb_s: float | None = Field(default=None, gt=0)
    write_gb_s: float | None = Field(default=None, gt=0)
    capacity_tb: float | None = Field(default=None, gt=0)

    def resolve(self) -> catalog.Storage:
        if self.type is not None:
            base = catalog.storage(self.type)
        elif self.read_gb_s is None or self.write_gb_s is None:
            raise ConfigError("storage needs a catalog 'type' or explicit 'read_gb_s' and 'write_gb_s'")
        else:
            base = catalog.Storage("custom", "custom storage", self.read_gb_s, self.write_gb_s, 0.0)
        return replace(base, **self.model_dump(exclude={"type"}, exclude_none=True))


class ClusterSpec(Section):
    name: str
    description: str | None = None
    nodes: int = Field(ge=1)
    node: NodeSpec
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    storage: StorageSpec = Field(default_factory=lambda: StorageSpec(type="local-nvme"))
    pue: float = Field(default=1.2, ge=1.0, le=3.0)  # data-centre power usage effectiveness
    price_per_gpu_hour: float | None = Field(default=None, ge=0)
    currency: str = "USD"
    # Where the numbers came from (`cluster probe` records its measurements here).
    measured: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> ClusterSpec:
        if self.nodes > 1 and self.network.type == "none":
            raise ValueError(f"{self.nodes} nodes need a network (network.type is 'none')")
        if self.nodes > 1 and self.network.nics_per_node < 1:
            raise ValueError("network.nics_per_node must be ≥ 1 for a multi-node cluster")
        if self.node.accelerators_per_node > 1 and self.node.intra_node is None:
            raise ValueError("node.intra_node is required when a node has more than one accelerator")
        return self


@dataclass(frozen=True)
class Cluster:
    """Resolved cluster: plain numbers for the estimator."""

    name: str
    nodes: int
    gpus_per_node: int
    acc: catalog.Accelerator
    intra: catalog.Link | None
    net: catalog.Network
    nics_per_node: int
    topology: str
    oversubscription: float
    storage: catalog.Storage
    node_power_w: float
    pue: float
    price_per_gpu_hour: float | None
    currency: str
    spec: ClusterSpec

    @property
    def num_gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def nic_bytes_per_s_per_gpu(self) -> float:
        """Line rate of the node's NICs shared by its accelerators (bytes/s, per direction)."""
        if self.nodes == 1 or self.nics_per_node == 0:
            return 0.0
        return self.nics_per_node * self.net.port_gbit_s / 8 * 1e9 / self.gpus_per_node / self.oversubscription

    def scaled(self, gpus: int) -> Cluster:
        """The same cluster with `gpus` accelerators (whole nodes; one partial node if fewer than a node)."""
        if gpus < 1:
            raise ConfigError(f"--gpus must be ≥ 1, got {gpus}")
        gpn = self.gpus_per_node
        if gpus < gpn:
            if gpn % gpus:
                raise ConfigError(f"--gpus {gpus}: a partial node must divide the {gpn} accelerators per node")
            return replace(self, nodes=1, gpus_per_node=gpus)
        if gpus % gpn:
            raise ConfigError(f"--gpus {gpus} is not a whole number of {gpn}-accelerator nodes "
                              f"(nearest: {gpus // gpn * gpn} or {math.ceil(gpus / gpn) * gpn})")
        nodes = gpus // gpn
        if nodes > 1 and self.net.name == "none":
            raise ConfigError(f"cluster '{self.name}' has no network; it cannot be scaled past one node")
        return replace(self, nodes=nodes)


def preset_dirs() -> list[Path]:
    """Where cluster presets live: the repo's configs/clusters (editable installs) and the package copy."""
    here = Path(__file__).resolve()
    return [here.parents[3] / "configs" / "clusters", here.parents[1] / "configs" / "clusters"]


def preset_names() -> list[str]:
    names: set[str] = {local.LOCAL}  # this machine, probed on first use (local.py)
    for d in preset_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def resolve_spec_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"cluster spec not found: {p}")
        return p
    for d in preset_dirs():
        candidate = d / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate

    names = preset_names()
    close = difflib.get_close_matches(str(name_or_path), names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; presets: {', '.join(names)}"
    raise ConfigError(f"unknown cluster '{name_or_path}' (not a file, not a preset){hint}")


def is_local(name_or_path: str | Path) -> bool:
    """`local` (this machine), unless a file of that name is meant."""
    return str(name_or_path) == local.LOCAL and not Path(name_or_path).is_file()


def load_spec(name_or_path: str | Path, ranks: int = 1) -> ClusterSpec:
    if is_local(name_or_path):
        return validate(ClusterSpec, local.local_spec(ranks))
    path = resolve_spec_path(name_or_path)
    return validate(ClusterSpec, _read_yaml(str(path.resolve()), path.stat().st_mtime_ns))


@lru_cache(maxsize=64)
def _read_yaml(path: str, mtime_ns: int) -> dict[str, Any]:
    """Parsed spec files, cached per path and modification time (validation and `plan` read the
    same presets dozens of times; YAML parsing dominated their cost)."""
    return load_yaml(path)


def resolve(spec: ClusterSpec) -> Cluster:
    node = spec.node
    acc_spec = node.accelerator if isinstance(node.accelerator, AcceleratorSpec) else AcceleratorSpec(
        name=node.accelerator)
    acc = acc_spec.resolve()
    intra = None
    if node.intra_node is not None:
        intra = (LinkSpec(type=node.intra_node) if isinstance(node.intra_node, str) else node.intra_node).resolve()
    net = catalog.network(spec.network.type)
    net = replace(net, **spec.network.model_dump(include={"port_gbit_s", "latency_us", "efficiency"},
                                                 exclude_none=True))
    power = node.power_w if node.power_w is not None else 1.5 * acc.tdp_w * node.accelerators_per_node
    return Cluster(
        name=spec.name,
        nodes=spec.nodes,
        gpus_per_node=node.accelerators_per_node,
        acc=acc,
        intra=intra,
        net=net,
        nics_per_node=spec.network.nics_per_node,
        topology=spec.network.topology if spec.nodes > 1 else "single-node",
        oversubscription=spec.network.oversubscription,
        storage=spec.storage.resolve(),
        node_power_w=power,
        pue=spec.pue,
        price_per_gpu_hour=spec.price_per_gpu_hour,
        currency=spec.currency,
        spec=spec,
    )


def load_cluster(name_or_path: str | Path, gpus: int | None = None) -> Cluster:
    """Preset name or YAML path → resolved `Cluster`, optionally scaled to `gpus` accelerators
    (on `local`: `gpus` CPU processes on this machine, each with its share of the cores)."""
    if is_local(name_or_path):
        return resolve(load_spec(name_or_path, ranks=gpus or 1))
    cluster = resolve(load_spec(name_or_path))
    return cluster.scaled(gpus) if gpus is not None else cluster
