"""Hardware catalog: accelerators, links, networks and storage, every number with its source.

Conventions (one for the whole package):
  * FLOP/s are dense (no 2:4 sparsity), per accelerator, in the precision named.
  * Link and network bandwidths are per accelerator, **per direction**, in GB/s
    (1e9 bytes/s). Vendors often quote NVLink as bidirectional aggregate: NVLink 3 "600 GB/s"
    is 300 GB/s each way; InfiniBand ports are quoted in Gbit/s per direction.
  * Memory sizes are GiB (2**30 bytes) where vendors say GB for HBM stacks of 2**30 bytes
    multiples (A100 "80 GB" is 80 GiB of HBM2e).

Efficiencies are the physical part of the performance model (see `estimator.py` and
docs/planner.md): `gemm_efficiency` is the fraction of peak a large, well-shaped GEMM
sustains in training (clock throttling under power caps included); `memory_efficiency`
the fraction of HBM bandwidth a streaming kernel reaches; `kernel_overhead_us` the fixed
cost per kernel (launch + tail); link efficiencies are achieved NCCL bus bandwidth ÷ line
rate. The same numbers serve every model and every parallel layout — nothing per run.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace

from clusterlm.errors import ConfigError

TFLOP = 1e12
DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8")


@dataclass(frozen=True)
class Accelerator:
    name: str  # catalog key, e.g. "a100-80gb"
    display: str
    kind: str  # "gpu" | "tpu" | "cpu"
    peak_tflops: dict[str, float]  # dtype → dense TFLOP/s
    memory_gib: float
    memory_bandwidth_gb_s: float  # HBM / DRAM, GB/s
    tdp_w: float
    gemm_efficiency: float = 0.72
    memory_efficiency: float = 0.80
    # Fused (Flash) attention forward, fraction of peak on executed FLOPs; None: 0.8 × gemm_efficiency.
    attention_efficiency: float | None = None
    kernel_overhead_us: float = 5.0
    # Measured (GEMM GFLOP, achieved fraction of peak) points, sorted by size; when given they
    # replace the analytic large-GEMM efficiency (used for probed CPUs).
    gemm_table: tuple[tuple[float, float], ...] = ()
    # Substrings of `torch.cuda.get_device_name()` that identify this part (lower case).
    device_names: tuple[str, ...] = ()
    # Resident memory the framework itself needs (CUDA context, allocator slack, or the
    # Python + torch process on a CPU), counted into the planner's memory total.
    runtime_overhead_gib: float = 0.0
    source: str = ""

    def peak_flops(self, dtype: str) -> float:
        """Dense peak FLOP/s in `dtype`; ConfigError if the part has no such precision."""
        tf = self.peak_tflops.get(dtype)
        if tf is None:  # e.g. bf16 on a V100, fp16 on a TPU: say so rather than substitute
            have = ", ".join(sorted(self.peak_tflops))
            raise ConfigError(f"accelerator '{self.name}' has no {dtype} peak in the catalog (has: {have})")
        return tf * TFLOP

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * 2**30


@dataclass(frozen=True)
class Link:
    """A point-to-point or switched fabric between accelerators (per accelerator, per direction)."""

    name: str
    display: str
    bandwidth_gb_s: float
    latency_us: float
    efficiency: float
    source: str = ""

    @property
    def effective_bytes_per_s(self) -> float:
        return self.bandwidth_gb_s * 1e9 * self.efficiency


@dataclass(frozen=True)
class Network:
    """Inter-node network: one NIC port's line rate (Gbit/s, per direction)."""

    name: str
    display: str
    port_gbit_s: float
    latency_us: float
    efficiency: float
    source: str = ""


@dataclass(frozen=True)
class Storage:
    name: str
    display: str
    read_gb_s: float  # aggregate
    write_gb_s: float
    capacity_tb: float
    source: str = ""


