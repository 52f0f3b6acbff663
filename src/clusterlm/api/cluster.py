"""`clusterlm cluster`: describe a cluster spec, or measure this machine into one.

`probe` with `out` writes an explicit spec file (one process using all threads, as before);
without `out`, on the CPU, it also measures one thread and replaces the cached description that
`--cluster local` uses (`cluster/local.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from clusterlm.cluster import local
from clusterlm.cluster.measured import ProbeResult, probe_spec
from clusterlm.cluster.spec import Cluster, ClusterSpec, load_cluster
from clusterlm.config.base import validate
from clusterlm.errors import OutputExistsError
from clusterlm.fsio import atomic_write_text


def show(spec: str, gpus: int | None = None) -> Cluster:
    """The resolved numbers of a preset, a spec file or `local` (scaled to `gpus` accelerators)."""
    return load_cluster(spec, gpus)


@dataclass(frozen=True)
class Probed:
    result: ProbeResult  # all threads, as one training process uses the machine
    spec: dict[str, Any]
    written: Path | None  # the --out file
    cached: Path | None  # the refreshed `local` description


def probe(device: str = "cpu", *, quick: bool = False, disk_dir: str | None = ".", allreduce: bool = True,
          name: str = "this machine (probed)", out: str | Path | None = None, overwrite: bool = False) -> Probed:
    if out is not None and Path(out).exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite to replace it")
    if device != "cpu":
        # runtime.device imports torch (seconds); only a non-CPU probe needs the check.
        from clusterlm.runtime.device import resolve_device

        device = str(resolve_device(device, option="--device"))  # a device this machine has (else one line)
    cached = None
    if out is None and device == "cpu":
        results = local.measure(quick=quick, disk_dir=disk_dir, allreduce=allreduce)
        cached = local.store(results)
        res = ProbeResult(**results["all_threads"])
    else:
        # probe.py imports torch; only a measurement needs it.
        from clusterlm.cluster.probe import probe as measure

        res = measure(device, quick=quick, disk_dir=disk_dir, allreduce=allreduce)
    spec = probe_spec(res, name=name)
    validate(ClusterSpec, spec)  # the file we write must load
    if out is not None:
        header = "# Written by `clusterlm cluster probe`: measured numbers of this machine.\n"
        atomic_write_text(out, header + yaml.safe_dump(spec, sort_keys=False))
    return Probed(res, spec, Path(out) if out is not None else None, cached)
