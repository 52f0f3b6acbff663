"""Hostile inputs to prepare's readers: each is skipped and counted by reason, none blocks or aborts."""

from __future__ import annotations

import gzip
import json
import os
import socket
import stat
from pathlib import Path

import pytest

from clusterlm.config.data import CleanConfig
from clusterlm.data import readers
from clusterlm.data.encode import BatchProcessor, EncodeSpec
from clusterlm.data.inputs import Drop, discover, expand_glob
from clusterlm.data.readers import RawDoc, ReadLimits, open_regular, read_file

pytestmark = pytest.mark.timeout(60)

TEXT = "a plain document with enough characters to be kept\n"


def read_all(paths: list[Path], limits: ReadLimits = ReadLimits()) -> list[RawDoc | Drop]:
    return [item for f in discover([str(p) for p in paths]).files for item in read_file(f, limits)]


def drops_by_name(items: list[RawDoc | Drop]) -> dict[str, str]:
    return {Path(d.source).name: d.reason for d in items if isinstance(d, Drop)}


def test_fifo_device_and_socket_are_skipped_without_opening(tmp_path):
    (tmp_path / "good.txt").write_text(TEXT)
    os.mkfifo(tmp_path / "pipe.txt")  # opening this for reading would wait for a writer forever
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.txt"))
    try:
        items = read_all([tmp_path, Path("/dev/zero")])  # /dev/zero would never end
    finally:
        sock.close()
    assert [i.data for i in items if isinstance(i, RawDoc)] == [TEXT.encode()]
    assert drops_by_name(items) == {"pipe.txt": "fifo", "sock.txt": "socket", "zero": "device"}


def test_a_path_that_turns_into_a_fifo_after_the_check_does_not_block(tmp_path, monkeypatch):
    fifo = tmp_path / "swapped.txt"
    os.mkfifo(fifo)
    real_stat = os.stat

    def stat_says_regular(path, *args, **kwargs):  # the race: stat saw a regular file
        st = real_stat(path, *args, **kwargs)
        return os.stat_result((stat.S_IFREG | 0o644, *st[1:]))

    monkeypatch.setattr(readers.os, "stat", stat_says_regular)
    with pytest.raises(readers._NotRegular) as info:
        open_regular(fifo)  # non-blocking open, then fstat tells the truth
    assert info.value.reason == "fifo"


def test_symlink_loops_and_directory_links_are_counted_and_walks_end(tmp_path):
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "doc.txt").write_text(TEXT)
    (root / "a.txt").symlink_to(root / "b.txt")  # a -> b -> a
    (root / "b.txt").symlink_to(root / "a.txt")
    (root / "sub" / "up").symlink_to(root)  # two self-links: glob.glob('**') would never end
    (root / "sub" / "self").symlink_to(root / "sub")
    found = discover([str(root)])
    assert [f.path.name for f in found.files] == ["a.txt", "b.txt", "doc.txt"]
    assert sorted((Path(d.source).name, d.reason) for d in found.skipped) == [
        ("self", "symlinked_dir"), ("up", "symlinked_dir")]
    items = [item for f in found.files for item in read_file(f)]
    assert drops_by_name(items) == {"a.txt": "symlink_loop", "b.txt": "symlink_loop"}
    globbed = expand_glob(str(root / "**" / "*.txt"))
    assert [p.name for p in globbed] == ["a.txt", "b.txt", "doc.txt"]


