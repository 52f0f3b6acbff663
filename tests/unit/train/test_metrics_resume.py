"""`metrics.jsonl` of a run that was interrupted and crashed, then resumed, equals the uninterrupted
run's record by record (timing fields aside): the running log window is checkpointed."""

from __future__ import annotations

import pytest

from clusterlm.train.metrics import read_metrics
from clusterlm.train.trainer import Trainer

pytestmark = pytest.mark.timeout(120)

# Measured, not computed: they differ between any two runs (and the peak is measured per run dir).
TIMING = {"step_time_s", "tokens_per_s", "mfu", "elapsed_s", "peak_mem_gib", "peak_flops", "peak_flops_source",
          "comm_time_s", "compute_only_s", "comm_fraction"}


def _records(run_dir):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_metrics(run_dir / "metrics.jsonl")]


def test_metrics_after_an_interrupt_a_crash_and_resumes_equal_the_uninterrupted_run(tiny_cfg):
    # log every 4 steps, checkpoint every 3: the interrupt (at 6) and the crash (after 10, last
    # checkpoint 9) both fall inside a log window.
    extra = ("train.log_every=4", "train.ckpt_every=3", "train.eval_every=5", "train.max_steps=13")
    straight = Trainer(tiny_cfg("a", *extra), progress=False).run()

    class Crash(Exception):
        pass

    def stop_at_6(trainer):
        if trainer.state.step == 6:
            trainer.request_stop()

    def crash_at_10(trainer):
        if trainer.state.step == 10:
            raise Crash

    assert Trainer(tiny_cfg("b", *extra), progress=False, on_step_end=stop_at_6).run().step == 6
    with pytest.raises(Crash):
        Trainer(tiny_cfg("b", *extra), progress=False, on_step_end=crash_at_10).run()
    resumed = Trainer(tiny_cfg("b", *extra), progress=False)
    result = resumed.run()
    assert resumed.resumed_from.name == "step-0000009"
    expected, got = _records(straight.run_dir), _records(result.run_dir)
    assert [r["kind"] for r in got] == [r["kind"] for r in expected]
    assert [r["step"] for r in got if r["kind"] == "train"] == [4, 8, 12, 13]
    for a, b in zip(expected, got):
        assert a == b
