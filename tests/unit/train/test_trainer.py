from __future__ import annotations

import json

import pytest
import yaml
import torch
from safetensors.torch import load_file

from clusterlm.errors import TrainingError
from clusterlm.train.trainer import Trainer


def _weights(result) -> dict[str, torch.Tensor]:
    return load_file(str(result.checkpoint / "model.safetensors"))


def _records(run_dir, kind):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_run_writes_checkpoints_metrics_plots_and_learns(tiny_cfg):
    cfg = tiny_cfg("run", "train.max_steps=24", "train.ckpt_every=5", "train.keep_last=2", "train.lr=3e-3",
                   "train.plots=true", "train.tensorboard=true", "train.eval_every=8")
    result = Trainer(cfg, progress=False).run()
    run = result.run_dir
    assert result.stop_reason == "max_steps" and result.step == 24
    # every 5 steps + the end, only the last two kept; `latest` names the final one
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-0000020", "step-0000024"]
    assert (run / "latest").read_text().strip() == "step-0000024"
    ckpt = run / "checkpoints" / "step-0000024"
    assert {p.name for p in ckpt.iterdir()} == {"model.safetensors", "meta.json", "tokenizer.json",
                                                 "train_state.pt"}
    state = torch.load(ckpt / "train_state.pt", weights_only=True)
    assert set(state) == {"optimizer", "schedule", "loader", "train", "rng"}
    assert state["train"]["step"] == 24 and state["loader"]["batch_index"] == 24
    train = _records(run, "train")
    assert [r["step"] for r in train] == list(range(2, 25, 2))
    for key in ("loss", "lr", "step_time_s", "tokens_per_s", "mfu", "peak_mem_gib", "tokens_seen"):
        assert train[-1][key] is not None
    assert train[-1]["loss"] < train[0]["loss"] - 0.5  # it learns
    val = _records(run, "val")
    assert [r["step"] for r in val] == [8, 16, 24]
    assert val[-1]["generalization_gap"] == pytest.approx(val[-1]["val_loss"] - val[-1]["train_loss"])
    (summary,) = _records(run, "summary")
    assert summary["tokens_seen"] == 24 * 2 * 16 and 0 < summary["mfu"] < 1
    assert (run / "plots" / "loss.png").stat().st_size > 1000
    assert any((run / "tb").iterdir())
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["model"]["vocab_size"] == 300  # filled in from the dataset


def test_resume_is_bitwise_identical(tiny_cfg):
    """Interrupt (graceful stop at 3), crash (after 6, last checkpoint 4), resume → same as uninterrupted."""
    extra = ("model.dropout=0.1", "train.grad_accum=2", "train.augment=span_mask", "train.eval_every=3",
             "train.max_steps=9")
    straight = Trainer(tiny_cfg("a", *extra), progress=False).run()

    class Crash(Exception):
        pass

    def stop_at_3(trainer):
        if trainer.state.step == 3:
            trainer.request_stop()

    def crash_at_6(trainer):
        if trainer.state.step == 6:
            raise Crash

    first = Trainer(tiny_cfg("b", *extra), progress=False, on_step_end=stop_at_3).run()
    assert first.stop_reason == "interrupted" and first.step == 3
    with pytest.raises(Crash):
        Trainer(tiny_cfg("b", *extra), progress=False, on_step_end=crash_at_6).run()
    resumed = Trainer(tiny_cfg("b", *extra), progress=False)
    result = resumed.run()
    assert resumed.resumed_from.name == "step-0000004"  # steps 5–6 were lost in the crash and redone
    a, b = _weights(straight), _weights(result)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = torch.load(straight.checkpoint / "train_state.pt", weights_only=True)
    sb = torch.load(result.checkpoint / "train_state.pt", weights_only=True)
    for i, moments in sa["optimizer"]["state"].items():
        assert torch.equal(moments["exp_avg"], sb["optimizer"]["state"][i]["exp_avg"])
        assert torch.equal(moments["exp_avg_sq"], sb["optimizer"]["state"][i]["exp_avg_sq"])
    assert sa["loader"] == sb["loader"] and torch.equal(sa["rng"]["torch"], sb["rng"]["torch"])
    # the metrics file reads like one run: crash leftovers after step 4 were dropped
    steps = [r["step"] for r in _records(result.run_dir, "train")]
    assert steps == sorted(steps) and len(steps) == len(set(steps))
    assert len(_records(result.run_dir, "summary")) == 1


def test_rerun_of_finished_run_changes_nothing(tiny_cfg):
    cfg = tiny_cfg("done", "train.max_steps=4")
    first = Trainer(cfg, progress=False).run()
    before = (first.checkpoint / "model.safetensors").read_bytes()
    again = Trainer(cfg, progress=False).run()
    assert again.stop_reason == "already_complete" and again.step == 4
    assert (first.checkpoint / "model.safetensors").read_bytes() == before


