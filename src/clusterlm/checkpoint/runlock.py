"""One writer per run dir: `RUN/train.lock` names the trainer that holds it.

Two trainers writing one run dir interleave checkpoints, advance `latest` past each other and
truncate each other's metrics, so a trainer (rank 0 of a distributed run) takes this lock before
it reads or writes anything in the run dir, and a second one is refused with the holder's name.

Why a lock *file* with a heartbeat rather than `fcntl.flock`: run dirs live on shared file systems
(NFS, Lustre, GPFS, BeeGFS), and a Slurm requeue restarts the job on another node. `flock` there is
either unsupported, emulated with byte-range locks, or — Lustre's common `localflock` mount —
visible only on the node that took it, so two nodes would both "hold" it. Creating a file with a
hard link (`link(2)` fails if the name exists, atomically, on NFS too) works everywhere. The file
says who holds the lock — host, pid, the process's start time, when it took the lock — so the error
names the holder, and it tells a live holder from a dead one:

* an earlier attempt of the same job (a Slurm requeue or a torchrun restart: the same job id, a lower
  restart count) is gone — the scheduler or agent ends every process of an attempt before the next
  starts — even if it ran on a node that died without cleaning up;
* same host: the holder is alive iff its pid runs (not as a zombie) and has the recorded start time
  (pids are reused) — `data.owner_lock.running`, which the data preparer's lock uses too;
* another host: the holder touches the file every `HEARTBEAT_S` seconds; a lock not touched for
  `STALE_AFTER_S` seconds belongs to a dead process (clocks may differ by far less than that).

A stale lock (a trainer killed with `kill -9`, a crashed node) is taken over: renamed aside, checked
to be the one judged stale (else put back), and replaced by a new one.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clusterlm.data.owner_lock import Owner, running
from clusterlm.errors import RunLockedError

LOCK_FILE = "train.lock"
HEARTBEAT_S = 15.0
STALE_AFTER_S = 120.0

# Locks this process holds, by path: tells a live lock of ours from one an abandoned object left.
_HELD: dict[str, weakref.ref[RunLock]] = {}


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    start_time: float | None  # the process's start, seconds since the epoch (psutil's create_time)
    started: str  # when the lock was taken (local time, ISO 8601)
    token: str
    job: str | None = None  # the Slurm job or torchrun run id, if any
    attempt: tuple[int, ...] = ()  # (Slurm requeues, torchrun restarts) of that job

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} (since {self.started})"


def job_attempt(environ: Mapping[str, str]) -> tuple[str | None, tuple[int, ...]]:
    """(job id, attempt) of this process: Slurm's job id (kept across requeues) or torchrun's run id
    (kept across restarts), and (SLURM_RESTART_COUNT, TORCHELASTIC_RESTART_COUNT)."""
    job = environ.get("SLURM_JOB_ID") or environ.get("TORCHELASTIC_RUN_ID") or None
    try:
        attempt = tuple(int(environ.get(k, 0) or 0) for k in ("SLURM_RESTART_COUNT", "TORCHELASTIC_RESTART_COUNT"))
    except ValueError:
        attempt = (0, 0)
    return job, attempt


class RunLock:
    """`with RunLock(run_dir): …` — or `acquire()` / `release()`; RunLockedError if it is held."""

    def __init__(self, run_dir: str | Path, *, heartbeat_s: float = HEARTBEAT_S, stale_after_s: float = STALE_AFTER_S,
                 environ: Mapping[str, str] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.job, self.attempt = job_attempt(os.environ if environ is None else environ)
        self.path = self.run_dir / LOCK_FILE
        self.heartbeat_s, self.stale_after_s = heartbeat_s, stale_after_s
        self.holder: Holder | None = None
        self._created_dir = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ taking and giving back
    def acquire(self) -> RunLock:
        if not self.run_dir.exists():
            self.run_dir.mkdir(parents=True)
            self._created_dir = True
        owner = Owner.me()
        me = Holder(owner.host, owner.pid, owner.start_time, time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    uuid.uuid4().hex, self.job, self.attempt)
        for _ in range(5):  # each retry follows a stale lock taken over (or a race lost)
            if self._create(me):
                self.holder = me
                _HELD[str(self.path)] = weakref.ref(self)
                # The thread holds no reference to `self`: a dropped lock object counts as abandoned.
                self._thread = threading.Thread(target=_heartbeat, args=(self.path, me.token, self.heartbeat_s,
                                                                        self._stop), name="run-lock-heartbeat",
                                                daemon=True)
                self._thread.start()
                return self
            text, holder, age_s = self._read()
            if holder is not None and self._alive(holder, age_s):
                self._forget_dir()
                raise RunLockedError(
                    f"{self.run_dir} is in use by another trainer: {holder.describe()}; wait for it to finish "
                    f"or stop it (if no such process is alive, delete {self.path})")
            if holder is None and age_s < self.stale_after_s:
                self._forget_dir()
                raise RunLockedError(f"{self.path} is unreadable and recent; another trainer may be starting — "
                                     f"retry, or delete {self.path} if none is")
            self._take_over(text)
        self._forget_dir()
        raise RunLockedError(f"could not take {self.path}: other trainers keep taking it")

    def release(self) -> None:
        """Give the lock back (only if the file is still ours); also remove a run dir we created empty."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.holder is not None:
            _text, holder, _age = self._read()
            if holder is not None and holder.token == self.holder.token:
                self.path.unlink(missing_ok=True)
            _HELD.pop(str(self.path), None)
            self.holder = None
        self._forget_dir()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # ------------------------------------------------------------------ the file
    def _create(self, me: Holder) -> bool:
        """Write our holder record under a unique name, then hard-link it to the lock name (atomic,
        fails if the name exists, and the lock never exists half-written)."""
        tmp = self.path.with_name(f".{LOCK_FILE}.{me.token}.tmp")
        tmp.write_text(json.dumps(asdict(me)) + "\n", encoding="utf-8")
        try:
            os.link(tmp, self.path)
            return True
        except (FileExistsError, FileNotFoundError):  # held; or our temp file was cleaned up meanwhile
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _read(self) -> tuple[str, Holder | None, float]:
        """(raw text, holder or None if unreadable, seconds since the last heartbeat)."""
        try:
            text = self.path.read_text(encoding="utf-8")
            age_s = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return "", None, float("inf")
        except (OSError, UnicodeDecodeError):
            return "", None, 0.0
        try:
            fields = json.loads(text)
            fields.pop("pid_start", None)  # written before `start_time`: clock ticks since boot, not comparable
            fields.setdefault("start_time", None)
            return text, Holder(**{**fields, "attempt": tuple(fields.get("attempt", ()))}), age_s
        except (ValueError, TypeError, AttributeError):
            return text, None, age_s

    def _alive(self, holder: Holder, age_s: float) -> bool:
        if self.job is not None and holder.job == self.job and tuple(holder.attempt) < self.attempt:
            return False  # an earlier attempt of this job: ended before this one started
        if holder.host != socket.gethostname():
            return age_s < self.stale_after_s
        if holder.pid == os.getpid():  # this process: alive only while the object that took it is
            ref = _HELD.get(str(self.path))
            owner = ref() if ref is not None else None
            return owner is not None and owner.holder is not None and owner.holder.token == holder.token
        return running(holder.pid, holder.start_time)

    def _take_over(self, stale_text: str) -> None:
        grave = self.path.with_name(f".{LOCK_FILE}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(self.path, grave)
        except FileNotFoundError:
            return  # someone else removed it first
        try:
            if grave.read_text(encoding="utf-8") != stale_text:  # a fresh lock was taken meanwhile
                try:
                    os.link(grave, self.path)  # put it back (unless yet another one exists)
                except FileExistsError:
                    pass
        finally:
            grave.unlink(missing_ok=True)

    def _forget_dir(self) -> None:
        if self._created_dir:
            try:
                self.run_dir.rmdir()  # only if still empty
            except OSError:
                pass
            self._created_dir = False


def _heartbeat(path: Path, token: str, interval_s: float, stop: threading.Event) -> None:
    """Touch the lock file every `interval_s` while it is still ours (another host reads its age)."""
    while not stop.wait(interval_s):
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("token") != token:
                return  # taken over (this process was presumed dead): stop touching it
            os.utime(path)
        except (OSError, ValueError, AttributeError):
            return
