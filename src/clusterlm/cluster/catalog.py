"""Hardware catalog: accelerators, links, networks and storage, every number with its source.

Conventions (one for the whole package):
  * FLOP/s are dense (no 2:4 sparsity), per accelerator, in the precision named.
  * Link and network bandwidths are per accelerator, **per direction**, in GB/s
    (1e9 bytes/s). Vendors often quote NVLink as bidirectional aggregate: NVLink 3 "600 GB/s"
    is 300 GB/s each way; InfiniBand ports are quoted in Gbit/s per direction.
  * Memory sizes are GiB (2**30 bytes) where vendors say GB for HBM stacks of 2**30 bytes
    multiples (A100 "80 GB" is 80 GiB of HBM2e).

Efficiencies come from microbenchmarks, never from end-to-end training runs (docs/planner.md,
"Where every constant comes from"): `gemm_efficiency` is the sustained fraction of peak a large,
well-shaped GEMM reaches (Stas Bekman's ml-engineering MAMF/MSMF tables); smaller GEMMs lose
through the memory roofline and the per-kernel cost (compute.py). `attention_efficiency` is the FlashAttention-2 forward
kernel's fraction of peak (Dao 2023), `attention_efficiency_fa3` Hopper's FlashAttention-3 (Shah
et al. 2024); `memory_efficiency` the fraction of HBM bandwidth a streaming kernel reaches;
`kernel_overhead_us` the fixed cost per kernel; link efficiencies are nccl-tests bus bandwidth ÷
line rate. The same numbers serve every model and every parallel layout — nothing per run.
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
    # FlashAttention-3-class kernel (Hopper wgmma/TMA); None: the part has none, `flash` is used.
    attention_efficiency_fa3: float | None = None
    # Sustained FP8 GEMM fraction of the fp8 peak; None: FP8 GEMMs unsupported.
    gemm_efficiency_fp8: float | None = None
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
# GEMM efficiency = sustained large-GEMM TFLOP/s ÷ datasheet peak, from the Maximum Achievable /
# Sustainable Matmul FLOPS tables of github.com/stas00/ml-engineering (compute/accelerator):
#   H100/H200  698.6 / 989   = 0.706 (MSMF of 8 H200 computing at once; same SMs, clocks and
#              700 W as H100 SXM. The boost-clock MAMF, 792.1 on H100, is not what a step sees.)
#   B200      1426.4 / 2250  = 0.634 (MSMF, 8 GPUs computing at once)
#   A100 SXM   267.9 / 312   = 0.859 MAMF (CUDA 12.1) is a boost-clock burst and no sustained
#              figure is published; it is scaled by the sustained/burst ratio measured on H200,
#              702.9 / 828.0 = 0.849 (same protocol, one GPU): 0.729.
#   MI250X     147.0 / 191.5 = 0.767 per GCD (MAMF, ROCm 6.2); MI300X 781.9 / 1300 = 0.601 (MAMF;
#              the card sits at its power cap from the first kernel, so burst ≈ sustained).
#   FP8: H200 MAMF 1453.4 / 1979 = 0.734 and B200 3432.5 / 4500 = 0.763, times the same chips'
#   bf16 MSMF/MAMF ratio (0.849 and 0.815) for the sustained clock: 0.623 and 0.622.
#   TPU v4/v5p 0.80: no published matmul microbenchmark found; PaLM's 57.8 % end-to-end hardware
#   FLOPs utilisation on TPU v4 (Chowdhery et al. 2022, appendix B) is a lower bound.
#   V100 0.72, L4/L40S 0.55: not re-derived (no validation run uses them).
# None of these is fitted to an end-to-end training run.
# Attention: FlashAttention-2 forward reaches up to 73 % of peak on A100 (Dao 2023, §4.1) and
#   335 TFLOP/s forward+backward on H100 (0.34 of peak, i.e. ≈ 0.38 forward with the backward at
#   0.85 of the forward's rate); FlashAttention-3 forward reaches 740 TFLOP/s on H100 (0.75; Shah
#   et al. 2024). B200: no published FlashAttention-4 throughput found; the Hopper FA3 fraction is
#   used (an assumption, docs/planner.md).
# memory_efficiency 0.80: streaming kernels; an Nsight Compute study of H100 measures coalesced
#   loads at 84 % of 3.35 TB/s. kernel_overhead_us 5: CUDA launch + tail effect per kernel.
# runtime_overhead_gib: CUDA context, cuBLAS/NCCL workspaces, allocator slack.
# --------------------------------------------------------------------------------------------
SUSTAINED_OVER_BURST = 702.9 / 828.0  # H200 bf16 MSMF / MAMF (ml-engineering), applied to A100's MAMF
_AMPERE = dict(gemm_efficiency=round(0.859 * SUSTAINED_OVER_BURST, 3), memory_efficiency=0.80,
               attention_efficiency=0.73, kernel_overhead_us=5.0, runtime_overhead_gib=1.0)
_HOPPER = dict(gemm_efficiency=0.706, gemm_efficiency_fp8=0.623, memory_efficiency=0.80,
               attention_efficiency=0.38, attention_efficiency_fa3=0.75, kernel_overhead_us=5.0,
               runtime_overhead_gib=1.0)
_BLACKWELL = {**_HOPPER, "gemm_efficiency": 0.634, "gemm_efficiency_fp8": 0.622}
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
                    device_names=("b200",), source="NVIDIA HGX B200 datasheet (per GPU, dense)", **_BLACKWELL),
        Accelerator("l4", "NVIDIA L4 24GB", "gpu",
                    {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0, "fp8": 242.5}, 24, 300, 72,
                    gemm_efficiency=0.55, device_names=("l4",), source="NVIDIA L4 datasheet (dense)", **_OTHER_NV),
        Accelerator("l40s", "NVIDIA L40S 48GB", "gpu",
                    {"fp32": 91.6, "tf32": 183.0, "bf16": 362.05, "fp16": 362.05, "fp8": 733.0}, 48, 864, 350,
                    gemm_efficiency=0.55, device_names=("l40s",), source="NVIDIA L40S datasheet (dense)",
                    **_OTHER_NV),
        Accelerator("mi250x", "AMD Instinct MI250X", "gpu",
                    {"fp32": 95.7, "bf16": 383.0, "fp16": 383.0}, 128, 3277, 560,
                    gemm_efficiency=0.767, memory_efficiency=0.80, kernel_overhead_us=8.0,
                    runtime_overhead_gib=1.0, device_names=("mi250",),
                    source="AMD Instinct MI250X datasheet (matrix FP32 95.7 TFLOP/s)"),
        Accelerator("mi300x", "AMD Instinct MI300X", "gpu",
                    {"fp32": 163.4, "tf32": 653.7, "bf16": 1307.4, "fp16": 1307.4, "fp8": 2614.9}, 192, 5300, 750,
                    gemm_efficiency=0.601, memory_efficiency=0.80, kernel_overhead_us=8.0,
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
# Intra-node links (per accelerator, per direction). Efficiency = nccl-tests ring bus bandwidth ÷
# line rate for large messages:
#   NVLink 3 (8 × A100 SXM4): busbw ≈ 200 GB/s of 300 (nccl-tests issue #149)     → 0.67
#   NVLink 4 (8 × H100 SXM):  attained ≈ 370 GB/s of 450 (NVIDIA/nccl issue #1374) → 0.82
#     (NVLink SHARP all-reduce reaches 476-480 GB/s busbw, nccl-tests #290, #272; not modelled)
#   NVLink 5 (GB200):          nvbandwidth p2p ≈ 770 GB/s of 900 (Azure AI-benchmarking-guide #7) → 0.86
#   NVLink 2, PCIe, Infinity Fabric, TPU ICI: not re-derived (no validation row depends on them).
# --------------------------------------------------------------------------------------------
LINKS: dict[str, Link] = {
    k.name: k
    for k in [
        Link("nvlink2", "NVLink 2 (V100, 300 GB/s bidir.)", 150, 2.0, 0.60, "NVIDIA V100 datasheet"),
        Link("nvlink3", "NVLink 3 + NVSwitch (A100, 600 GB/s bidir.)", 300, 2.0, 0.67,
             "NVIDIA A100 datasheet; nccl-tests #149: all-reduce busbw ≈ 200 GB/s on 8 × A100 SXM4"),
        Link("nvlink4", "NVLink 4 + NVSwitch (H100, 900 GB/s bidir.)", 450, 2.0, 0.82,
             "NVIDIA H100 datasheet; NVIDIA/nccl #1374: ≈ 370 GB/s attained of 450 per direction"),
        Link("nvlink5", "NVLink 5 + NVSwitch (B200, 1.8 TB/s bidir.)", 900, 2.0, 0.86,
             "NVIDIA B200 datasheet; Azure AI-benchmarking-guide #7: nvbandwidth p2p ≈ 770 GB/s"),
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
# Inter-node networks: per-port line rate, per direction. Efficiency = nccl-tests bus bandwidth ÷
# line rate: HDR 0.90 (nccl-tests #119: 84.8 GB/s average, 96 peak, of 100 on 4 × HDR per 8 GPUs),
# NDR 0.94 (nccl-tests #290, NVIDIA: "46-48 GB/s per NIC" at 400 Gb/s). RoCE, Omni-Path and
# Ethernet: no microbenchmark found; lower efficiencies assumed (docs/planner.md).
# --------------------------------------------------------------------------------------------
NETWORKS: dict[str, Network] = {
    n.name: n
    for n in [
        Network("ib-edr", "InfiniBand EDR 100 Gb/s", 100, 3.0, 0.90, "IBTA"),
        Network("ib-hdr", "InfiniBand HDR 200 Gb/s", 200, 3.0, 0.90,
                "IBTA; DGX A100: 8 × HDR compute NICs; nccl-tests #119"),
        Network("ib-ndr", "InfiniBand NDR 400 Gb/s", 400, 3.0, 0.94,
                "IBTA; DGX H100: 8 × NDR compute NICs; nccl-tests #290 (46-48 GB/s per NIC)"),
        Network("ib-xdr", "InfiniBand XDR 800 Gb/s", 800, 3.0, 0.94, "IBTA (efficiency as NDR)"),
        Network("roce-200", "RoCE v2 200 Gb/s", 200, 5.0, 0.85, "RoCE at HDR line rate, lower efficiency"),
        Network("roce-400", "RoCE v2 400 Gb/s", 400, 5.0, 0.85, "Meta Llama 3 RoCE fabric (400 Gb/s per GPU)"),
        Network("opa-100", "Intel Omni-Path 100 Gb/s", 100, 3.0, 0.85,
                "Intel OPA; Jean Zay (BLOOM): 4 × 100 Gb/s per node (BigScience 2022)"),
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
    `clusterlm.runtime.measure.measure_matmul_flops`). Used by the trainer for MFU.
    """
    acc = find_device(device_name)
    if acc is None:
        return None
    tf = acc.peak_tflops.get(dtype.lower())
    return tf * TFLOP if tf is not None else None
