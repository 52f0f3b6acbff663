"""Fixtures for the multi-process tests: a tiny prepared dataset; helpers (harness, parity_loop) importable."""

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
