"""Property tests: any value of a numeric config key or CLI number is either accepted within its
range or refused with our own error — never another exception, never a value out of range."""

from __future__ import annotations

import errno
import math
import operator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterlm.cli.main import describe_failure, main
from clusterlm.config import limits as L
from clusterlm.config.parallel import ParallelConfig, ParallelPlan
from clusterlm.config.run import load_run_config
from clusterlm.errors import CheckpointError, ClusterLMError, ConfigError, DataError, DistributedError, UsageError

pytestmark = pytest.mark.timeout(120)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# What a user may type: small and huge ints, floats with nan/inf, and text.
NUMBERS = st.one_of(st.integers(-10, 10), st.integers(-(2**80), 2**80), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from(["nan", "inf", "-inf", "1e400", "0x10", "true", "", "many", "1_000", "[1]"]))
NUMERIC_KEYS = [
    "train.seed", "train.seq_len", "train.micro_batch", "train.grad_accum", "train.batch_size", "train.max_steps",
    "train.max_minutes", "train.lr", "train.min_lr_ratio", "train.warmup_steps", "train.weight_decay",
    "train.beta1", "train.beta2", "train.eps", "train.grad_clip", "train.eval_every", "train.eval_batches",
    "train.keep_last", "train.log_every", "train.augment_rate", "model.n_layer", "model.n_head", "model.n_kv_head",
    "model.d_model", "model.d_ff", "model.vocab_size", "model.max_seq_len", "model.dropout", "model.norm_eps",
    "model.rope_theta", "model.init_std", "parallel.dp_replicate", "parallel.dp_shard", "parallel.tp", "parallel.pp",
    "parallel.timeout_s", "parallel.ddp_bucket_mb", "parallel.fsdp_prefetch", "parallel.pp_virtual_stages",
]
_WITHIN = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt}  # annotated_types bounds


@FAST
@given(key=st.sampled_from(NUMERIC_KEYS), value=NUMBERS)
def test_any_config_number_is_accepted_in_range_or_a_config_error(key, value):
    try:
        cfg = load_run_config(None, [f"{key}={value}", "train.max_steps=1000000"] if key != "train.max_steps"
                              else [f"{key}={value}", "train.warmup_steps=0"])
    except ConfigError:
        return
    section, name = key.split(".")
    accepted = getattr(getattr(cfg, section), name)
    if isinstance(accepted, float):
        assert math.isfinite(accepted)
    if isinstance(accepted, (int, float)) and not isinstance(accepted, bool):
        # The key's own bounds, as its schema declares them from config/limits.py.
        for bound in type(getattr(cfg, section)).model_fields[name].metadata:
            for attr, within in _WITHIN.items():
                limit = getattr(bound, attr, None)
                if limit is not None:
                    assert within(accepted, limit), (key, accepted, bound)


@FAST
@given(name=st.text(min_size=1, max_size=8), value=st.one_of(st.integers(), st.floats()),
       low=st.one_of(st.none(), st.floats(-1e6, 1e6)), high=st.one_of(st.none(), st.floats(-1e6, 1e6)),
       low_open=st.booleans(), high_open=st.booleans())
def test_check_range_accepts_exactly_the_interval(name, value, low, high, low_open, high_open):
    inside = math.isfinite(value) and (low is None or (value > low if low_open else value >= low)) and (
        high is None or (value < high if high_open else value <= high))
    try:
        L.check_range(name, value, low, high, low_open=low_open, high_open=high_open)
    except UsageError as exc:
        assert not inside and str(exc).startswith(f"{name} must be")
    else:
        assert inside


@FAST
@given(degrees=st.tuples(*[st.integers(-2, 9)] * 4), world=st.integers(1, 64))
def test_parallel_degrees_multiply_to_the_world_or_are_refused(degrees, world):
    dp_replicate, dp_shard, tp, pp = degrees
    try:
        cfg = ParallelConfig(dp_replicate=dp_replicate, dp_shard=dp_shard, tp=tp, pp=pp)
        plan = ParallelPlan.resolve(cfg, world)
    except (ValueError, DistributedError):  # pydantic's ValueError: a degree out of range
        return
    assert plan.world_size == world and min(plan.dp_replicate, plan.dp_shard, plan.tp, plan.pp) >= 1


