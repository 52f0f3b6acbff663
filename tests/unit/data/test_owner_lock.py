"""Temp-dir ownership on a shared filesystem: host + pid + start time, and a held flock."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from clusterlm.data.owner_lock import LOCK_NAME, OwnerLock, _lock_soon, read_owner, verdict

pytestmark = pytest.mark.timeout(60)

HOLD = "import sys, time; from clusterlm.data.owner_lock import OwnerLock; OwnerLock(sys.argv[1]).acquire(); " \
       "print('locked', flush=True); time.sleep(float(sys.argv[2]))"


def record(directory: Path, host: str, pid: int, start_time: float) -> None:
    directory.mkdir(exist_ok=True)
    (directory / LOCK_NAME).write_text(json.dumps({"host": host, "pid": pid, "start_time": start_time}))


def test_owner_record_names_this_process_and_release_removes_it(tmp_path):
    with OwnerLock(tmp_path):
        owner = read_owner(tmp_path)
        assert owner is not None and (owner.host, owner.pid) == (socket.gethostname(), os.getpid())
        assert abs(owner.start_time - psutil.Process().create_time()) < 1
        assert verdict(tmp_path)[0] == "mine"
    assert not (tmp_path / LOCK_NAME).exists()


def test_live_owner_in_another_process_then_dead_after_kill(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path), "60"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        assert verdict(tmp_path)[0] == "alive"
    finally:
        proc.kill()
        proc.wait()
    assert verdict(tmp_path)[0] == "dead"  # the kernel dropped its lock; its pid is gone


def test_owner_on_another_host_is_never_judged_dead(tmp_path):
    # Its lock is free here and its pid means nothing here: still not ours to delete.
    record(tmp_path, "another-node.cluster", 999_999_999, time.time() - 86_400)
    state, owner = verdict(tmp_path)
    assert state == "other_host" and owner is not None and owner.host == "another-node.cluster"


def test_recycled_pid_with_another_start_time_is_dead(tmp_path):
    record(tmp_path, socket.gethostname(), os.getpid(), psutil.Process().create_time() - 10_000)
    assert verdict(tmp_path)[0] == "dead"


def test_held_lock_means_alive_whatever_the_record_says(tmp_path):
    record(tmp_path, socket.gethostname(), 999_999_999, 0.0)  # no such process
    fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert verdict(tmp_path)[0] == "alive"
    finally:
        os.close(fd)
    assert verdict(tmp_path)[0] == "dead"


@pytest.mark.parametrize("content", [None, "", "{not json", json.dumps({"host": "h"})])
def test_missing_or_partial_record_is_unknown(tmp_path, content):
    if content is not None:
        (tmp_path / LOCK_NAME).write_text(content)
    assert verdict(tmp_path) == ("unknown", None)


def test_taking_the_lock_never_waits_long(tmp_path):
    path = tmp_path / "f"
    path.write_text("")
    holder, waiter = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        start = time.monotonic()
        assert _lock_soon(waiter, tries=3, wait_s=0.01) is False  # gives up instead of blocking
        assert time.monotonic() - start < 5
        os.close(holder)
        holder = -1
        assert _lock_soon(waiter) is True
    finally:
        for fd in (holder, waiter):
            if fd >= 0:
                os.close(fd)