def test_grad_accumulation_equals_one_big_batch(tiny_cfg):
    """2 micro-batches of 2 with accumulation give the gradient of one batch of 4."""
    big = Trainer(tiny_cfg("big", "train.micro_batch=4", "train.max_steps=4"), progress=False)
    small = Trainer(tiny_cfg("small", "train.micro_batch=2", "train.grad_accum=2", "train.max_steps=4"),
                    progress=False)
    big.setup()
    small.setup()
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 300, (4, 17), generator=g)
    big.loader = iter([(x[:, :-1], x[:, 1:])])
    small.loader = iter([(x[:2, :-1], x[:2, 1:]), (x[2:, :-1], x[2:, 1:])])
    loss_big, norm_big, _ = big.train_step()
    loss_small, norm_small, _ = small.train_step()
    assert loss_small == pytest.approx(loss_big, rel=1e-6)
    assert norm_small == pytest.approx(norm_big, rel=1e-5)
    for p, q in zip(big.model.parameters(), small.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)


def test_nonfinite_steps_are_skipped_then_the_run_stops_with_a_usable_checkpoint(tiny_cfg):
    class PoisonedTrainer(Trainer):
        bad_steps = {2, 5, 6}

        def compute_loss(self, module, inputs, targets):
            loss = super().compute_loss(module, inputs, targets)
            return loss * float("nan") if self.state.step in self.bad_steps else loss

    trainer = PoisonedTrainer(tiny_cfg("nan", "train.max_nonfinite=3", "train.ckpt_every=100"), progress=False)
    snapshots = {}

    def remember(t):
        snapshots[t.state.step] = {k: v.clone() for k, v in t.model.state_dict().items()}

    trainer.on_step_end = remember
    with pytest.raises(TrainingError, match=r"stopped at step 7: 3 steps had a non-finite.*max_nonfinite=3"):
        trainer.run()
    assert TrainingError.exit_code == 1
    # skipped steps leave the weights exactly as they were
    assert all(torch.equal(snapshots[2][k], snapshots[3][k]) for k in snapshots[2])
    assert not all(torch.equal(snapshots[3][k], snapshots[4][k]) for k in snapshots[3])
    latest = trainer.ckpt.latest()
    assert latest.name == "step-0000007"
    saved = load_file(str(latest / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in saved.values())
    assert all(torch.equal(saved[k], snapshots[5][k]) for k in saved)  # steps 6–7 were skipped
    state = torch.load(latest / "train_state.pt", weights_only=True)
    assert state["train"]["nonfinite_steps"] == 3


def test_early_stopping_on_validation_patience(tiny_cfg):
    cfg = tiny_cfg("early", "train.max_steps=40", "train.eval_every=2", "train.early_stopping_patience=2",
                   "train.early_stopping_min_delta=100")  # no improvement can be large enough
    result = Trainer(cfg, progress=False).run()
    assert result.stop_reason == "early_stopping" and result.step == 6
    assert result.summary["best_val_step"] == 2


def test_activation_checkpointing_gives_the_same_training(tiny_cfg):
    plain = Trainer(tiny_cfg("plain", "model.dropout=0.1", "train.max_steps=3"), progress=False).run()
    ac = Trainer(tiny_cfg("ac", "model.dropout=0.1", "train.max_steps=3", "train.activation_checkpointing=true"),
                 progress=False).run()
    a, b = _weights(plain), _weights(ac)
    assert a.keys() == b.keys()  # the wrapper leaves state-dict keys alone
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_init_from_takes_weights_but_not_optimizer_state(tiny_cfg):
    source = Trainer(tiny_cfg("src", "train.max_steps=4"), progress=False).run()
    fresh = Trainer(tiny_cfg("dst", f"train.init_from={source.run_dir}"), progress=False)
    fresh.setup()
    weights = _weights(source)
    state = fresh.model.state_dict()
    assert all(torch.equal(weights[k], state[k]) for k in weights)
    assert fresh.state.step == 0 and not fresh.optimizer.state


def test_doc_shuffle_and_seeded_runs_are_deterministic(tiny_cfg):
    a = Trainer(tiny_cfg("a", "train.augment=doc_shuffle", "train.max_steps=3"), progress=False).run()
    b = Trainer(tiny_cfg("b", "train.augment=doc_shuffle", "train.max_steps=3"), progress=False).run()
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_hard_interrupt_mid_step_rewinds_to_the_step_start(tiny_cfg):
    """A KeyboardInterrupt between micro-batches saves the state from before the step; resume is exact."""
    extra = ("model.dropout=0.1", "train.grad_accum=2", "train.max_steps=6")

    class Interrupted(Trainer):
        calls = 0

        def compute_loss(self, module, inputs, targets):
            if self.state.step == 3:
                self.calls += 1
                if self.calls == 2:  # second micro-batch of step 3: the loader has moved on twice
                    raise KeyboardInterrupt
            return super().compute_loss(module, inputs, targets)

    straight = Trainer(tiny_cfg("a", *extra), progress=False).run()
    interrupted = Interrupted(tiny_cfg("b", *extra), progress=False)
    with pytest.raises(KeyboardInterrupt):
        interrupted.run()
    latest = interrupted.ckpt.latest()
    assert latest.name == "step-0000003"
    assert torch.load(latest / "train_state.pt", weights_only=True)["loader"]["batch_index"] == 6
    result = Trainer(tiny_cfg("b", *extra), progress=False).run()
    a, b = _weights(straight), _weights(result)
    assert all(torch.equal(a[k], b[k]) for k in a)
