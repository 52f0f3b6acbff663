"""Collective-communication time: α-β ring model and where each parallel group sits.

A collective over n ranks on a fabric with per-rank bandwidth B (bytes/s per direction, after
efficiency) and per-hop latency α takes

    all-reduce      2(n−1)·α + 2(n−1)/n · bytes / B
    all-gather      (n−1)·α  +  (n−1)/n · bytes / B     (bytes = the gathered, full buffer)
    reduce-scatter  (n−1)·α  +  (n−1)/n · bytes / B     (bytes = the full input buffer)

(Thakur et al. 2005; /shared/REFERENCE.md "Time"). A group that spans nodes runs the
hierarchical algorithm NCCL uses: reduce-scatter inside each node over NVLink, the inter-node
collective on 1/k of the data over the NICs (k group members per node, one NIC rail each), then
an all-gather inside the node.

Rank layout follows Megatron-LM and torchtitan: tensor parallel innermost (stride 1), context
parallel next (stride t), data parallel next (stride t·c; with HSDP the shard group inside the
replicas), pipeline outermost (stride t·c·d).
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterlm.cluster.spec import Cluster

ALL_REDUCE, ALL_GATHER, REDUCE_SCATTER = "all_reduce", "all_gather", "reduce_scatter"

# Communication hidden behind compute is not free: NCCL kernels occupy SMs and HBM bandwidth
# while they run. Fraction of compute throughput lost during an overlapped collective
# (Calculon's "processor_usage": 0.15 for NVLink, 0.02 for InfiniBand; Isaev et al. 2023).
INTERFERENCE_INTRA = 0.15
INTERFERENCE_INTER = 0.02


@dataclass(frozen=True)
class Fabric:
    bytes_per_s: float  # per rank, per direction, after efficiency
    latency_s: float  # per hop


def ring_time(kind: str, nbytes: float, n: int, fabric: Fabric) -> float:
    """Seconds for a ring collective of `nbytes` (full buffer) over `n` ranks."""
    if n <= 1 or nbytes <= 0:
        return 0.0
    if kind == ALL_REDUCE:
        return 2 * (n - 1) * fabric.latency_s + 2 * (n - 1) / n * nbytes / fabric.bytes_per_s
    if kind in (ALL_GATHER, REDUCE_SCATTER):
        return (n - 1) * fabric.latency_s + (n - 1) / n * nbytes / fabric.bytes_per_s
    raise ValueError(f"unknown collective {kind!r}")


def p2p_time(nbytes: float, fabric: Fabric) -> float:
    return fabric.latency_s + nbytes / fabric.bytes_per_s if nbytes > 0 else 0.0


def intra_fabric(cluster: Cluster) -> Fabric:
    link = cluster.intra
    if link is None:  # one accelerator per node: "intra-node" traffic never happens
        return Fabric(float("inf"), 0.0)
    return Fabric(link.bandwidth_gb_s * 1e9 * link.efficiency, link.latency_us * 1e-6)


def inter_fabric(cluster: Cluster) -> Fabric:
    bw = cluster.nic_bytes_per_s_per_gpu * cluster.net.efficiency
    if bw <= 0:
        return Fabric(float("inf"), 0.0)
    return Fabric(bw, cluster.net.latency_us * 1e-6)


@dataclass(frozen=True)
class Group:
    """A parallel group: `size` ranks, `per_node` of them inside each node it touches."""

    size: int
    per_node: int

    @property
    def nodes(self) -> int:
        return max(1, self.size // self.per_node)


def group_layout(size: int, stride: int, gpus_per_node: int) -> Group:
    """Ranks r, r+stride, … r+(size−1)·stride: how many share a node."""
    if size <= 1:
        return Group(1, 1)
    if stride >= gpus_per_node:
        return Group(size, 1)
    per_node = min(size, max(1, gpus_per_node // stride))
    return Group(size, per_node)


def collective_time(kind: str, nbytes: float, group: Group, cluster: Cluster) -> float:
    """Hierarchical collective time for a group laid out over nodes."""
    n, k, nodes = group.size, group.per_node, group.nodes
    if n <= 1 or nbytes <= 0:
        return 0.0
    intra, inter = intra_fabric(cluster), inter_fabric(cluster)
    if nodes == 1:
        return ring_time(kind, nbytes, n, intra)
    if k == 1:
        return ring_time(kind, nbytes, n, inter)
    if kind == ALL_REDUCE:
        return (ring_time(REDUCE_SCATTER, nbytes, k, intra) + ring_time(ALL_REDUCE, nbytes / k, nodes, inter)
                + ring_time(ALL_GATHER, nbytes, k, intra))
    if kind == ALL_GATHER:
        return ring_time(ALL_GATHER, nbytes / k, nodes, inter) + ring_time(ALL_GATHER, nbytes, k, intra)
    return ring_time(REDUCE_SCATTER, nbytes, k, intra) + ring_time(REDUCE_SCATTER, nbytes / k, nodes, inter)


def interference(group: Group) -> float:
    """Compute slowdown per second of this group's collectives that overlap compute."""
    return INTERFERENCE_INTRA if group.nodes == 1 else INTERFERENCE_INTER


def overlapped(comm_s: float, window_s: float, group: Group) -> float:
    """Exposed time of `comm_s` run alongside `window_s` of compute: the part that does not fit,
    plus the compute slowdown while the rest runs."""
    hidden = min(comm_s, window_s)
    return comm_s - hidden + interference(group) * hidden


@dataclass(frozen=True)
class Groups:
    tp: Group
    cp: Group
    dp: Group  # every rank holding the same weights: c·d ranks from stride t (gradient sync)
    shard: Group  # ZeRO/FSDP sharding group: c·d_shard ranks from stride t
    replicate: Group  # HSDP replicas of a shard: d/d_shard ranks at stride t·c·d_shard
    pp_inter_node: bool  # do neighbouring pipeline stages sit on different nodes?


def layout(cluster: Cluster, tp: int, dp: int, pp: int, cp: int = 1, dp_shard: int | None = None) -> Groups:
    gpn = cluster.gpus_per_node
    shard = dp_shard or dp
    return Groups(
        tp=group_layout(tp, 1, gpn),
        cp=group_layout(cp, tp, gpn),
        dp=group_layout(cp * dp, tp, gpn),
        shard=group_layout(cp * shard, tp, gpn),
        replicate=group_layout(dp // shard, tp * cp * shard, gpn),
        pp_inter_node=pp > 1 and tp * cp * dp >= gpn and cluster.nodes > 1,
    )


def group_fabric(cluster: Cluster, group: Group) -> Fabric:
    """The fabric a ring inside `group` runs on (the network when it spans nodes)."""
    return inter_fabric(cluster) if group.nodes > 1 else intra_fabric(cluster)


def pp_fabric(cluster: Cluster, groups: Groups) -> Fabric:
    return inter_fabric(cluster) if groups.pp_inter_node else intra_fabric(cluster)
