"""The built wheel works on its own: presets, recipes and cluster specs are package data.

The wheel is built from this checkout and installed (without dependencies) into a fresh venv
outside the source tree; the venv sees the dependencies of the development venv through a
`.pth` line (a directory listed there is on sys.path, but its own `.pth` files — the editable
install of this checkout among them — are not processed), so installing torch again is not
needed and nothing resolves to `src/`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], cwd: Path, timeout: float = 300, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode in ok, f"{cmd} failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    dist = root / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
          str(REPO)], cwd=root)
    (wheel,) = dist.glob("clusterlm-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    site = Path(subprocess.check_output([venv / "bin" / "python", "-c",
                                         "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True).strip())
    (site / "dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)], cwd=root)
    where = _run([venv / "bin" / "python", "-c", "import clusterlm; print(clusterlm.__file__)"], cwd=root).stdout
    assert where.startswith(str(site)), where  # the wheel's copy, not the checkout
    return venv


def _clusterlm(venv: Path, *args: str, cwd: Path, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    return _run([venv / "bin" / "python", "-m", "clusterlm", *args], cwd=cwd, ok=ok)


def test_installed_wheel_plans_with_packaged_cluster_presets(installed, tmp_path):
    # exit 1 means "does not fit" (still a complete plan); anything else is a failure
    out = _clusterlm(installed, "plan", "--model", "llama3-8B", "--cluster", "dgx-h100", "--gpus", "64", "--json",
                     cwd=tmp_path, ok=(0, 1))
    plan = json.loads(out.stdout)
    assert plan["gpus"] == 64 and plan["accelerator"] == "h100-sxm" and plan["step_time_s"] > 0


def test_installed_wheel_prepares_and_trains(installed, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    words = "def return class import self value index for in range if else while print".split()
    for i in range(20):
        lines = (" ".join(words[(i + j + k) % len(words)] for k in range(9)) for j in range(60))
        (corpus / f"m{i}.py").write_text("\n".join(lines) + "\n")
    _clusterlm(installed, "prepare", str(corpus), "--out", "data", "--vocab-size", "300", "--val-fraction", "0.3",
               "--quiet", cwd=tmp_path)
    assert (tmp_path / "data" / "manifest.json").is_file()
    _clusterlm(installed, "train", "quickstart", "data.dir=data", "train.out_dir=run", "train.max_steps=5",
               "train.max_minutes=null", "train.warmup_steps=1", "train.seq_len=32", "train.micro_batch=2",
               "model.n_layer=1", "model.d_model=32", "model.n_head=2", "train.eval_batches=1",
               "train.precision=fp32", "train.tensorboard=false", "train.plots=false", "--quiet", cwd=tmp_path)
    assert (tmp_path / "run" / "latest").read_text().strip() == "step-0000005"
