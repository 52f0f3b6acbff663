"""A `clusterlm plan` request: every public flag as one typed value, resolved into the planner's
inputs, and rendered back into the exact command line that reproduces it.

`PlanRequest` holds what a user types (`--parallel t=8,p=16`, `--stage-layers …`, `model.*=…`
overrides); `resolve()` turns it into a `Workload`, a `Cluster` and an `Execution`; `to_argv()`
is its inverse. `plan --validate` stores each published run as a `PlanRequest`, so every row
is by construction a command anyone can type (tests run those commands through the CLI).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from clusterlm.config.pipeline import parse_stage_layers
from clusterlm.cluster.executable import defaults_from_run_config
from clusterlm.cluster.spec import Cluster, load_cluster
from clusterlm.cluster.workload import Execution, Workload
from clusterlm.config.base import apply_overrides, load_yaml, validate
from clusterlm.config.run import RunConfig
from clusterlm.errors import ConfigError, UsageError
from clusterlm.config.model import ModelConfig

DEGREE_NAMES = {"t": "tp", "tp": "tp", "p": "pp", "pp": "pp", "d": "dp", "dp": "dp", "c": "cp", "cp": "cp",
                "b": "micro_batch", "v": "interleave"}


@dataclass(frozen=True)
class PlanRequest:
    """One `clusterlm plan` invocation (flag names: the field names with `_` → `-`)."""

    model: str | None = None
    overrides: tuple[str, ...] = ()  # model.KEY=VALUE
    cluster: str | None = None
    gpus: int | None = None
    tokens: str | None = None
    steps: int | None = None
    batch: int | None = None
    seq: int | None = None
    parallel: str | None = None
    micro_batch: int | None = None
    interleave: int = 1
    stage_layers: str | None = None
    pipeline_split: str = "auto"
    recompute: str | None = None
    recompute_fraction: float = 1.0
    sequence_parallel: bool = False
    zero: int | None = None
    dp_shard: int | None = None
    precision: str | None = None
    grad_dtype: str | None = None
    fp8: bool = False
    attention: str = "flash"
    elementwise: str = "fused"
    tp_overlap: bool = False
    dp_overlap: bool | None = None  # None: on for accelerators, off on CPUs
    grad_accum_fusion: bool = True
    batch_rounding: str = "nearest"
    batch_rampup: str | None = None
    vocab: int | None = None
    extra: dict = field(default_factory=dict, compare=False)  # not a flag: notes carried along

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> PlanRequest:
        names = {f.name for f in fields(cls)} - {"extra"}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown plan setting(s): {', '.join(sorted(unknown))}")
        data = dict(data)
        if "overrides" in data:
            data["overrides"] = tuple(data["overrides"])
        return cls(**data)


@dataclass(frozen=True)
class Resolved:
    workload: Workload
    cluster: Cluster
    execution: Execution  # with --search: the base the search varies
    base_run: RunConfig | None


# ------------------------------------------------------------------------------------ parsing
def parse_tokens(text: str) -> float:
    m = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([KMBT]?)\s*", text, re.IGNORECASE)
    if not m:
        raise UsageError(f"--tokens: expected a number like 300e9, 2B or 15T, got '{text}'")
    scale = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}[m.group(2).upper()]
    value = float(m.group(1)) * scale
    if value <= 0:
        raise UsageError("--tokens must be positive")
    return value


def parse_parallel(text: str) -> dict[str, int]:
    """`t=8,p=35,d=8` (also `tp=`, `pp=`, `dp=`, `c=`/`cp=` context, `b=` micro-batch, `v=`) → degrees."""
    out: dict[str, int] = {}
    for part in filter(None, (x.strip() for x in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in DEGREE_NAMES:
            raise ConfigError(f"--parallel: expected items like t=8,p=4,c=2,d=16, got '{part}'")
        try:
            degree = int(value)
        except ValueError:
            raise ConfigError(f"--parallel: '{part}' needs an integer value") from None
        if degree < 1:
            raise ConfigError(f"--parallel: '{part}' must be ≥ 1")
        out[DEGREE_NAMES[key.strip()]] = degree
    return out


def complete_degrees(degrees: dict[str, int], num_gpus: int) -> dict[str, int]:
    """Fill the missing data-parallel degree from the accelerator count: d = N/(t·c·p)."""
    tp, pp, cp = degrees.get("tp", 1), degrees.get("pp", 1), degrees.get("cp", 1)
    if "dp" not in degrees:
        if num_gpus % (tp * pp * cp):
            raise ConfigError(f"t·c·p = {tp * cp * pp} does not divide the {num_gpus} accelerators")
        degrees = {**degrees, "dp": num_gpus // (tp * pp * cp)}
    return degrees


def parse_rampup(text: str) -> tuple[int, int, int]:
    """`192,16,9765625` (start batch, increment, ramp samples; Megatron's --rampup-batch-size)."""
    try:
        start, inc, samples = (int(float(x)) for x in text.replace(" ", "").split(","))
    except ValueError:
        raise ConfigError(f"--batch-rampup: expected START,INCREMENT,SAMPLES like 192,16,9765625, "
                          f"got '{text}'") from None
    return start, inc, samples


# ------------------------------------------------------------------------------------ resolving
def resolve_model(text: str | None, vocab: int | None, overrides: tuple[str, ...] = ()) -> tuple[
        ModelConfig, dict, RunConfig | None]:
    """Preset name, YAML file or bare `model.*` overrides → (ModelConfig, run-config defaults, run config)."""
    bad = [o for o in overrides if not o.strip().startswith("model.")]
    if bad:
        raise ConfigError(f"plan overrides must set model keys (model.n_layer=70), got {bad[0]!r}")
    if text is None and not overrides:
        raise UsageError("--model is required (a preset, a YAML file, or model.KEY=VALUE overrides)")
    defaults: dict = {}
    base_run = None
    model_data: dict[str, Any] = {}
    if text is not None:
        path = Path(text)
        if path.suffix in (".yaml", ".yml") or path.exists():
            data = load_yaml(path)
            if "model" in data or "train" in data:
                base_run = validate(RunConfig, data)
                model_data = base_run.model.model_dump(exclude_none=True)
                if base_run.model.vocab_size is None and vocab is None:
                    vocab = base_run.data.vocab_size  # the tokenizer `prepare` trains has this size
                defaults = defaults_from_run_config(base_run)
            else:
                model_data = data
        else:
            model_data = {"preset": text}
    model_data = apply_overrides({"model": model_data}, list(overrides))["model"]
    model = validate(ModelConfig, model_data, prefix="model")
    if vocab is not None:
        model = model.model_copy(update={"vocab_size": vocab})
    if model.vocab_size is None:
        raise ConfigError(f"model '{text or 'from overrides'}' has no vocab_size; pass --vocab N")
    return model, defaults, base_run


def resolve(req: PlanRequest, search: bool = False) -> Resolved:
    """Turn a request into the estimator's inputs (ConfigError/UsageError on bad input)."""
    if req.cluster is None:
        raise UsageError("--cluster is required (a preset name or a cluster spec YAML)")
    model, defaults, base_run = resolve_model(req.model, req.vocab, req.overrides)
    cluster = load_cluster(req.cluster, req.gpus)
    seq = req.seq or defaults.get("seq_len") or model.max_seq_len
    # Degrees: --parallel, else the run config's parallel section; the data-parallel degree is
    # what remains of the accelerators.
    given = parse_parallel(req.parallel) if req.parallel else dict(defaults.get("parallel", {}))
    degrees = complete_degrees(given, cluster.num_gpus)
    batch = req.batch or defaults.get("batch")
    if batch is None and defaults.get("batch_per_replica"):
        batch = defaults["batch_per_replica"] * (cluster.num_gpus if search else degrees["dp"])
    if batch is None:  # one micro-batch per data-parallel rank (per accelerator when searching)
        batch = cluster.num_gpus if search else degrees["dp"] * (degrees.get("micro_batch") or req.micro_batch or 1)
    workload = Workload(model=model, seq_len=seq, global_batch=batch,
                        total_tokens=parse_tokens(req.tokens) if req.tokens else None, steps=req.steps,
                        batch_rampup=parse_rampup(req.batch_rampup) if req.batch_rampup else None,
                        batch_rounding=req.batch_rounding)
    precision = req.precision or defaults.get("precision") or ("fp32" if cluster.acc.kind == "cpu" else "bf16")
    micro = degrees.pop("micro_batch", None) or req.micro_batch or defaults.get("micro_batch") or 1
    interleave = degrees.pop("interleave", None) or (req.interleave if req.interleave != 1 else None) \
        or defaults.get("interleave") or 1
    stage_layers = parse_stage_layers(req.stage_layers) if req.stage_layers else defaults.get("stage_layers")
    zero = req.zero if req.zero is not None else (defaults.get("zero", 0) if degrees["dp"] > 1 else 0)
    execution = Execution(
        **degrees, micro_batch=micro, interleave=interleave,
        stage_layers=stage_layers,
        pipeline_split=req.pipeline_split, recompute=req.recompute or defaults.get("recompute") or "none",
        recompute_fraction=req.recompute_fraction,
        sequence_parallel=req.sequence_parallel or defaults.get("sequence_parallel", False), zero=zero,
        dp_shard=req.dp_shard if req.dp_shard is not None else defaults.get("dp_shard"),
        precision=precision, grad_dtype=req.grad_dtype, fp8=req.fp8, attention=req.attention,
        elementwise=req.elementwise,
        tp_overlap=req.tp_overlap, grad_accum_fusion=req.grad_accum_fusion,
        # gloo on CPUs runs collectives on the cores that compute: nothing hides behind compute.
        dp_overlap=req.dp_overlap if req.dp_overlap is not None else cluster.acc.kind != "cpu")
    return Resolved(workload=workload, cluster=cluster, execution=execution, base_run=base_run)


# ------------------------------------------------------------------------------------ rendering
_FLAG_ORDER = ("model", "cluster", "gpus", "batch", "seq", "tokens", "steps", "parallel", "micro_batch",
               "interleave", "stage_layers", "pipeline_split", "recompute", "recompute_fraction",
               "sequence_parallel", "zero", "dp_shard", "precision", "grad_dtype", "fp8", "attention", "elementwise",
               "tp_overlap", "dp_overlap", "grad_accum_fusion", "batch_rounding", "batch_rampup", "vocab")
_DEFAULTS = PlanRequest()
_NEGATABLE = ("dp_overlap", "grad_accum_fusion")  # BooleanOptionalAction flags


def to_argv(req: PlanRequest) -> list[str]:
    """The `clusterlm plan` arguments that reproduce `req` (defaults left out)."""
    argv: list[str] = []
    for name in _FLAG_ORDER:
        value = getattr(req, name)
        if value == getattr(_DEFAULTS, name):
            continue
        flag = "--" + name.replace("_", "-")
        if name in _NEGATABLE:
            argv.append(flag if value else "--no-" + name.replace("_", "-"))
        elif isinstance(value, bool):
            argv.append(flag)
        else:
            argv += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return argv + list(req.overrides)


def command(req: PlanRequest) -> str:
    """The exact shell command (`clusterlm plan …`)."""
    return shlex.join(["clusterlm", "plan", *to_argv(req)])


def from_namespace(args: Any) -> PlanRequest:
    """A request from `clusterlm plan`'s parsed arguments (argparse dests are the field names)."""
    values = {f.name: getattr(args, f.name) for f in fields(PlanRequest) if f.name != "extra" and hasattr(args, f.name)}
    values["overrides"] = tuple(values.get("overrides") or ())
    return replace(PlanRequest(), **values)
