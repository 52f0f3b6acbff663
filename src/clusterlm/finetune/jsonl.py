"""Read fine-tuning records from JSONL: one JSON object per line, fields checked up front.

Every problem is a `DataError` naming the file and line, raised before anything is
trained or written: an empty file, a line that is not a JSON object, a missing field or
one of the wrong type.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clusterlm.errors import DataError
from clusterlm.fsio import atomic_write_text


def read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; DataError on a missing/empty file or bad JSON."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p} does not exist (expected a JSONL file)")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{p} is not UTF-8 text") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{p}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{p}:{number}: expected a JSON object, got {type(obj).__name__}")
        records.append((number, obj))
    if not records:
        raise DataError(f"{p} is empty (no JSON lines)")
    return records


def require_str(path: str | Path, number: int, obj: dict[str, Any], field: str, allow_empty: bool = False) -> str:
    """`obj[field]` as a string, or a DataError naming the line and field."""
    value = obj.get(field)
    if not isinstance(value, str):
        what = "missing" if value is None else f"a {type(value).__name__}, not a string"
        raise DataError(f"{path}:{number}: field '{field}' is {what}")
    if not allow_empty and not value.strip():
        raise DataError(f"{path}:{number}: field '{field}' is empty")
    return value


def write_jsonl(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write rows as JSONL atomically (UTF-8, Chinese kept as characters)."""
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
