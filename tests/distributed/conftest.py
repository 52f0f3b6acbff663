"""Fixtures for the multi-process tests: a tiny prepared dataset and trainer configs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _train_conftest() -> ModuleType:
    # The trainer tests' conftest already builds a tiny dataset with the real `prepare_dataset`;
    # reuse that fixture rather than a second copy of the corpus generator.
    path = Path(__file__).resolve().parents[1] / "unit" / "train" / "conftest.py"
    spec = importlib.util.spec_from_file_location("clusterlm_train_test_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tiny_data = _train_conftest().tiny_data


@pytest.fixture(scope="session")
def dist_data(tiny_data: Path) -> Path:
    """~25k tokens of pseudo-code, vocab 300 (shared with tests/unit/train)."""
    return tiny_data


def train_args(data_dir: Path, out_dir: Path, *overrides: str) -> list[str]:
    """`clusterlm train` overrides for a 2-layer width-32 model on 16-token windows, global batch 8."""
    return [
        "model.preset=tiny", "model.d_model=32", "model.n_head=4", "model.max_seq_len=32",
        f"data.dir={data_dir}", f"train.out_dir={out_dir}", "train.seq_len=16", "train.micro_batch=4",
        "train.batch_size=8", "train.max_steps=8", "train.warmup_steps=2", "train.lr=3e-3",
        "train.eval_every=100", "train.eval_batches=2", "train.ckpt_every=4", "train.log_every=1",
        "train.precision=fp32", "train.tensorboard=false", "train.plots=false", "parallel.timeout_s=60",
        *overrides,
    ]