def test_recursive_glob_matches_like_glob_module(tmp_path):
    for rel in ("x.txt", "a/y.txt", "a/b/z.txt", "a/b/z.md", ".hidden/h.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(TEXT)
    rel = [p.relative_to(tmp_path).as_posix() for p in expand_glob(str(tmp_path / "**" / "*.txt"))]
    assert rel == ["a/b/z.txt", "a/y.txt", "x.txt"]
    assert [p.name for p in expand_glob(str(tmp_path / "a" / "**" / "z.*"))] == ["z.md", "z.txt"]


def test_unlistable_subfolder_is_counted(tmp_path, monkeypatch):
    (tmp_path / "ok").mkdir()
    (tmp_path / "ok" / "doc.txt").write_text(TEXT)
    (tmp_path / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path="."):  # chmod 000 does not stop root, so refuse the listing here
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = discover([str(tmp_path)])
    assert [f.path.name for f in found.files] == ["doc.txt"]
    assert [(Path(d.source).name, d.reason) for d in found.skipped] == [("locked", "unlistable_dir")]


def test_long_jsonl_line_is_skipped_and_line_numbers_stay_exact(tmp_path):
    lines = [json.dumps({"text": f"record {i} " + "x" * 40}) for i in range(4)]
    lines[1] = json.dumps({"text": "y" * 10_000})  # over the cap
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    items = read_all([path], ReadLimits(max_line_bytes=200))
    assert [d for d in items if isinstance(d, Drop)] == [Drop(f"{path}:2", "line_too_long")]
    result = BatchProcessor(EncodeSpec(clean=CleanConfig()))([i for i in items if isinstance(i, RawDoc)])
    assert result.sources == [f"{path}:1", f"{path}:3", f"{path}:4"]
    assert all(len(i.data) < 1000 for i in items if isinstance(i, RawDoc))  # the long line never held


@pytest.mark.parametrize("suffix, compress", [("", bytes), (".gz", gzip.compress)])
def test_file_cap_truncates_at_a_line_and_counts(tmp_path, suffix, compress):
    text = "".join(f"line {i} of a long text file\n" for i in range(1000))
    path = tmp_path / f"big.txt{suffix}"
    path.write_bytes(compress(text.encode()))
    items = read_all([path], ReadLimits(max_file_bytes=1000))
    docs = [i for i in items if isinstance(i, RawDoc)]
    assert [d.reason for d in items if isinstance(d, Drop)] == ["file_truncated"]
    kept = b"".join(d.data for d in docs)
    assert 0 < len(kept) <= 1000 and kept.endswith(b"\n") and text.encode().startswith(kept)


def test_file_cap_keeps_only_whole_jsonl_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"record number {i}"}) + "\n" for i in range(100)))
    items = read_all([path], ReadLimits(max_file_bytes=500))
    data = b"".join(i.data for i in items if isinstance(i, RawDoc))
    assert data and data.endswith(b"\n") and all(json.loads(line) for line in data.splitlines())
    assert items[-1] == Drop(str(path), "file_truncated")


def test_file_cap_not_hit_is_silent(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text(TEXT)
    assert read_all([path], ReadLimits(max_file_bytes=len(TEXT), max_line_bytes=1)) == [
        RawDoc(str(path), "text", TEXT.encode())]


def test_huge_html_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "BIG_TEXT_BYTES", 100)
    path = tmp_path / "page.html"
    path.write_text("<p>" + "x" * 200 + "</p>")
    assert read_all([path]) == [Drop(str(path), "html_too_large")]


def test_deep_invalid_and_surrogate_jsonl_records_are_counted(tmp_path):
    good = json.dumps({"text": "a good record that is long enough to keep"})
    lines = [
        good,
        "[" * 200_000 + "]" * 200_000,  # deeper than the interpreter's recursion limit
        '{"text": "lone surrogate \\ud800 in an otherwise long enough record"}',
        '{"text": "unterminated',
        json.dumps({"text": {"nested": "not a string"}}),
    ]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(lines) + "\n")
    result = BatchProcessor(EncodeSpec(clean=CleanConfig()))(read_all([path]))
    assert result.texts == ["a good record that is long enough to keep"]
    assert [(d.source.rsplit(":", 1)[1], d.reason) for d in result.drops] == [
        ("2", "jsonl_too_deep"), ("3", "lone_surrogate"), ("4", "malformed_jsonl"), ("5", "missing_field")]
