"""The run dir belongs to one trainer: its lock, what an earlier run left there, its dataset check.

`claim_run_dir` runs before the trainer reads or writes anything in `train.out_dir`. Rank 0 takes
the lock (`checkpoint/runlock.py`), checks that a run without checkpoints would overwrite nothing
it did not write (or, with `overwrite`, clears the earlier run), and tells every other rank the
outcome, so a second job on a live run dir stops on all its ranks with one line naming the holder.

`verify_dataset_once` checks the dataset's shards (sha256 against the manifest, token ids inside
the vocabulary) the first time a run uses that dataset, and remembers the verification in the run
dir (`dataset_verified.json`: the manifest's hash and each shard's size and mtime), so a resume does
not re-read terabytes; a dataset whose manifest or shards changed since is verified again.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from clusterlm.checkpoint.layout import CHECKPOINTS_DIR, LATEST_FILE
from clusterlm.checkpoint.runlock import RunLock
from clusterlm.checkpoint.store import CheckpointStore
from clusterlm.data.loader import Dataset
from clusterlm.data.shards import fingerprint, verify_files
from clusterlm.errors import ConfigError, DataError, DistributedError, OutputExistsError
from clusterlm.fsio import atomic_write_json, atomic_write_text
from clusterlm.runtime.process import Process
from clusterlm.train.metrics import METRICS_FILE

CONFIG_FILE = "config.yaml"
PLOT_FILE = "plots/loss.png"
VERIFIED_FILE = "dataset_verified.json"
# What a run writes that a fresh run would replace (checkpoints are handled by the resume policy).
RUN_FILES = (CONFIG_FILE, METRICS_FILE, PLOT_FILE, VERIFIED_FILE)


def claim_run_dir(store: CheckpointStore, process: Process, *, overwrite: bool = False) -> RunLock | None:
    """Take the run dir on rank 0 (the lock, the leftover check, `overwrite`'s clean-up) and agree on
    the outcome on every rank. Returns the lock (rank 0) or None (other ranks)."""
    if not process.is_main:
        failure = process.collectives.broadcast_object(None)
        if failure is not None:
            raise DistributedError(f"rank 0 could not take the run dir: {failure}")
        return None
    lock = RunLock(store.run_dir)
    try:
        if store.run_dir.exists() and not store.run_dir.is_dir():
            raise ConfigError(f"train.out_dir {store.run_dir} is a file, not a directory; choose another train.out_dir")
        lock.acquire()
        try:
            _check_or_clear(store, overwrite)
        except BaseException:
            lock.release()
            raise
    except Exception as exc:
        process.collectives.broadcast_object(str(exc) or type(exc).__name__)
        raise
    process.collectives.broadcast_object(None)
    return lock


def _check_or_clear(store: CheckpointStore, overwrite: bool) -> None:
    run_dir = store.run_dir
    if overwrite:  # start over: the earlier run's checkpoints and logs go (nothing else in the dir)
        (run_dir / LATEST_FILE).unlink(missing_ok=True)
        shutil.rmtree(run_dir / CHECKPOINTS_DIR, ignore_errors=True)
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        return
    if store.latest() is not None:
        return  # a run to resume: its files are this run's
    found = [name for name in RUN_FILES if (run_dir / name).exists()]
    if found:
        raise OutputExistsError(
            f"train.out_dir {run_dir} holds {', '.join(found)} but no checkpoint (an earlier run that stopped "
            "before its first checkpoint?); pass --overwrite to start over there, or choose another train.out_dir")


def open_run_dir(store: CheckpointStore, config_yaml: str, record: dict[str, Any] | None) -> None:
    """Rank 0, as the run starts: the dir exists, leftovers of a killed save are gone, the resolved
    config and the dataset verification are written."""
    store.run_dir.mkdir(parents=True, exist_ok=True)
    store.remove_stale_temporaries()
    atomic_write_text(store.run_dir / CONFIG_FILE, config_yaml)
    write_verification(store.run_dir, record)


def verify_dataset_once(dataset: Dataset, run_dir: Path, process: Process) -> dict[str, Any] | None:
    """Verify `dataset`'s shards unless this run dir's record vouches for them (rank 0 reads, every rank
    learns the outcome). Returns the record to write into the run dir (None: already recorded)."""
    if not process.is_main:
        failure = process.collectives.broadcast_object(None)
        if failure is not None:
            raise DataError(f"rank 0 could not verify the dataset: {failure}")
        return None
    try:
        current = {"dataset": str(Path(dataset.path).resolve()), **fingerprint(dataset.path, dataset.manifest)}
        recorded = _read_record(run_dir / VERIFIED_FILE)
        record = None
        if recorded is None or {k: recorded.get(k) for k in current} != current:
            verify_files(dataset.path, dataset.manifest, sha256=True)
            record = {**current, "verified_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    except Exception as exc:
        process.collectives.broadcast_object(str(exc) or type(exc).__name__)
        raise
    process.collectives.broadcast_object(None)
    return record


def write_verification(run_dir: Path, record: dict[str, Any] | None) -> None:
    if record is not None:
        atomic_write_json(run_dir / VERIFIED_FILE, record)


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None
