"""Who owns a temporary directory, in a way that holds on a shared cluster filesystem.

The owner keeps a lock file inside the directory holding its host name, process id
and process start time, and holds an exclusive `flock` on it while it works. A
cleaner deciding whether a leftover directory is abandoned asks:

- another host's directory: never abandoned. Its process cannot be seen from here,
  and its `flock` cannot be trusted across nodes (Lustre mounted `localflock`, NFS
  mounted `nolock` keep locks node-local; elsewhere a lock may vanish with a lock
  server restart). It is left alone and reported, for a person to delete.
- this host's directory: abandoned only if *both* its lock is free (the kernel drops a
  flock when its holder dies, so a free lock means a dead owner, pid reuse included)
  *and* no process with that pid and start time runs. Where the filesystem has no
  locks at all (an error on `flock`), the pid and start time decide alone.

A PID alone, as before, is not enough: on a shared filesystem a live owner on
another node looks dead, and a recycled pid makes a dead one look alive.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import psutil

LOCK_NAME = ".owner.lock"
Verdict = Literal["mine", "alive", "dead", "other_host", "unknown"]
_START_TIME_SLACK_S = 1.0  # psutil's create_time is rounded differently on some kernels
_HELD = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)  # flock's "someone else holds it"


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    start_time: float  # process start, seconds since the epoch

    @classmethod
    def me(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid(), psutil.Process().create_time())

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}"


class OwnerLock:
    """Held by the process building `directory`, from `acquire` until `release`."""

    def __init__(self, directory: Path):
        self.path = Path(directory) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> OwnerLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            os.write(fd, json.dumps(asdict(Owner.me())).encode())
            os.fsync(fd)
            _lock_soon(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file (it must not end up in the finished output), then unlock."""
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> OwnerLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_owner(directory: Path) -> Owner | None:
    """The owner recorded in `directory`, or None if there is no readable record."""
    try:
        record = json.loads((Path(directory) / LOCK_NAME).read_text(encoding="utf-8"))
        return Owner(str(record["host"]), int(record["pid"]), float(record["start_time"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def verdict(directory: Path) -> tuple[Verdict, Owner | None]:
    """Whether `directory`'s owner is this process, alive, dead, on another host, or unknown."""
    owner = read_owner(directory)
    if owner is None:
        return "unknown", None
    me = Owner.me()
    if owner.host != me.host:
        return "other_host", owner
    if owner.pid == me.pid and abs(owner.start_time - me.start_time) <= _START_TIME_SLACK_S:
        return "mine", owner
    if _lock_held(Path(directory) / LOCK_NAME) or running(owner.pid, owner.start_time):
        return "alive", owner
    return "dead", owner


def _lock_held(path: Path) -> bool:
    """True if another process holds the flock on `path` (False if free or unsupported)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)  # NFS emulates flock with write locks
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        return exc.errno in _HELD
    finally:
        os.close(fd)
    return False


def running(pid: int, start_time: float | None) -> bool:
    """True if process `pid` runs (not a zombie) and started at `start_time` (psutil's
    `create_time`; None: any start time, for records that have none)."""
    try:
        proc = psutil.Process(pid)
        start, zombie = proc.create_time(), proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:  # e.g. access denied: it exists, so assume it is the owner
        return True
    return not zombie and (start_time is None or abs(start - start_time) <= _START_TIME_SLACK_S)


def _lock_soon(fd: int, tries: int = 50, wait_s: float = 0.1) -> bool:
    """Take the flock, retrying while a cleaner holds it for a look; never blocks for long.

    False if it could not be taken (no lock support, or held throughout): the record still
    protects the directory, since a cleaner on this host also checks the pid and start time.
    """
    for _ in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            if exc.errno not in _HELD:  # ENOLCK, EINVAL, ENOSYS…: this filesystem has no locks
                return False
        time.sleep(wait_s)
    return False

