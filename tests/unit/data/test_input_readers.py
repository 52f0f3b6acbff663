from __future__ import annotations

import gzip
import json
import lzma
from pathlib import Path

import pytest
import zstandard

from clusterlm.config.data import CleanConfig
from clusterlm.data import readers
from clusterlm.data.encode import BatchProcessor, EncodeSpec
from clusterlm.data.inputs import Drop, discover
from clusterlm.data.readers import RawDoc, read_file
from clusterlm.errors import DataError

TEXT = "a plain document with enough characters to be kept\n"


def process(paths: list[Path], **spec) -> tuple[list[str], list[Drop]]:
    """Read + clean `paths` in-process; (kept texts, drops)."""
    files = discover([str(p) for p in paths]).files
    items = [item for f in files for item in read_file(f)]
    result = BatchProcessor(EncodeSpec(clean=CleanConfig(), **spec))(items)
    return result.texts or [], result.drops


@pytest.mark.parametrize(
    "name, compress",
    [
        ("a.txt", bytes),
        ("a.md.gz", gzip.compress),
        ("a.py.xz", lzma.compress),
        ("a.txt.zst", zstandard.ZstdCompressor().compress),
    ],
)
def test_plain_and_compressed_formats(tmp_path, name, compress):
    path = tmp_path / name
    path.write_bytes(compress(TEXT.encode()))
    texts, drops = process([path])
    assert texts == [TEXT] and drops == []


@pytest.mark.parametrize("compress, suffix", [(bytes, ""), (gzip.compress, ".gz"), (zstandard.ZstdCompressor().compress, ".zst")])
def test_jsonl_field_and_bad_lines(tmp_path, compress, suffix):
    lines = [
        json.dumps({"body": {"text": "nested field document number one, long enough"}}),
        "{broken json",
        json.dumps({"other": "no text field here"}),
        "",
        json.dumps({"body": {"text": "nested field document number two, long enough"}}),
    ]
    path = tmp_path / f"d.jsonl{suffix}"
    path.write_bytes(compress(("\n".join(lines) + "\n").encode()))
    texts, drops = process([path], jsonl_field="body.text")
    assert texts == ["nested field document number one, long enough", "nested field document number two, long enough"]
    assert [(d.reason, d.source) for d in drops] == [
        ("malformed_jsonl", f"{path}:2"),
        ("missing_field", f"{path}:3"),
    ]


def test_html_file_is_converted(tmp_path):
    path = tmp_path / "page.htm"
    path.write_text("<html><body><script>bad()</script><p>Visible text in a paragraph here.</p></body></html>")
    texts, _ = process([path])
    assert texts == ["Visible text in a paragraph here."]


def test_bad_files_are_counted_not_fatal(tmp_path):
    (tmp_path / "good.txt").write_text(TEXT)
    (tmp_path / "binary.txt").write_bytes(b"ELF\x00\x01\x02" + b"x" * 100)
    (tmp_path / "latin1.md").write_bytes("caf\xe9 is not valid UTF-8 in this file at all".encode("latin-1"))
    (tmp_path / "corrupt.txt.gz").write_bytes(b"\x1f\x8b\x08\x00garbage that is not deflate")
    (tmp_path / "dangling.txt").symlink_to(tmp_path / "does-not-exist")
    (tmp_path / "tiny.txt").write_text("short")
    (tmp_path / "blank.py").write_text("\n\n   \n")
    (tmp_path / "broken.html").write_text("<p>text long enough to keep, but then</p><![foo[ x ]]>")
    texts, drops = process([tmp_path])
    assert texts == [TEXT]
    reasons = {Path(d.source).name: d.reason for d in drops}
    assert reasons == {
        "binary.txt": "binary",
        "latin1.md": "invalid_utf8",
        "corrupt.txt.gz": "corrupt_archive",
        "dangling.txt": "unreadable",
        "tiny.txt": "too_short",
        "blank.py": "empty",
        "broken.html": "malformed_html",
    }


def test_bom_is_stripped(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + TEXT.encode())
    assert process([path])[0] == [TEXT]


def test_directories_are_recursive_sorted_and_skip_unsupported(tmp_path):
    for rel in ("b/z.txt", "a/deep/er/y.md", "a/x.py", "a/image.png", ".git/config.txt", "__pycache__/m.py"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(TEXT)
    found = discover([str(tmp_path)])
    files, ignored = found.files, found.ignored
    assert [f.path.relative_to(tmp_path).as_posix() for f in files] == ["a/x.py", "a/deep/er/y.md", "b/z.txt"]
    assert [p.name for p in ignored] == ["image.png"]


def test_explicit_unknown_extension_is_text_and_duplicates_listed_once(tmp_path):
    p = tmp_path / "notes.log"
    p.write_text(TEXT)
    files = discover([str(p), str(p)]).files
    assert [(f.path, f.kind) for f in files] == [(p, "text")]


def test_globs(tmp_path):
    for rel in ("one.txt", "sub/two.txt", "sub/three.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(TEXT)
    files = discover([str(tmp_path / "**" / "*.txt")]).files
    assert sorted(f.path.name for f in files) == ["one.txt", "two.txt"]
    with pytest.raises(DataError, match="matched no files"):
        discover([str(tmp_path / "*.nothing")])


def test_missing_input_path(tmp_path):
    with pytest.raises(DataError, match="input path not found"):
        discover([str(tmp_path / "missing")])


def test_huge_text_file_is_cut_at_paragraphs(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "BIG_TEXT_BYTES", 100)
    paragraphs = [f"paragraph {i} " + "x" * 30 for i in range(10)]
    path = tmp_path / "big.txt"
    path.write_text("\n\n".join(paragraphs))
    (f,) = discover([str(path)]).files
    pieces = list(read_file(f))
    assert len(pieces) > 2 and all(isinstance(p, RawDoc) and len(p.data) <= 200 for p in pieces)
    assert b"".join(p.data for p in pieces) == path.read_bytes()
    assert all(p.data.endswith(b"\n\n") for p in pieces[:-1])