@FAST
@given(temperature=NUMBERS, top_k=NUMBERS, top_p=NUMBERS, seed=NUMBERS, max_new=NUMBERS)
def test_generation_numbers_are_valid_or_a_usage_error(temperature, top_k, top_p, seed, max_new):
    from clusterlm.generate.engine import GenerationSettings
    from clusterlm.generate.sampling import SamplingSettings

    def number(value, kind):
        try:
            return kind(value)
        except (ValueError, OverflowError, TypeError):
            return None

    try:
        sampling = SamplingSettings(temperature=number(temperature, float) or 0.0, top_k=number(top_k, int),
                                    top_p=number(top_p, float))
        GenerationSettings(max_new_tokens=number(max_new, int) or 0, sampling=sampling, seed=number(seed, int))
    except UsageError:
        return
    assert sampling.temperature == 0 or 1e-5 <= sampling.temperature <= 100


@FAST
@given(lr=NUMBERS, epochs=NUMBERS, batch=NUMBERS, warmup=NUMBERS, seed=NUMBERS)
def test_finetune_loop_numbers_are_valid_or_a_usage_error(lr, epochs, batch, warmup, seed):
    from clusterlm.finetune.loop import LoopSettings

    def f(value):
        try:
            return float(value)
        except (ValueError, OverflowError, TypeError):
            return 1.0

    settings_ = LoopSettings(lr=f(lr), epochs=f(epochs), batch_size=int(f(batch)) if math.isfinite(f(batch)) else 0,
                             warmup_fraction=f(warmup), seed=int(f(seed)) if math.isfinite(f(seed)) else -1)
    try:
        settings_.check()
    except UsageError:
        return
    assert settings_.lr > 0 and settings_.total_steps(10) >= 1


@FAST
@given(epochs=NUMBERS, lr=NUMBERS, seed=NUMBERS, batch=NUMBERS)
def test_theory_cli_numbers_run_or_give_one_error_line(capsys, epochs, lr, seed, batch):
    # small epoch counts run (a few ms); everything else must be refused before any work
    epochs_text = str(abs(epochs)) if isinstance(epochs, int) and abs(epochs) <= 20 else str(epochs)
    code = main(["theory", "classifier", "--epochs", epochs_text, "--lr", str(lr), "--seed", str(seed),
                 "--batch-size", str(batch), "--json"])
    err = capsys.readouterr().err
    assert code in (0, 2)
    if code == 2:
        assert err.startswith("error: ") and err.count("\n") == 1


JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=5)),
                       lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=4)), max_leaves=12)
TRAIN_FIELDS = ["step", "tokens_seen", "elapsed_s", "nonfinite_steps", "best_val_loss", "best_val_step",
                "evals_without_improvement", "last_val_loss", "last_train_eval_loss", "log_window", "log_comm_window"]


@FAST
@given(state=st.dictionaries(st.sampled_from(TRAIN_FIELDS + ["other"]), JSONISH, max_size=5), decay=JSONISH,
       loader=st.dictionaries(st.sampled_from(["batch_index", "seed", "mode", "split", "batch_size", "world_size"]),
                              JSONISH, max_size=4))
def test_garbled_train_states_are_refused_by_our_errors_only(state, decay, loader):
    from clusterlm.config.train import TrainConfig
    from clusterlm.data.loader import _check_state
    from clusterlm.train.optim import WarmupCosineSchedule
    from clusterlm.train.state import TrainState

    for restore in (lambda: TrainState().load_state_dict(state),
                    lambda: WarmupCosineSchedule.from_config(TrainConfig()).load_state_dict({"decay_start": decay}),
                    lambda: _check_state(loader)):
        try:
            restore()
        except (CheckpointError, DataError):
            pass
    schedule = WarmupCosineSchedule.from_config(TrainConfig())
    try:
        schedule.load_state_dict({"decay_start": decay})
    except CheckpointError:
        return
    assert math.isfinite(schedule.lr_at(500))  # whatever was accepted gives a usable learning rate


@FAST
@given(code=st.sampled_from(sorted(errno.errorcode)), path=st.text(max_size=20), text=st.text(max_size=40))
def test_every_os_error_maps_to_a_status_and_is_never_internal(code, path, text):
    message, status = describe_failure(OSError(code, text, path or None))
    assert status in (1, 2) and "internal error" not in message
    message, status = describe_failure(ClusterLMError(text))
    assert status == 2 and message == text
