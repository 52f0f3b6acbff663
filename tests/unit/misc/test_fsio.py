from __future__ import annotations

import os
import stat

import pytest

from clusterlm.fsio import atomic_dir, atomic_write_json, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_replaces_and_uses_umask_mode(tmp_path):
    target = tmp_path / "a" / "out.txt"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    mask = os.umask(0)
    os.umask(mask)
    assert _mode(target) == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]  # no temp files left


def test_atomic_dir_is_invisible_until_complete(tmp_path):
    target = tmp_path / "ds"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "x").write_text("partial")
            raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        atomic_write_json(tmp / "manifest.json", {"ok": True})
    assert (target / "manifest.json").exists()
    mask = os.umask(0)
    os.umask(mask)
    assert _mode(target) == 0o777 & ~mask  # not mkdtemp's private 0700


def test_atomic_dir_refuses_existing_without_overwrite(tmp_path):
    target = tmp_path / "ds"
    target.mkdir()
    (target / "keep").write_text("old")
    with pytest.raises(FileExistsError):
        with atomic_dir(target):
            pass
    assert (target / "keep").read_text() == "old"
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "new").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new"]


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_modes_match_plain_open_and_mkdir_without_touching_the_umask(tmp_path, monkeypatch, mask):
    old = os.umask(mask)  # the test sets it; the code under test must only read it through the kernel
    try:
        (tmp_path / "plain.txt").write_text("x")
        (tmp_path / "plain_dir").mkdir()

        def no_umask(_mask):  # another thread's files would get mode 0o666/0o777 during a round trip
            raise AssertionError("os.umask called")

        monkeypatch.setattr(os, "umask", no_umask)
        atomic_write_text(tmp_path / "atomic.txt", "x")
        with atomic_dir(tmp_path / "atomic_dir"):
            pass
    finally:
        monkeypatch.undo()
        os.umask(old)
    assert _mode(tmp_path / "atomic.txt") == _mode(tmp_path / "plain.txt") == 0o666 & ~mask
    assert _mode(tmp_path / "atomic_dir") == _mode(tmp_path / "plain_dir") == 0o777 & ~mask
