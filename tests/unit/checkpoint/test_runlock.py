"""One writer per run dir: the lock names its holder, refuses a second writer, and is taken over
only from a holder that is gone (dead pid on this host, no heartbeat from another host)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from clusterlm.checkpoint.runlock import LOCK_FILE, RunLock
from clusterlm.errors import RunLockedError

pytestmark = pytest.mark.timeout(60)


def _write_holder(run_dir, **fields):
    holder = {"host": "vm", "pid": 1, "start_time": None, "started": "2020-01-01T00:00:00", "token": "t"} | fields
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK_FILE).write_text(json.dumps(holder))
    return holder


def test_a_second_writer_is_refused_with_the_holders_name(tmp_path):
    with RunLock(tmp_path / "run") as first:
        record = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
        assert record["pid"] == os.getpid() and record["start_time"] == psutil.Process().create_time()
        with pytest.raises(RunLockedError, match=rf"in use by another trainer: pid {os.getpid()} on "):
            RunLock(tmp_path / "run").acquire()
        assert first.holder is not None
    assert not (tmp_path / "run" / LOCK_FILE).exists()  # released
    RunLock(tmp_path / "run").acquire().release()


def test_a_live_process_on_this_host_holds_it(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        import socket

        start = psutil.Process(child.pid).create_time()
        _write_holder(tmp_path, host=socket.gethostname(), pid=child.pid, start_time=start)
        with pytest.raises(RunLockedError, match=f"pid {child.pid}"):
            RunLock(tmp_path).acquire()
        # a lock written before `start_time` (clock ticks in `pid_start`): the pid alone decides
        legacy = _write_holder(tmp_path, host=socket.gethostname(), pid=child.pid, pid_start=12345)
        del legacy["start_time"]
        (tmp_path / LOCK_FILE).write_text(json.dumps(legacy))
        with pytest.raises(RunLockedError, match=f"pid {child.pid}"):
            RunLock(tmp_path).acquire()
        # the same pid with another start time is a reused pid: the holder is gone
        _write_holder(tmp_path, host=socket.gethostname(), pid=child.pid, start_time=1.0)
        RunLock(tmp_path).acquire().release()
    finally:
        child.kill()
        child.wait()


def test_a_dead_holder_on_this_host_is_taken_over(tmp_path):
    import socket

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _write_holder(tmp_path, host=socket.gethostname(), pid=int(dead.stdout))
    lock = RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()
    assert not list(tmp_path.iterdir())  # no stale copies or temporaries left behind


def test_a_zombie_holder_on_this_host_is_gone(tmp_path):
    import socket

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        proc = psutil.Process(child.pid)
        start = proc.create_time()
        while proc.status() != psutil.STATUS_ZOMBIE:  # exited, not yet reaped (no poll(): it would reap)
            time.sleep(0.01)
        _write_holder(tmp_path, host=socket.gethostname(), pid=child.pid, start_time=start)
        RunLock(tmp_path).acquire().release()
    finally:
        child.wait()


def test_another_hosts_lock_is_live_until_its_heartbeat_stops(tmp_path):
    _write_holder(tmp_path, host="elsewhere", pid=4242)
    with pytest.raises(RunLockedError, match="pid 4242 on elsewhere"):
        RunLock(tmp_path, stale_after_s=60).acquire()
    old = time.time() - 120
    os.utime(tmp_path / LOCK_FILE, (old, old))  # no heartbeat for two minutes
    RunLock(tmp_path, stale_after_s=60).acquire().release()


def test_the_heartbeat_keeps_the_lock_fresh(tmp_path):
    lock = RunLock(tmp_path, heartbeat_s=0.05).acquire()
    old = time.time() - 1000
    os.utime(tmp_path / LOCK_FILE, (old, old))
    time.sleep(0.5)
    assert time.time() - (tmp_path / LOCK_FILE).stat().st_mtime < 5
    lock.release()


def test_a_lock_abandoned_by_a_dropped_object_of_this_process_is_taken_over(tmp_path):
    RunLock(tmp_path).acquire()  # never released, and the object is gone
    gc.collect()
    RunLock(tmp_path).acquire().release()


def test_an_unreadable_recent_lock_is_not_broken(tmp_path):
    (tmp_path / LOCK_FILE).write_text("{half a reco")
    with pytest.raises(RunLockedError, match="unreadable"):
        RunLock(tmp_path).acquire()
    old = time.time() - 1000
    os.utime(tmp_path / LOCK_FILE, (old, old))
    RunLock(tmp_path).acquire().release()


def test_release_removes_the_run_dir_it_created(tmp_path):
    lock = RunLock(tmp_path / "fresh")
    lock.acquire()
    lock.release()
    assert not (tmp_path / "fresh").exists()  # created for the lock, removed with it (it stayed empty)


def test_an_earlier_attempt_of_the_same_job_is_gone_even_on_a_live_looking_host(tmp_path):
    """A Slurm requeue (or torchrun restart) after a node died: the old lock is recent and on another
    host, but it belongs to an earlier attempt of this very job, which the scheduler has ended."""
    _write_holder(tmp_path, host="dead-node", pid=4242, job="1234", attempt=[0, 0])
    with pytest.raises(RunLockedError):
        RunLock(tmp_path, environ={"SLURM_JOB_ID": "999", "SLURM_RESTART_COUNT": "1"}).acquire()  # another job
    with pytest.raises(RunLockedError):
        RunLock(tmp_path, environ={"SLURM_JOB_ID": "1234"}).acquire()  # the same attempt: a second writer
    lock = RunLock(tmp_path, environ={"SLURM_JOB_ID": "1234", "SLURM_RESTART_COUNT": "1"}).acquire()
    assert json.loads((tmp_path / LOCK_FILE).read_text())["attempt"] == [1, 0]
    lock.release()