# --------------------------------------------------------------------------------------------
# Accelerators. Peaks: vendor datasheets (NVIDIA A100/H100/H200/B200/V100/L4/L40S datasheets,
# AMD Instinct MI250X/MI300X datasheets, Google Cloud TPU system architecture pages); see also
# /shared/REFERENCE.md "Hardware".
# Efficiency numbers (the only calibrated constants of the planner; docs/planner.md):
#   A100: gemm_efficiency 0.76, memory_efficiency 0.80 — the one pair (with NVLink efficiency
#     0.60) that best reproduces the Megatron-LM A100 runs of Narayanan et al. 2021 and
#     Korthikanti et al. 2022 together (15 rows, no per-row constants). cuBLAS reaches ≈ 90 % of
#     peak on large fp16 GEMMs at boost clock; sustained training at the 400 W cap runs lower.
#   Hopper/Blackwell: 0.76 × (0.76 / 0.90) ≈ 0.64 — the A100 value scaled by the ratio of
#     large-GEMM microbenchmark fractions (H100 SXM ≈ 750 of 989 TFLOP/s vs A100 ≈ 280 of 312):
#     the datasheet peak assumes boost clocks a 700 W part cannot hold under full tensor load.
#   attention_efficiency: FlashAttention-2 forward, fraction of peak on the FLOPs it executes
#     (Dao 2023: ≈ 60–70 % on A100; ≈ 35–40 % on H100, where FA2 does not use Hopper's wgmma/TMA).
#   V100 0.72 (cuBLAS ≈ 85 % of 125 TFLOP/s). L4/L40S 0.55 (power-capped parts).
#   MI300X 0.50: public hipBLASLt bf16 GEMM benchmarks reach ≈ 45–55 % of the 1.3 PFLOP/s
#     datasheet peak. TPU 0.80: PaLM reports 57.8 % hardware FLOPs utilisation end to end on
#     TPU v4 (Chowdhery et al. 2022, appendix B), so MXU GEMMs run well above that.
#   kernel_overhead_us 5: CUDA launch + tail effect per kernel.
#   runtime_overhead_gib: CUDA context, cuBLAS/NCCL workspaces, allocator slack.
# --------------------------------------------------------------------------------------------
_AMPERE = dict(gemm_efficiency=0.76, memory_efficiency=0.80, attention_efficiency=0.60,
               kernel_overhead_us=5.0, runtime_overhead_gib=1.0)
_HOPPER = dict(gemm_efficiency=0.64, memory_efficiency=0.80, attention_efficiency=0.38,
               kernel_overhead_us=5.0, runtime_overhead_gib=1.0)
_OTHER_NV = dict(memory_efficiency=0.80, kernel_overhead_us=5.0, runtime_overhead_gib=1.0)

