"""A `kill -9` in the middle of writing a checkpoint never damages the previous one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file

from clusterlm.config.base import dump_yaml
from clusterlm.checkpoint.backends import load_train_state
from clusterlm.train.trainer import Trainer

# Runs in a child process: training whose second checkpoint hangs half-written
# (weights on disk, train_state.pt not yet) until the test kills it.
CHILD = r"""
import sys, time
from pathlib import Path
from clusterlm.config.run import load_run_config
from clusterlm.checkpoint.formats import save_model_dir
from clusterlm.checkpoint.backends import LocalBackend
from clusterlm.train.trainer import Trainer

config_path, marker = sys.argv[1], Path(sys.argv[2])

class HangingBackend(LocalBackend):
    def write(self, directory, model, model_cfg, tokenizer_path, meta, states):
        if meta["step"] == 4:
            save_model_dir(directory, model, model_cfg, tokenizer_path, meta)
            marker.write_text(str(directory))
            time.sleep(120)
        super().write(directory, model, model_cfg, tokenizer_path, meta, states)

Trainer(load_run_config(config_path), progress=False, checkpoint_backend=HangingBackend()).run()
"""


def test_kill_9_during_save_keeps_previous_checkpoint(tiny_cfg, tmp_path):
    cfg = tiny_cfg("run", "train.ckpt_every=2", "train.max_steps=6")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(dump_yaml(cfg))
    marker = tmp_path / "saving"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(config_path), str(marker)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "child never reached the save"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    assert (run / "latest").read_text().strip() == "step-0000002"
    assert sorted(p.name for p in ckpts.iterdir() if not p.name.startswith(".")) == ["step-0000002"]
    half = [p for p in ckpts.iterdir() if p.name.startswith(".step-0000004")]
    assert len(half) == 1 and (half[0] / "model.safetensors").exists()  # killed mid-save
    assert load_train_state(ckpts / "step-0000002")["train"]["step"] == 2  # previous one intact

    # Re-running resumes from step 2, clears the debris, and ends where an uninterrupted run ends.
    resumed = Trainer(cfg, progress=False)
    result = resumed.run()
    assert resumed.resumed_from.name == "step-0000002"
    assert not any(p.name.startswith(".") for p in ckpts.iterdir())
    straight = Trainer(tiny_cfg("straight", "train.ckpt_every=2", "train.max_steps=6"), progress=False).run()
    a = load_file(str(straight.checkpoint / "model.safetensors"))
    b = load_file(str(result.checkpoint / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
