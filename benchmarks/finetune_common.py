"""Shared by the benchmarks/finetune_*.py scripts: run `clusterlm` commands, time them, pretrain a base.

Every step is a real CLI command (printed as it runs, so the docs can quote it), timed with
the wall clock; the figures each script prints come from the commands' `--json` output.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CLUSTERLM = [sys.executable, "-m", "clusterlm.cli.main"]


class Bench:
    def __init__(self, work: Path, threads: int | None = None) -> None:
        self.work = work
        # On a shared machine one intra-op thread per process avoids the stalls of a second
        # thread waiting for a busy core; on a quiet 2-core machine leave it unset (None).
        self.env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
        self.work.mkdir(parents=True, exist_ok=True)
        self.steps: list[dict[str, Any]] = []
        self.started = time.perf_counter()

    def run(self, name: str, args: list[str], parse_json: bool = False) -> Any:
        """Run `clusterlm ARGS`, echo the command, record its wall time; parsed stdout if `parse_json`."""
        shown = "clusterlm " + " ".join(shlex.quote(a) for a in args)
        print(f"$ {shown}", flush=True)
        t0 = time.perf_counter()
        proc = subprocess.run(CLUSTERLM + args, stdout=subprocess.PIPE, text=True, env=self.env)
        wall_s = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(f"step '{name}' failed (exit {proc.returncode}): {shown}")
        self.steps.append({"step": name, "command": shown, "wall_s": round(wall_s, 1)})
        print(f"  [{name}: {wall_s:.1f} s]", flush=True)
        return json.loads(proc.stdout) if parse_json else proc.stdout

    def dataset(self, task: str, name: str) -> Path:
        """`clusterlm finetune data TASK` into WORK/NAME, unless already built."""
        data = self.work / name
        if (data / "report.json").is_file():
            self.skip("build data", str(data))
        else:
            self.run("build data", ["finetune", "data", task, "--out", str(data), "--overwrite"])
        return data

    def skip(self, name: str, reason: str) -> None:
        self.steps.append({"step": name, "command": f"(reused: {reason})", "wall_s": 0.0})
        print(f"  [{name}: reused {reason}]", flush=True)

    @property
    def total_s(self) -> float:
        return time.perf_counter() - self.started

    def save(self, name: str, results: dict[str, Any]) -> Path:
        out = self.work / f"{name}_results.json"
        out.write_text(json.dumps({"steps": self.steps, "total_s": round(self.total_s, 1), **results},
                                  indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return out


def pretrain(bench: Bench, name: str, prepare_args: list[str], minutes: float) -> Path:
    """A small GPT (the `quickstart` recipe: 2 layers, width 128, 4096-token BPE, context 128) trained
    for `minutes` on a dataset prepared with `prepare_args`; reused when already complete."""
    data, run = bench.work / f"{name}_data", bench.work / f"{name}_base"
    if (data / "manifest.json").is_file():
        bench.skip(f"prepare {name}", str(data))
    else:
        bench.run(f"prepare {name}", ["prepare", *prepare_args, "--out", str(data), "--vocab-size", "4096",
                                      "--quiet", "--overwrite"])
    if (run / "latest").is_file():
        bench.skip(f"pretrain {name}", str(run))
    else:
        bench.run(f"pretrain {name}", ["train", "quickstart", f"data.dir={data}", f"train.out_dir={run}",
                                       f"train.max_minutes={minutes}", "train.tensorboard=false"])
    return run


def add_common_arguments(parser: Any) -> None:
    parser.add_argument("--work", default="runs/finetune-bench", help="working dir (datasets, models, runs)")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every command (default: torch's choice)")


def table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