ACCELERATORS: dict[str, Accelerator] = {
    a.name: a
    for a in [
        Accelerator("v100-32gb", "NVIDIA V100 SXM2 32GB", "gpu",
                    {"fp32": 15.7, "fp16": 125.0}, 32, 900, 300, gemm_efficiency=0.72,
                    device_names=("v100",), source="NVIDIA V100 datasheet (SXM2)", **_OTHER_NV),
        Accelerator("a100-40gb", "NVIDIA A100 SXM4 40GB", "gpu",
                    {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}, 40, 1555, 400,
                    device_names=("a100-sxm4-40gb", "a100 40gb", "a100-pcie-40gb"),
                    source="NVIDIA A100 datasheet", **_AMPERE),
        Accelerator("a100-80gb", "NVIDIA A100 SXM4 80GB", "gpu",
                    {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}, 80, 2039, 400,
                    device_names=("a100-sxm4-80gb", "a100-sxm-80gb", "a100 80gb", "a100"),
                    source="NVIDIA A100 datasheet (80GB SXM: 2,039 GB/s)", **_AMPERE),
        Accelerator("h100-pcie", "NVIDIA H100 PCIe 80GB", "gpu",
                    {"fp32": 51.0, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0, "fp8": 1513.0}, 80, 2000, 350,
                    device_names=("h100 pcie",), source="NVIDIA H100 datasheet (PCIe)", **_HOPPER),
        Accelerator("h100-sxm", "NVIDIA H100 SXM5 80GB", "gpu",
                    {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4, "fp8": 1978.9}, 80, 3350, 700,
                    device_names=("h100 80gb hbm3", "h100-sxm", "h100 sxm", "h800", "h100"),
                    source="NVIDIA H100 datasheet (SXM)", **_HOPPER),
        Accelerator("h200-sxm", "NVIDIA H200 SXM 141GB", "gpu",
                    {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4, "fp8": 1978.9}, 141, 4800, 700,
                    device_names=("h200",), source="NVIDIA H200 datasheet", **_HOPPER),
        Accelerator("b200", "NVIDIA B200 192GB", "gpu",
                    {"tf32": 1100.0, "bf16": 2250.0, "fp16": 2250.0, "fp8": 4500.0}, 180, 8000, 1000,
                    device_names=("b200",), source="NVIDIA HGX B200 datasheet (per GPU, dense)", **_HOPPER),
        Accelerator("l4", "NVIDIA L4 24GB", "gpu",
                    {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0, "fp8": 242.5}, 24, 300, 72,
                    gemm_efficiency=0.55, device_names=("l4",), source="NVIDIA L4 datasheet (dense)", **_OTHER_NV),
        Accelerator("l40s", "NVIDIA L40S 48GB", "gpu",
                    {"fp32": 91.6, "tf32": 183.0, "bf16": 362.05, "fp16": 362.05, "fp8": 733.0}, 48, 864, 350,
                    gemm_efficiency=0.55, device_names=("l40s",), source="NVIDIA L40S datasheet (dense)",
                    **_OTHER_NV),
        Accelerator("mi250x", "AMD Instinct MI250X", "gpu",
                    {"fp32": 95.7, "bf16": 383.0, "fp16": 383.0}, 128, 3277, 560,
                    gemm_efficiency=0.55, memory_efficiency=0.80, kernel_overhead_us=8.0,
                    runtime_overhead_gib=1.0, device_names=("mi250",),
                    source="AMD Instinct MI250X datasheet (matrix FP32 95.7 TFLOP/s)"),
        Accelerator("mi300x", "AMD Instinct MI300X", "gpu",
                    {"fp32": 163.4, "tf32": 653.7, "bf16": 1307.4, "fp16": 1307.4, "fp8": 2614.9}, 192, 5300, 750,
                    gemm_efficiency=0.50, memory_efficiency=0.80, kernel_overhead_us=8.0,
                    runtime_overhead_gib=1.0, device_names=("mi300x",),
                    source="AMD Instinct MI300X datasheet"),
        Accelerator("tpu-v4", "Google TPU v4", "tpu",
                    {"bf16": 275.0}, 32, 1200, 192,
                    gemm_efficiency=0.80, memory_efficiency=0.85, kernel_overhead_us=2.0,
                    runtime_overhead_gib=0.5, device_names=("tpu v4",),
                    source="Google Cloud TPU v4 system architecture; Jouppi et al. 2023 (ISCA)"),
        Accelerator("tpu-v5p", "Google TPU v5p", "tpu",
                    {"bf16": 459.0, "fp8": 918.0}, 95, 2765, 300,
                    gemm_efficiency=0.80, memory_efficiency=0.85, kernel_overhead_us=2.0,
                    runtime_overhead_gib=0.5, device_names=("tpu v5p",),
                    source="Google Cloud TPU v5p system architecture (TDP not published; estimate)"),
        # A CPU has no fixed peak: `cluster probe` measures it and writes an explicit accelerator
        # block into the spec. These placeholders (2 cores of an AVX2 laptop-class CPU, per
        # /shared/BRIEF) only make the preset loadable before a probe.
        Accelerator("cpu", "generic CPU (probe it for real numbers)", "cpu",
                    {"fp32": 0.08, "bf16": 0.0016}, 16, 10, 65,
                    gemm_efficiency=0.85, memory_efficiency=0.70, kernel_overhead_us=15.0,
                    runtime_overhead_gib=0.35, source="placeholder; run `clusterlm cluster probe`"),
    ]
}

