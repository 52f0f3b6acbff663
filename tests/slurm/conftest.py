"""The local Slurm cluster (scripts/local-slurm.sh) for the tests marked `slurm`.

These tests need root and Slurm's daemons, so they only run when asked for by marker
(`pytest -m slurm`, which `make test-slurm` does after bringing the cluster up); in any
other run they are deselected, not skipped. When asked for, a cluster that cannot be
brought up is an error, never a skip.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCAL_SLURM = REPO / "scripts" / "local-slurm.sh"
sys.path.insert(0, str(REPO / "tests" / "distributed"))  # harness.train_args: the parity tests' run


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "slurm" in (config.getoption("markexpr") or ""):
        return  # `-m slurm` (or an expression naming it) decides
    chosen = [item for item in items if item.get_closest_marker("slurm") is None]
    if len(chosen) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("slurm")])
        items[:] = chosen


@pytest.fixture(scope="session")
def slurm_cluster() -> Path:
    """The cluster's directory; up (idempotent) and SLURM_CONF set for this process and its children."""
    state_dir = Path(os.environ.setdefault("CLUSTERLM_SLURM_DIR", "/tmp/clusterlm-slurm"))
    proc = subprocess.run(["bash", str(LOCAL_SLURM), "up"], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.fail(f"scripts/local-slurm.sh up failed:\n{proc.stdout}{proc.stderr}", pytrace=False)
    os.environ["SLURM_CONF"] = str(state_dir / "slurm.conf")
    return state_dir


def _train_conftest():
    path = REPO / "tests" / "unit" / "train" / "conftest.py"
    spec = importlib.util.spec_from_file_location("clusterlm_train_conftest_for_slurm", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tiny_data = _train_conftest().tiny_data  # fixture: ~25k tokens of pseudo-code, vocab 300
