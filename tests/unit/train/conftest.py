"""A tiny prepared dataset (shared, read-only) and a tiny run config for the trainer tests."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from clusterlm.config.data import DataConfig
from clusterlm.config.run import RunConfig, load_run_config

WORDS = ("def return class import self value index for in range if else while print yield lambda "
         "alpha beta gamma delta list dict tuple none true false").split()


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~25k tokens of pseudo-code, vocab 300, made with the real `prepare_dataset`."""
    from clusterlm.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("train-data")
    rng = random.Random(0)
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(40):
        lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) for _ in range(40)]
        (corpus / f"doc{i:02d}.txt").write_text(f"# doc {i}\n" + "\n".join(lines) + "\n", encoding="utf-8")
    out = root / "dataset"
    prepare_dataset(DataConfig(inputs=[str(corpus)], vocab_size=300, val_fraction=0.2), out)
    return out


def tiny_run_config(data_dir: Path, out_dir: Path, *overrides: str) -> RunConfig:
    """A 1-layer, width-32 GPT on 16-token windows: a training step takes a few milliseconds."""
    base = [
        "model.preset=tiny", "model.n_layer=1", "model.d_model=32", "model.n_head=2",
        f"data.dir={data_dir}", f"train.out_dir={out_dir}",
        "train.max_steps=8", "train.warmup_steps=2", "train.seq_len=16", "train.micro_batch=2",
        "train.eval_every=4", "train.eval_batches=2", "train.ckpt_every=4", "train.log_every=2",
        "train.precision=fp32", "train.tensorboard=false", "train.plots=false",
    ]
    return load_run_config(None, base + list(overrides))


@pytest.fixture(autouse=True)
def one_thread():
    """Millisecond steps of tiny models are dominated by thread wake-ups on shared CI cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_cfg(tiny_data: Path, tmp_path: Path):
    """`tiny_cfg("a", "train.max_steps=4")` → RunConfig writing to tmp_path/"a"."""

    def make(name: str, *overrides: str) -> RunConfig:
        return tiny_run_config(tiny_data, tmp_path / name, *overrides)

    return make
