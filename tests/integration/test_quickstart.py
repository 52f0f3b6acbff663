"""`clusterlm quickstart` end to end on a tiny corpus and model (the real recipe runs in `make run`)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import yaml

from clusterlm.cli.main import main
from clusterlm.config.recipes import recipe_names, recipes_dir, resolve_config_path
from clusterlm.config.run import load_run_config


@pytest.mark.parametrize("name", ["quickstart", "cpu-60min"])
def test_cpu_recipes_are_valid_time_budgeted_runs(name):
    assert name in recipe_names()
    cfg = load_run_config(name)
    assert cfg.data.inputs == []  # the embedded default corpus
    assert cfg.train.seq_len <= cfg.model.max_seq_len
    assert cfg.train.max_minutes is not None and cfg.train.max_minutes <= 60


def test_default_recipe_is_the_packaged_config():
    assert resolve_config_path("quickstart") == recipes_dir() / "quickstart.yaml"
    cfg = load_run_config("quickstart")
    assert cfg.data.inputs == [] and cfg.train.max_minutes is not None  # default corpus, time budget


def test_quickstart_prepares_trains_evaluates_generates_and_reuses(tmp_path, capsys):
    rng = random.Random(0)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    words = "import os def main return self value for in range print class none".split()
    for i in range(30):
        body = "\n".join(" ".join(rng.choice(words) for _ in range(8)) for _ in range(30))
        (corpus / f"m{i}.py").write_text(f"# module {i}\n{body}\n")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "data": {"dir": str(tmp_path / "data"), "inputs": [str(corpus)], "vocab_size": 300, "val_fraction": 0.2},
        "model": {"preset": "tiny", "n_layer": 1, "d_model": 32, "n_head": 2, "max_seq_len": 32},
        "train": {"out_dir": str(tmp_path / "run"), "seq_len": 32, "micro_batch": 4, "max_minutes": 0.01,
                  "max_steps": 30, "warmup_steps": 2, "eval_every": 10, "eval_batches": 2,
                  "precision": "fp32", "tensorboard": False},
    }))
    argv = ["quickstart", "--config", str(recipe), "--json", "--quiet", "--max-new-tokens", "8"]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["dataset_reused"] is False and first["steps"] >= 1
    for key in ("val_bits_per_byte", "gzip_bits_per_byte", "xz_bits_per_byte", "tokens_per_s", "mfu"):
        assert first[key] > 0, key
    assert first["sample"].startswith("def ") and len(first["sample"]) > len("def ")
    assert Path(first["plots"]).is_file()
    data_bytes = json.loads((tmp_path / "data" / "manifest.json").read_text())["splits"]["val"]["bytes"]
    assert first["held_out_bytes"] == data_bytes  # compressors see exactly the held-out text

    # Second run: the dataset is reused and the finished run is only re-evaluated.
    assert main(argv) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["dataset_reused"] is True and second["stop_reason"] == "already_complete"
    assert second["val_bits_per_byte"] == pytest.approx(first["val_bits_per_byte"])

    # Human-readable summary names both compressors and where the plots are.
    assert main(argv[:-4] + ["--quiet", "--max-new-tokens", "4"]) == 0
    text = capsys.readouterr().out
    assert "gzip -9" in text and "xz -9e" in text and "loss.png" in text


def test_quickstart_bad_override_is_a_one_line_error(tmp_path, capsys):
    assert main(["quickstart", "train.no_such_key=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "train.no_such_key" in err
