"""Helpers for the fine-tuning tests (importable: tests have no packages)."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def mo_bytes(pairs: Sequence[tuple[str, str]], charset: str = "UTF-8") -> bytes:
    """A GNU .mo catalog (little-endian, no hash table) holding a header entry and `pairs`.

    Written from the format description (GNU gettext manual, "The Format of GNU MO Files"),
    independently of the reader under test; entries sorted by msgid as msgfmt does.
    """
    header = f"Content-Type: text/plain; charset={charset}\n"
    entries = sorted([("", header)] + list(pairs))
    ids = [m.encode(charset) for m, _ in entries]
    strs = [t.encode(charset) for _, t in entries]
    n = len(entries)
    originals, translations = 28, 28 + 8 * n
    data_start = 28 + 16 * n
    blob, table_o, table_t = b"", b"", b""
    for raw, table in ((ids, "o"), (strs, "t")):
        for item in raw:
            entry = struct.pack("<2I", len(item), data_start + len(blob))
            blob += item + b"\0"
            if table == "o":
                table_o += entry
            else:
                table_t += entry
    head = struct.pack("<7I", 0x950412DE, 0, n, originals, translations, 0, 0)
    return head + table_o + table_t + blob


def write_catalog(path: Path, pairs: Sequence[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(mo_bytes(pairs))
    return path
