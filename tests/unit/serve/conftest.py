from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_threaded(one_thread):
    """Every serve test decodes batch 1 on a tiny model: see `one_thread` in tests/conftest.py."""
    yield
