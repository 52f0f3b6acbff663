"""Predicted vs published: the runs in `data/published_runs.yaml`, split into calibration and held-out.

Each run is a `clusterlm plan` request (request.py) plus its published figure and citation.
`rows()` predicts every run through the same path the CLI takes (resolve → estimate → JSON),
so `command(run)` reproduces its row exactly. Calibration rows (Korthikanti 2022, Narayanan
2021 — the Megatron-LM A100 runs) were allowed to inform constants, though none is fitted to
them (catalog.py); held-out rows never do, and their error spread is the uncertainty every plan
carries (`bands()`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files

import yaml

from clusterlm.cluster import request as plan_request
from clusterlm.cluster.estimator import estimate
from clusterlm.cluster.planner import to_json
from clusterlm.cluster.request import PlanRequest

# quantity → (label, kind): "time" grows when the planner is pessimistic, "rate" shrinks, "memory".
QUANTITIES = {
    "step_time_s": ("s per step", "time"),
    "tokens_per_s_per_gpu": ("tokens/s/GPU", "rate"),
    "model_tflops_per_gpu": ("model TFLOP/s/GPU", "rate"),
    "hardware_tflops_per_gpu": ("hardware TFLOP/s/GPU", "rate"),
    "memory_gib": ("GiB per GPU", "memory"),
    "layer_state_gib": ("GiB (layer state)", "memory"),
    "layer_activations_gib": ("GiB (layer activations)", "memory"),
}
SPLITS = ("calibration", "held_out")


@dataclass(frozen=True)
class Source:
    key: str
    citation: str
    org: str
    year: int
    hardware: str
    software: str
    split: str


@dataclass(frozen=True)
class Run:
    id: str
    source: Source
    case: str
    quantity: str
    published: float
    request: PlanRequest
    assumed: str = ""

    @property
    def split(self) -> str:
        return self.source.split

    @property
    def kind(self) -> str:
        return QUANTITIES[self.quantity][1]

    @property
    def command(self) -> str:
        return plan_request.command(self.request)


@dataclass(frozen=True)
class Row:
    run: Run
    predicted: float
    fits: bool  # the predicted layout fits in accelerator memory (the run did)

    @property
    def error(self) -> float:
        return self.predicted / self.run.published - 1.0

    @property
    def time_error(self) -> float:
        """Predicted step time ÷ the published one − 1 (rates inverted): > 0 means pessimistic."""
        if self.run.kind == "rate":
            return self.run.published / self.predicted - 1.0
        return self.error

    # the attributes report.py prints
    @property
    def case(self) -> str:
        return self.run.case

    @property
    def quantity(self) -> str:
        return QUANTITIES[self.run.quantity][0]

    @property
    def published(self) -> float:
        return self.run.published


@lru_cache(maxsize=1)
def load_runs() -> tuple[Run, ...]:
    """Every run of the package data file, validated (unknown quantities or sources are errors)."""
    text = files("clusterlm.cluster").joinpath("data/published_runs.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    sources = {key: Source(key=key, **value) for key, value in data["sources"].items()}
    runs = []
    for item in data["runs"]:
        item = dict(item)
        if item["quantity"] not in QUANTITIES or sources[item["source"]].split not in SPLITS:
            raise ValueError(f"published run {item['id']}: bad quantity or split")
        runs.append(Run(id=item["id"], source=sources[item["source"]], case=item["case"], quantity=item["quantity"],
                        published=float(item["published"]), request=PlanRequest.from_mapping(item["plan"]),
                        assumed=item.get("assumed", "")))
    return tuple(runs)


def predicted_value(quantity: str, plan: dict) -> float:
    """The figure a `plan --json` payload predicts for a published quantity."""
    if quantity == "tokens_per_s_per_gpu":
        return plan["tokens_per_s"] / plan["gpus"]
    if quantity == "memory_gib":
        return plan["memory_gib"]["total"]
    return plan[quantity]


def evaluate(run: Run) -> Row:
    resolved = plan_request.resolve(run.request)
    est = estimate(resolved.workload, resolved.cluster, resolved.execution)
    return Row(run=run, predicted=predicted_value(run.quantity, to_json(est)), fits=est.fits)


@lru_cache(maxsize=1)
def rows() -> tuple[Row, ...]:
    return tuple(evaluate(run) for run in load_runs())


def select(split: str, kind: str | None = None) -> list[Row]:
    """Rows of one split; `kind` "speed" = time and rate rows, or "memory"."""
    out = [r for r in rows() if r.run.split == split]
    if kind == "speed":
        return [r for r in out if r.run.kind in ("time", "rate")]
    if kind == "memory":
        return [r for r in out if r.run.kind == "memory"]
    return out


def mean_abs_error(rows_: list[Row]) -> float:
    return sum(abs(r.error) for r in rows_) / len(rows_)


def max_abs_error(rows_: list[Row]) -> float:
    return max(abs(r.error) for r in rows_)


def rms_time_error(rows_: list[Row]) -> float:
    return math.sqrt(sum(r.time_error**2 for r in rows_) / len(rows_))


@lru_cache(maxsize=1)
def bands() -> dict[str, float]:
    """±1σ relative uncertainty of a prediction: the RMS of the held-out errors (bias included)."""
    speed, memory = select("held_out", "speed"), select("held_out", "memory")
    mem = math.sqrt(sum(r.error**2 for r in memory) / len(memory))
    return {"time": rms_time_error(speed), "memory": mem}


def summary() -> dict[str, dict[str, float]]:
    """Mean and max |error| (and counts; for speed rows the share predicted to fit) per split and kind,
    held-out first."""
    out = {}
    for split in ("held_out", "calibration"):
        for kind in ("speed", "memory"):
            part = select(split, kind)
            if part:
                out[f"{split}/{kind}"] = {"n": len(part), "mean_abs_error": mean_abs_error(part),
                                          "max_abs_error": max_abs_error(part)}
                if kind == "speed":  # every run ran, so its layout must fit: a memory check
                    out[f"{split}/{kind}"]["fit"] = sum(r.fits for r in part) / len(part)
    return out


def row_json(row: Row) -> dict:
    """One row of `plan --validate --json`."""
    run = row.run
    return {"id": run.id, "split": run.split, "org": run.source.org, "year": run.source.year,
            "source": run.source.citation, "hardware": run.source.hardware, "software": run.source.software,
            "case": run.case, "quantity": run.quantity, "published": run.published, "predicted": row.predicted,
            "error": row.error, "fits": row.fits, "assumed": run.assumed, "command": run.command}
