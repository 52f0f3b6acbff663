"""Fixtures for the multi-process tests: a tiny prepared dataset and trainer configs."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

WORDS = ("def return class import self value index for in range if else while print yield lambda "
         "alpha beta gamma delta list dict tuple none true false").split()


@pytest.fixture(scope="session")
def dist_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~20k tokens of pseudo-code, vocab 300, made with the real `prepare_dataset`."""
    from clusterlm.config.data import DataConfig
    from clusterlm.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("dist-data")
    rng = random.Random(1)
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(30):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) for _ in range(40)]
        (corpus / f"doc{i:02d}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = root / "dataset"
    prepare_dataset(DataConfig(inputs=[str(corpus)], vocab_size=300, val_fraction=0.2), out)
    return out


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
