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
from clusterlm.model.config import ModelConfig

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


def mean_abs_error(rows: list[Row]) -> float:
    return sum(abs(r.error) for r in rows) / len(rows)


def all_rows(cluster: Cluster | None = None) -> dict[str, list[Row]]:
    base = cluster or load_cluster(CLUSTER)
    return {"table5": table5_rows(base), "fig1": fig1_rows(base), "narayanan": narayanan_rows(base)}
