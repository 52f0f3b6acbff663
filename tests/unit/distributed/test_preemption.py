"""The trainer's side of preemption: a stop signal, then a second one while the checkpoint is written.

On Slurm's warning (or a preemption) the batch script sends SIGTERM to the training
processes; they finish the step, checkpoint and exit. When the time limit arrives during
that save, Slurm sends SIGTERM again (and later SIGKILL, see tests/unit/train/
test_kill_during_save.py); a user may also press Ctrl-C twice. None of these may leave a
damaged checkpoint, and the resumed run must end with the uninterrupted run's weights.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clusterlm.checkpoint.formats import save_model_dir
from clusterlm.checkpoint.backends import LocalBackend, load_train_state
from clusterlm.train.trainer import Trainer

STOP_AT = 3  # the first SIGTERM arrives at the end of step 3; periodic checkpoints every 2 steps


class SignalDuringSave(LocalBackend):
    """Writes the stop checkpoint's weights, then sends `sig` to this process, then the rest."""

    def __init__(self, sig: signal.Signals) -> None:
        self.sig = sig

    def write(self, directory, model, model_cfg, tokenizer_path, meta, states):
        if meta["step"] == STOP_AT:
            save_model_dir(directory, model, model_cfg, tokenizer_path, meta)  # half a checkpoint on disk
            os.kill(os.getpid(), self.sig)  # its handler runs here, in the middle of the save
        super().write(directory, model, model_cfg, tokenizer_path, meta, states)


def stop_at_step(trainer: Trainer) -> None:
    if trainer.state.step == STOP_AT:  # after the step: the loop stops before the next one
        os.kill(os.getpid(), signal.SIGTERM)  # as the batch script's `scancel --signal=TERM` does


def weights(result) -> dict[str, torch.Tensor]:
    return load_file(str(result.checkpoint / "model.safetensors"))


@pytest.fixture
def uninterrupted(tiny_cfg):
    return weights(Trainer(tiny_cfg("straight", "train.ckpt_every=2", "train.max_steps=6"), progress=False).run())


def test_second_sigterm_during_the_save_keeps_it_whole(tiny_cfg, uninterrupted):
    cfg = tiny_cfg("run", "train.ckpt_every=2", "train.max_steps=6")
    first = Trainer(cfg, progress=False, on_step_end=stop_at_step,
                    checkpoint_backend=SignalDuringSave(signal.SIGTERM)).run()
    assert first.stop_reason == "interrupted" and first.step == STOP_AT
    run = Path(cfg.train.out_dir)
    assert (run / "latest").read_text().strip() == f"step-{STOP_AT:07d}"
    assert load_train_state(first.checkpoint)["train"]["step"] == STOP_AT  # complete: weights and state
    resumed = Trainer(cfg, progress=False)
    result = resumed.run()
    assert resumed.resumed_from.name == f"step-{STOP_AT:07d}" and result.step == 6
    final = weights(result)
    assert all(torch.equal(final[k], uninterrupted[k]) for k in uninterrupted)


def test_ctrl_c_during_the_save_keeps_the_previous_checkpoint(tiny_cfg, uninterrupted):
    """A second SIGINT stops at once: the half-written checkpoint is never published."""
    cfg = tiny_cfg("run", "train.ckpt_every=2", "train.max_steps=6")
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, progress=False, on_step_end=stop_at_step, checkpoint_backend=SignalDuringSave(signal.SIGINT)).run()
    run = Path(cfg.train.out_dir)
    assert (run / "latest").read_text().strip() == "step-0000002"
    resumed = Trainer(cfg, progress=False)
    final = weights(resumed.run())
    assert resumed.resumed_from.name == "step-0000002"
    assert all(torch.equal(final[k], uninterrupted[k]) for k in uninterrupted)
