"""A torchrun worker dies with its agent: `exit_with_parent` (PR_SET_PDEATHSIG), applied by the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux-only")]

CHILD = "from clusterlm.runtime.host import exit_with_parent; import time; assert exit_with_parent(); " \
        "print('ready', flush=True); time.sleep(60)"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_worker_gets_sigterm_when_its_parent_is_killed():
    # The "agent" starts a worker, reports its pid once the worker is ready, and is then killed -9.
    agent = textwrap.dedent(f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", {CHILD!r}], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        print(child.pid, flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", agent], stdout=subprocess.PIPE, text=True)
    worker = int(proc.stdout.readline())
    assert _alive(worker)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert not _alive(worker), "the worker outlived its agent"
    finally:
        if _alive(worker):
            os.kill(worker, 9)


def test_the_cli_asks_for_it_only_under_torchrun(monkeypatch, capsys):
    import clusterlm.cli.main as cli

    calls = []
    monkeypatch.setattr(cli, "exit_with_parent", lambda: calls.append(True) or True)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert cli.main(["theory", "backprop", "--json"]) == 0
    assert calls == []
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-1")
    assert cli.main(["theory", "backprop", "--json"]) == 0
    assert calls == [True]
