"""`clusterlm launch --slurm`: a dry run runs write_job's checks and writes nothing; a real one writes
the same script."""

from __future__ import annotations

from pathlib import Path

import clusterlm
from clusterlm.cli.main import main

CONFIG = str(Path(clusterlm.__file__).parent / "configs" / "quickstart.yaml")


def test_dry_run_prints_the_script_a_real_run_writes(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["launch", "--slurm", "--dry-run", "--cpu", "--out", "job.sbatch", CONFIG]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("#!/bin/bash") and not (tmp_path / "job.sbatch").exists()
    assert main(["launch", "--slurm", "--cpu", "--out", "job.sbatch", CONFIG]) == 0
    assert (tmp_path / "job.sbatch").read_text() == printed


def test_dry_run_refuses_what_a_real_run_refuses_and_leaves_files_alone(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.sbatch").write_text("mine")
    assert main(["launch", "--slurm", "--dry-run", "--cpu", "--out", "job.sbatch", CONFIG]) == 2
    assert "--overwrite" in capsys.readouterr().err
    argv = ["launch", "--slurm", "--dry-run", "--cpu", "--overwrite", "--out", "job.sbatch", "--time", "00:10:00",
            "--step-time-s", "1000", CONFIG]  # one checkpoint interval is far longer than the time limit
    assert main(argv) == 2
    assert "shorter than one checkpoint interval" in capsys.readouterr().err
    assert (tmp_path / "job.sbatch").read_text() == "mine"
