"""Stand-ins for Slurm's commands (small executables put first on PATH), and the trainer
tests' tiny dataset and run config.

The stand-ins let the default suite check the command lines clusterlm runs, its parsing of real
output (recorded from Slurm 22.05) and the batch script's signal handling, with no Slurm
installed. Each fake appends its arguments to `<dir>/<name>.log`.
"""

from __future__ import annotations

import importlib.util
import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def fake_bin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """`fake_bin(sbatch="echo 42")` writes `sbatch` (a bash script with that body) into a
    directory that leads PATH; with `only=True` the PATH holds nothing else (no real Slurm,
    nor anything else), so a command that is missing stays missing."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()

    def make(only: bool = False, **bodies: str) -> Path:
        for name, body in bodies.items():
            path = bin_dir / name
            path.write_text("#!/bin/bash\n" f'echo "$*" >> "{bin_dir}/{name}.log"\n' + textwrap.dedent(body) + "\n")
            path.chmod(0o755)
        keep = [] if only else [p for p in os.environ.get("PATH", "").split(os.pathsep) if p]
        if only:  # bash itself and coreutils for the fakes' bodies, but no Slurm command
            keep = [str(bin_dir / "sys")]
            (bin_dir / "sys").mkdir(exist_ok=True)
            for tool in ("bash", "cat", "sleep", "kill", "date", "head", "seq", "ps"):
                for root in ("/usr/bin", "/bin"):
                    if Path(root, tool).exists() and not (bin_dir / "sys" / tool).exists():
                        (bin_dir / "sys" / tool).symlink_to(Path(root, tool))
        monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), *keep]))
        return bin_dir

    return make


def _train_conftest():
    # The trainer tests build a tiny dataset with the real `prepare_dataset`; reuse it.
    path = Path(__file__).resolve().parents[1] / "train" / "conftest.py"
    spec = importlib.util.spec_from_file_location("clusterlm_train_conftest_for_distributed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_train = _train_conftest()
tiny_data = _train.tiny_data  # fixtures: the dataset, and `tiny_cfg(name, *overrides)` → RunConfig
tiny_cfg = _train.tiny_cfg
