"""Published large runs the planner is validated against (numbers from /shared/REFERENCE.md).

* Korthikanti et al. 2022, Table 5: iteration time of four GPT models on A100-80GB DGX nodes,
  full recomputation vs sequence parallel + selective recomputation.
* Korthikanti et al. 2022, Fig. 1: per-GPU memory of the transformer layers on the first
  pipeline stage (parameters + optimizer state, and activations with and without SP+selective).
* Narayanan et al. 2021: achieved hardware TFLOP/s per GPU for 175B / 530B / 1T at scale.

What the papers fix and we therefore set (not tuned): fp16 with Megatron's fp32 gradient
buffers (18 bytes of model state per parameter — Fig. 1's numbers are exactly that), dropout
0.1, materialised attention scores (no FlashAttention in 2021–22 Megatron), no overlap of
tensor- or data-parallel communication, micro-batch 1 unless stated. Interleaving: 3 virtual
stages for 175B and 530B in the 2022 runs and none for 1T (the only values consistent with
Fig. 1's activation memory; also what Calculon's validation inputs use); no interleaving in the
2021 runs (their throughput drop with data parallelism is the 1F1B bubble (p−1)/m with
m = B/d). Hardware: `configs/clusters/dgx-a100-superpod.yaml`, the same for every row.
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterlm.cluster.estimator import Estimate, Execution, Workload, estimate
from clusterlm.cluster.spec import Cluster, load_cluster
from clusterlm.config.model import ModelConfig

CLUSTER = "dgx-a100-superpod"
SEQ_LEN = 2048
VOCAB = 51200
MODELS = {"22B": "megatron-22B", "175B": "gpt3-175B", "530B": "megatron-530B", "1T": "megatron-1T"}
# (model, GPUs, t, p, global batch, micro-batch, interleave) and the published seconds.
KORTHIKANTI_TABLE5 = [
    # model, gpus, t, p, B, b, v, full recompute s, SP + selective s
    ("22B", 8, 8, 1, 4, 4, 1, 1.42, 1.10),
    ("175B", 64, 8, 8, 64, 1, 3, 18.13, 13.75),
    ("530B", 280, 8, 35, 280, 1, 3, 49.05, 37.83),
    ("1T", 512, 8, 64, 512, 1, 1, 94.42, 71.49),
]
# model → (params + optimizer GiB, activations GiB without recompute, activations GiB SP + selective)
KORTHIKANTI_FIG1 = {
    "22B": (45.56, 59.25, 9.56),
    "175B": (45.56, 66.84, 12.35),
    "530B": (31.64, 114.02, 23.08),
    "1T": (32.96, 131.25, 26.56),
}
NARAYANAN_2021 = [
    # model, GPUs, t, p, B, published hardware TFLOP/s per GPU
    ("175B", 384, 8, 12, 1536, 153.0),
    ("175B", 768, 8, 12, 1536, 149.0),
    ("175B", 1536, 8, 12, 1536, 141.0),
    ("530B", 560, 8, 35, 2240, 171.0),
    ("530B", 1120, 8, 35, 2240, 167.0),
    ("530B", 2240, 8, 35, 2240, 159.0),
    ("1T", 3072, 8, 64, 3072, 163.0),
]


# Out-of-sample check (never used to choose an efficiency): MosaicML llm-foundry MPT training
# benchmarks (scripts/train/benchmarking/README.md): PyTorch FSDP (FULL_SHARD), bf16, flash
# attention, GeLU MLP ×4, no biases, tied embeddings, vocab 50,368.
# size → (layers, d_model, heads); rows: accelerator, size, seq, GPUs, micro-batch, grad accum,
# activation checkpointing, published tokens/s per GPU.
MPT_SHAPES = {"125m": (12, 768, 12), "1b": (24, 2048, 16), "3b": (32, 2560, 20), "7b": (32, 4096, 32),
              "13b": (40, 5120, 40), "30b": (48, 7168, 64), "70b": (80, 8192, 64)}
MPT_RUNS = [
    ("a100-80gb", "125m", 2048, 8, 40, 2, False, 142830),
    ("a100-80gb", "1b", 2048, 8, 14, 4, False, 20513),
    ("a100-80gb", "3b", 2048, 8, 10, 2, False, 10811),
    ("a100-80gb", "7b", 2048, 8, 6, 2, False, 4641),
    ("a100-80gb", "7b", 8192, 8, 8, 2, True, 3206),
    ("a100-80gb", "13b", 2048, 8, 2, 3, False, 2262),
    ("a100-80gb", "13b", 8192, 8, 5, 3, True, 1795),
    ("a100-80gb", "30b", 2048, 8, 3, 21, True, 916),
    ("a100-80gb", "70b", 2048, 64, 8, 4, True, 410),
    ("h100-sxm", "1b", 2048, 8, 14, 1, False, 45455),
    ("h100-sxm", "7b", 2048, 8, 6, 1, False, 10643),
    ("h100-sxm", "7b", 8192, 8, 8, 2, True, 6935),
    ("h100-sxm", "13b", 2048, 8, 2, 1, False, 4792),
    ("h100-sxm", "30b", 2048, 8, 3, 21, True, 2002),
    ("h100-sxm", "70b", 2048, 64, 8, 4, True, 1039),
]


@dataclass(frozen=True)
class Row:
    source: str  # "Korthikanti 2022 Table 5" etc.
    case: str
    quantity: str  # "iteration s" | "TFLOP/s/GPU" | "GiB"
    published: float
    predicted: float

    @property
    def error(self) -> float:
        return self.predicted / self.published - 1.0


def megatron_model(name: str) -> ModelConfig:
    return ModelConfig(preset=MODELS[name], vocab_size=VOCAB, max_seq_len=SEQ_LEN, dropout=0.1)


def megatron_execution(t: int, p: int, d: int, b: int, v: int, mode: str, year: int = 2022) -> Execution:
    seqsel = mode == "seqsel"
    return Execution(tp=t, pp=p, dp=d, micro_batch=b, interleave=v, sequence_parallel=seqsel,
                     recompute="selective" if seqsel else ("full" if mode == "full" else "none"),
                     zero=0, precision="fp16", grad_dtype="fp32", attention="eager",
                     tp_overlap=False, dp_overlap=False, grad_accum_fusion=year >= 2022)


def run(name: str, gpus: int, t: int, p: int, batch: int, b: int, v: int, mode: str,
        cluster: Cluster | None = None, year: int = 2022) -> Estimate:
    base = cluster or load_cluster(CLUSTER)
    workload = Workload(model=megatron_model(name), seq_len=SEQ_LEN, global_batch=batch)
    return estimate(workload, base.scaled(gpus), megatron_execution(t, p, gpus // (t * p), b, v, mode, year))


def table5_rows(cluster: Cluster | None = None) -> list[Row]:
    rows = []
    for name, gpus, t, p, batch, b, v, full_s, seqsel_s in KORTHIKANTI_TABLE5:
        for mode, published in (("full", full_s), ("seqsel", seqsel_s)):
            est = run(name, gpus, t, p, batch, b, v, mode, cluster)
            label = "full recompute" if mode == "full" else "SP + selective"
            rows.append(Row("Korthikanti 2022 Table 5", f"{name} {gpus} GPUs, {label}", "iteration s",
                            published, est.step_time_s))
    return rows


def fig1_rows(cluster: Cluster | None = None) -> list[Row]:
    rows = []
    for name, gpus, t, p, batch, b, v, _, _ in KORTHIKANTI_TABLE5:
        state_gib, act_none_gib, act_seqsel_gib = KORTHIKANTI_FIG1[name]
        none = run(name, gpus, t, p, batch, b, v, "none", cluster)
        seqsel = run(name, gpus, t, p, batch, b, v, "seqsel", cluster)
        rows += [
            Row("Korthikanti 2022 Fig. 1", f"{name} params + optimizer", "GiB", state_gib, none.layer_weights_gib),
            Row("Korthikanti 2022 Fig. 1", f"{name} activations, no recompute", "GiB", act_none_gib,
                none.layer_activations_gib),
            Row("Korthikanti 2022 Fig. 1", f"{name} activations, SP + selective", "GiB", act_seqsel_gib,
                seqsel.layer_activations_gib),
        ]
    return rows


def narayanan_rows(cluster: Cluster | None = None) -> list[Row]:
    rows = []
    for name, gpus, t, p, batch, published in NARAYANAN_2021:
        est = run(name, gpus, t, p, batch, 1, 1, "full", cluster, year=2021)
        rows.append(Row("Narayanan 2021", f"{name} {gpus} GPUs (t={t}, p={p}, d={gpus // (t * p)})",
                        "TFLOP/s/GPU", published, est.hardware_tflops_per_gpu))
    return rows


def mpt_rows() -> list[Row]:
    rows = []
    for acc, size, seq, gpus, b, accum, ac, published in MPT_RUNS:
        layers, d, heads = MPT_SHAPES[size]
        cfg = ModelConfig(style="gpt2", n_layer=layers, d_model=d, n_head=heads, vocab_size=50368, max_seq_len=seq,
                          bias=False, tie_embeddings=True)
        cluster = load_cluster("dgx-a100-superpod" if acc == "a100-80gb" else "dgx-h100", gpus)
        wl = Workload(model=cfg, seq_len=seq, global_batch=b * accum * gpus)
        est = estimate(wl, cluster, Execution(dp=gpus, zero=3, micro_batch=b, recompute="full" if ac else "none"))
        rows.append(Row("MosaicML llm-foundry MPT (out of sample)",
                        f"MPT-{size} seq {seq}, {gpus}×{acc.split('-')[0].upper()}{', AC' if ac else ''}",
                        "tokens/s/GPU", published, est.tokens_per_s / gpus))
    return rows


def mean_abs_error(rows: list[Row]) -> float:
    return sum(abs(r.error) for r in rows) / len(rows)


def all_rows(cluster: Cluster | None = None) -> dict[str, list[Row]]:
    base = cluster or load_cluster(CLUSTER)
    return {"table5": table5_rows(base), "fig1": fig1_rows(base), "narayanan": narayanan_rows(base)}


def out_of_sample_rows() -> dict[str, list[Row]]:
    return {"mpt": mpt_rows()}