# --------------------------------------------------------------------------------------------
# Intra-node links (per accelerator, per direction). Efficiency 0.60: /shared/REFERENCE.md quotes
# 0.6–0.65 as typical in published simulators (Calculon uses 0.6); NCCL all-reduce bus bandwidth
# on 8×A100 SXM reaches ≈ 200–230 GB/s of 300 only for ≥ 1 GB messages (nccl-tests issues #149,
# #178), less for the 25–100 MB tensor-parallel messages of the validation runs.
# --------------------------------------------------------------------------------------------
LINKS: dict[str, Link] = {
    k.name: k
    for k in [
        Link("nvlink2", "NVLink 2 (V100, 300 GB/s bidir.)", 150, 2.0, 0.60, "NVIDIA V100 datasheet"),
        Link("nvlink3", "NVLink 3 + NVSwitch (A100, 600 GB/s bidir.)", 300, 2.0, 0.60,
             "NVIDIA A100 datasheet; nccl-tests busbw ≈ 200–230 GB/s"),
        Link("nvlink4", "NVLink 4 + NVSwitch (H100, 900 GB/s bidir.)", 450, 2.0, 0.60, "NVIDIA H100 datasheet"),
        Link("nvlink5", "NVLink 5 + NVSwitch (B200, 1.8 TB/s bidir.)", 900, 2.0, 0.60, "NVIDIA B200 datasheet"),
        Link("pcie4", "PCIe 4.0 x16", 32, 5.0, 0.80, "PCI-SIG (≈ 32 GB/s per direction)"),
        Link("pcie5", "PCIe 5.0 x16", 64, 5.0, 0.80, "PCI-SIG (≈ 64 GB/s per direction)"),
        Link("infinity-fabric-mi250x", "AMD Infinity Fabric (MI250X)", 200, 3.0, 0.60,
             "AMD MI250X datasheet (up to 8 IF links × 50 GB/s per direction)"),
        Link("infinity-fabric-mi300x", "AMD Infinity Fabric (MI300X, 7 links)", 448, 3.0, 0.60,
             "AMD MI300X datasheet (7 × 64 GB/s per direction, fully connected)"),
        Link("tpu-v4-ici", "TPU v4 ICI (3D torus)", 150, 2.0, 0.80,
             "Jouppi et al. 2023: 6 ICI links × 50 GB/s; a ring uses 2 directions of one axis per chip → ~150 GB/s"),
        Link("tpu-v5p-ici", "TPU v5p ICI (3D torus)", 300, 2.0, 0.80, "Google Cloud TPU v5p: 4,800 Gbit/s ICI per chip"),
        Link("shared-memory", "host shared memory (same machine)", 5, 20.0, 0.50,
             "placeholder; `cluster probe` measures loopback all-reduce"),
    ]
}

# --------------------------------------------------------------------------------------------
# Inter-node networks: per-port line rate, per direction. Efficiency 0.9 for InfiniBand
# (REFERENCE.md; nccl-tests issue #119: 85–96 GB/s of 100 on 4×HDR), lower for RoCE/Ethernet.
# --------------------------------------------------------------------------------------------
NETWORKS: dict[str, Network] = {
    n.name: n
    for n in [
        Network("ib-edr", "InfiniBand EDR 100 Gb/s", 100, 3.0, 0.90, "IBTA"),
        Network("ib-hdr", "InfiniBand HDR 200 Gb/s", 200, 3.0, 0.90, "IBTA; DGX A100: 8 × HDR compute NICs"),
        Network("ib-ndr", "InfiniBand NDR 400 Gb/s", 400, 3.0, 0.90, "IBTA; DGX H100: 8 × NDR compute NICs"),
        Network("ib-xdr", "InfiniBand XDR 800 Gb/s", 800, 3.0, 0.90, "IBTA"),
        Network("roce-200", "RoCE v2 200 Gb/s", 200, 5.0, 0.85, "RoCE at HDR line rate, lower efficiency"),
        Network("roce-400", "RoCE v2 400 Gb/s", 400, 5.0, 0.85, "Meta Llama 3 RoCE fabric (400 Gb/s per GPU)"),
        Network("eth-100", "Ethernet 100 GbE (TCP)", 100, 20.0, 0.70, "IEEE 802.3"),
        Network("eth-25", "Ethernet 25 GbE (TCP)", 25, 25.0, 0.70, "IEEE 802.3"),
        Network("tpu-v4-ici", "TPU v4 ICI between hosts (torus)", 1200, 2.0, 0.80,
                "Jouppi et al. 2023 (per chip 6 × 50 GB/s; 4 chips per host)"),
        Network("tpu-v5p-ici", "TPU v5p ICI between hosts (torus)", 4800, 2.0, 0.80, "Google Cloud TPU v5p"),
        Network("none", "single node (no network)", 1, 1.0, 1.0, ""),
    ]
}

