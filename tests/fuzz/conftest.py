"""The fuzz suite's workspace: a tiny dataset, a trained run (single-file checkpoints) and a DCP run.

Every case runs a verb in this process through `clusterlm.cli.main.main` (a subprocess costs ~3 s
on the 2-core CI machine) and captures file descriptors 1 and 2 (`capfd`), so anything torch or a
library prints — not only what Python writes to `sys.stderr` — counts against the one-line rule.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fuzzhelp import TINY

from clusterlm.cli.main import main


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one intra-op thread (`tests/conftest.py`: tiny models on shared CI cores)."""
    yield


@pytest.fixture(scope="session")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/data (dataset), root/gpt (a finished run), root/dcp (the same with DCP checkpoints)."""
    from clusterlm.checkpoint.backends import DCPBackend
    from clusterlm.config.run import load_run_config
    from clusterlm.train.trainer import Trainer

    root = tmp_path_factory.mktemp("fuzz")
    rng = random.Random(0)
    words = "for in range def return yield class self none true lambda print".split()
    src = root / "src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}.py").write_text("\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(30)))
    assert main(["prepare", str(src), "--out", str(root / "data"), "--vocab-size", "300", "--val-fraction", "0.2",
                 "--quiet"]) == 0
    data = [f"data.dir={root / 'data'}"]
    assert main(["train", *TINY, *data, f"train.out_dir={root / 'gpt'}", "--quiet"]) == 0
    cfg = load_run_config(None, TINY + data + [f"train.out_dir={root / 'dcp'}"])
    Trainer(cfg, checkpoint_backend=DCPBackend(), progress=False).run()
    (root / "a-file").write_text("not a directory\n")
    return root
