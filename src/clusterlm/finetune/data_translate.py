"""English → Simplified Chinese pairs from the gettext catalogs installed on this machine.

Every Debian package that is translated ships `LC_MESSAGES/<domain>.mo` files: compiled
catalogs of (English message, translation) pairs. A `.mo` file is a small binary format
(GNU gettext manual, "The Format of GNU MO Files"): a header with the number of strings and
the offsets of two tables of (length, offset) entries, one for the originals and one for
the translations. `read_mo` parses it directly; Python's `gettext` module reads the same
files but keeps only a lookup dict, without plural or context structure.

Cleaning (each drop counted by reason in `report.json`): the header entry; messages with no
English word (format-only strings such as "%s: %s"); translations without a Chinese
character (untranslated or product names); multi-line and long messages (help texts);
exact duplicate pairs. Plural entries contribute their singular form, context prefixes are
removed. The split is by catalog, so the test domains (e.g. a whole program's messages) are
unseen in training, and a val/test pair whose English text occurs in train is dropped.
"""

from __future__ import annotations

import glob
import re
import struct
from collections import Counter
from pathlib import Path
from typing import Any

from clusterlm.errors import DataError
from clusterlm.finetune.jsonl import write_jsonl
from clusterlm.finetune.splits import SPLITS, assign_splits
from clusterlm.fsio import atomic_dir, atomic_write_json

DEFAULT_CATALOGS = ("/usr/share/locale/zh_CN/LC_MESSAGES/*.mo",
                    "/usr/share/locale-langpack/zh_CN/LC_MESSAGES/*.mo",
                    "/usr/local/share/locale/zh_CN/LC_MESSAGES/*.mo",
                    "/usr/share/*/*/lang/zh_CN/LC_MESSAGES/*.mo")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
_WORD = re.compile(r"[A-Za-z]{2,}")
_CHARSET = re.compile(r"charset=([\w.-]+)", re.IGNORECASE)


def read_mo(path: str | Path) -> list[tuple[str, str]]:
    """(msgid, msgstr) pairs of a compiled catalog: singular forms, context removed, header skipped."""
    data = Path(path).read_bytes()
    if len(data) < 28:
        raise DataError(f"{path} is too short to be a .mo catalog")
    magic = struct.unpack("<I", data[:4])[0]
    order = {0x950412DE: "<", 0xDE120495: ">"}.get(magic)
    if order is None:
        raise DataError(f"{path} is not a .mo catalog (bad magic number)")
    _, count, originals, translations = struct.unpack(order + "4I", data[4:20])
    raw = []
    for i in range(count):
        entries = []
        for table in (originals, translations):
            length, offset = struct.unpack(order + "2I", data[table + 8 * i: table + 8 * i + 8])
            entries.append(data[offset:offset + length])
        raw.append(entries)
    charset = "utf-8"
    for msgid, msgstr in raw:
        if msgid == b"":  # the header entry carries the encoding
            match = _CHARSET.search(msgstr.decode("ascii", errors="replace"))
            charset = match.group(1) if match else charset
    pairs = []
    for msgid, msgstr in raw:
        if msgid == b"":
            continue
        try:
            source, target = msgid.decode(charset), msgstr.decode(charset)
        except (UnicodeDecodeError, LookupError):
            continue
        source = source.split("\x04", 1)[-1].split("\x00", 1)[0]  # drop context; singular of a plural
        pairs.append((source, target.split("\x00", 1)[0]))
    return pairs


def clean_pair(source: str, target: str, max_chars: int) -> tuple[str, str] | str:
    """The cleaned pair, or the reason it is dropped."""
    source, target = source.strip(), target.strip()
    if not _WORD.search(source):
        return "format_only"
    if not target or not _CJK.search(target) or _CJK.search(source):
        return "untranslated"
    if "\n" in source or "\n" in target:
        return "multiline"
    if len(source) > max_chars or len(target) > max_chars:
        return "too_long"
    return source, target


def find_catalogs(patterns: list[str] | None) -> list[Path]:
    paths = sorted({Path(p) for pattern in (patterns or DEFAULT_CATALOGS) for p in glob.glob(pattern)})
    if not paths:
        raise DataError("no zh_CN gettext catalogs (*.mo) found; pass their paths or globs "
                        "(find / -path '*zh_CN/LC_MESSAGES/*.mo')")
    return paths


def catalog_pairs(paths: list[Path], max_chars: int) -> tuple[dict[str, list[tuple[str, str]]], Counter]:
    """Cleaned, de-duplicated pairs per catalog (named by its domain) and the drop counts."""
    drops: Counter = Counter()
    seen: set[tuple[str, str]] = set()
    catalogs: dict[str, list[tuple[str, str]]] = {}
    for path in paths:
        name = path.stem if path.stem not in catalogs else f"{path.stem}@{path.parent.parent.parent.name}"
        pairs = catalogs.setdefault(name, [])
        for source, target in read_mo(path):
            cleaned = clean_pair(source, target, max_chars)
            if isinstance(cleaned, str):
                drops[cleaned] += 1
            elif cleaned in seen:
                drops["duplicate"] += 1
            else:
                seen.add(cleaned)
                pairs.append(cleaned)
    return {name: pairs for name, pairs in catalogs.items() if pairs}, drops


def build_translation_data(out: str | Path, catalogs: list[str] | None = None, *, max_chars: int = 120,
                           val_fraction: float = 0.05, test_fraction: float = 0.1, seed: int = 0,
                           overwrite: bool = False) -> dict[str, Any]:
    """Write `out/{train,val,test}.jsonl` (`prompt` English, `response` Chinese, `catalog`) and report.json."""
    paths = find_catalogs(catalogs)
    by_catalog, drops = catalog_pairs(paths, max_chars)
    split_of = assign_splits({c: len(p) for c, p in by_catalog.items()}, val_fraction, test_fraction, seed)
    rows: dict[str, list[dict[str, str]]] = {s: [] for s in SPLITS}
    for name in sorted(by_catalog):
        rows[split_of[name]] += [{"prompt": s, "response": t, "catalog": name} for s, t in by_catalog[name]]
    train_sources = {r["prompt"] for r in rows["train"]}
    for split in ("val", "test"):  # unseen domains: no English message of train reappears
        kept = [r for r in rows[split] if r["prompt"] not in train_sources]
        drops[f"{split}_source_in_train"] += len(rows[split]) - len(kept)
        rows[split] = kept
    report = {"catalogs": len(paths), "pairs": {s: len(rows[s]) for s in SPLITS}, "dropped": dict(drops),
              "max_chars": max_chars, "seed": seed,
              "split_catalogs": {s: sorted(c for c, x in split_of.items() if x == s) for s in SPLITS}}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for split in SPLITS:
            write_jsonl(tmp / f"{split}.jsonl", rows[split])
        atomic_write_json(tmp / "report.json", report)
    return report