# --------------------------------------------------------------------------------------------
# Storage systems (aggregate). /shared/REFERENCE.md "Storage".
# --------------------------------------------------------------------------------------------
STORAGE: dict[str, Storage] = {
    s.name: s
    for s in [
        Storage("orion", "OLCF Frontier Orion (Lustre)", 5500, 4600, 700_000, "OLCF: ≈ 5.5 TB/s read"),
        Storage("eagle", "ALCF Eagle (Lustre)", 650, 650, 100_000, "ALCF: ≈ 650 GB/s"),
        Storage("tectonic", "Meta Tectonic (LLM training)", 2000, 2000, 240_000,
                "Llama 3 paper: ≈ 2 TB/s sustained, 7 TB/s peak"),
        Storage("ddn-a3i", "DDN AI400X2 appliance ×4 (SuperPOD reference)", 360, 260, 2000,
                "DGX SuperPOD reference architecture (≈ 90 GB/s read per appliance)"),
        Storage("local-nvme", "local NVMe SSD", 7, 5, 4, "PCIe 4.0 NVMe class"),
    ]
}


def _lookup(table: dict, name: str, what: str):
    key = name.strip().lower()
    if key in table:
        return table[key]
    close = difflib.get_close_matches(key, table, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(table)}"
    raise ConfigError(f"unknown {what} '{name}'{hint}")


def accelerator(name: str) -> Accelerator:
    return _lookup(ACCELERATORS, name, "accelerator")


def link(name: str) -> Link:
    return _lookup(LINKS, name, "intra-node link")


def network(name: str) -> Network:
    return _lookup(NETWORKS, name, "network")


def storage(name: str) -> Storage:
    return _lookup(STORAGE, name, "storage system")


def with_overrides(acc: Accelerator, **fields) -> Accelerator:
    """A copy of `acc` with some numbers replaced (spec files may override catalog values)."""
    return replace(acc, **{k: v for k, v in fields.items() if v is not None})


def _normalise(name: str) -> str:
    return re.sub(r"\s+", " ", name.strip().lower().replace("nvidia ", "").replace("amd ", ""))


def find_device(device_name: str) -> Accelerator | None:
    """Catalog entry for a torch device name ("NVIDIA H100 80GB HBM3"), or None if unknown."""
    norm = _normalise(device_name)
    if not norm or norm.startswith("cpu"):
        return None
    best: tuple[int, Accelerator] | None = None
    for acc in ACCELERATORS.values():
        for pattern in acc.device_names:
            if pattern in norm and (best is None or len(pattern) > best[0]):
                best = (len(pattern), acc)  # the most specific pattern wins (H100 PCIe vs H100)
    return best[1] if best else None


def peak_flops_for_device(device_name: str, dtype: str) -> float | None:
    """Dense peak FLOP/s of a torch device name in `dtype` ("fp32" | "bf16" | "fp16" | ...).

    None when the device or the precision is not in the catalog (callers then measure with
    `clusterlm.cluster.probe.measure_matmul_flops`). Used by the trainer for MFU.
    """
    acc = find_device(device_name)
    if acc is None:
        return None
    tf = acc.peak_tflops.get(dtype.lower())
    return tf * TFLOP if tf is not None else None
