"""Find prepare's input files: explicit paths, directory walks and globs, in a fixed order.

Inputs are files, directories (walked recursively, sorted, hidden dirs skipped)
and globs. Formats by extension: `.txt .md .rst .py` (plain text), `.html .htm`
(HTML), `.jsonl` (one JSON object per line, text in a configurable field), each
optionally compressed as `.gz`, `.xz` or `.zst`. A file named explicitly with an
unknown extension is read as plain text; in directories such files are ignored
(and counted).

Walks never follow symbolic links to directories (so a link loop cannot make a
walk endless; each such link is counted), and a sub-folder that cannot be listed
is counted, not fatal. `**` in a glob is expanded by the same walk, not by
`glob.glob`, which follows directory links and never ends on two self-links.
Nothing here opens a file: whether a path is a regular file is checked when it is
read (`readers.read_file`).
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from clusterlm.errors import DataError

KINDS = {".txt": "text", ".md": "text", ".rst": "text", ".py": "text", ".html": "html", ".htm": "html",
         ".jsonl": "jsonl"}
COMPRESSIONS = (".gz", ".xz", ".zst")
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class InputFile:
    path: Path
    kind: str  # "text" | "html" | "jsonl"
    compression: str  # "" | ".gz" | ".xz" | ".zst"

    @property
    def size_bytes(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0


@dataclass(frozen=True)
class Drop:
    """A document, file or folder that was not used; counted in the report by reason."""

    source: str
    reason: str


@dataclass
class Discovery:
    files: list[InputFile] = field(default_factory=list)  # to read, in order
    ignored: list[Path] = field(default_factory=list)  # unsupported extensions inside directories
    skipped: list[Drop] = field(default_factory=list)  # folders not walked: unlistable_dir, symlinked_dir


def classify(path: Path, explicit: bool) -> InputFile | None:
    """Kind and compression from the file name; None if unsupported (directory walks)."""
    name = path.name.lower()
    compression = next((c for c in COMPRESSIONS if name.endswith(c)), "")
    stem = name[: len(name) - len(compression)] if compression else name
    kind = KINDS.get(os.path.splitext(stem)[1])
    if kind is None:
        if not explicit:
            return None
        kind = "text"
    return InputFile(path, kind, compression)


def discover(inputs: list[str]) -> Discovery:
    """Resolve inputs to files in a deterministic order (plus what was ignored or skipped).

    DataError if an input path does not exist or a glob matches nothing.
    """
    found = Discovery()
    seen: set[Path] = set()

    def add(path: Path, explicit: bool) -> None:
        try:
            key = path.resolve()
        except (OSError, RuntimeError):  # a link loop (RuntimeError before Python 3.13): read_file counts it
            key = path.absolute()
        if key in seen:
            return
        seen.add(key)
        f = classify(path, explicit)
        if f is None:
            found.ignored.append(path)
        else:
            found.files.append(f)

    for item in inputs:
        p = Path(item).expanduser()
        if p.exists():
            matches = [p]
        elif _GLOB_CHARS & set(item):
            matches = expand_glob(os.path.expanduser(item), found.skipped)
            if not matches:
                raise DataError(f"input glob matched no files: {item}")
        elif os.path.lexists(p):
            raise DataError(f"input path is a dangling or looping symbolic link: {item}")
        else:
            raise DataError(f"input path not found: {item}")
        for m in matches:
            if m.is_dir():
                for f in walk_dir(m, skipped=found.skipped):
                    add(f, explicit=False)
            else:
                add(m, explicit=True)
    return found


def walk_dir(
    root: Path, skip_dir: Callable[[str], bool] | None = None, skipped: list[Drop] | None = None
) -> Iterator[Path]:
    """Files under `root`, sorted, skipping hidden directories, `__pycache__` and `skip_dir(name)`.

    Links to directories are not followed and sub-folders that cannot be listed are
    passed over; both are appended to `skipped` (when given) so they can be counted.
    """
    for dirpath, _, filenames in _walk(root, skip_dir, skipped):
        for name in filenames:
            yield Path(dirpath) / name


def _walk(
    root: Path, skip_dir: Callable[[str], bool] | None, skipped: list[Drop] | None
) -> Iterator[tuple[str, list[str], list[str]]]:
    """os.walk in sorted order without hidden names; prunes (and records) what is not walked."""

    def unlistable(exc: OSError) -> None:
        if skipped is not None:
            skipped.append(Drop(str(exc.filename or root), "unlistable_dir"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=unlistable, followlinks=False):
        keep = []
        for d in sorted(dirnames):
            if d.startswith(".") or d == "__pycache__" or (skip_dir and skip_dir(d)):
                continue
            if os.path.islink(os.path.join(dirpath, d)):
                if skipped is not None:
                    skipped.append(Drop(os.path.join(dirpath, d), "symlinked_dir"))
                continue
            keep.append(d)
        dirnames[:] = keep  # os.walk descends only into these
        yield dirpath, keep, sorted(name for name in filenames if not name.startswith("."))


def expand_glob(pattern: str, skipped: list[Drop] | None = None) -> list[Path]:
    """Paths matching `pattern`, sorted. `**` (a whole component) matches any number of
    directories, found by `_walk` (links to directories not followed); other patterns go
    to `glob.glob`, which does not recurse without `**`."""
    parts = pattern.split(os.sep)
    if "**" not in parts:
        return [Path(m) for m in sorted(glob.glob(pattern))]
    fixed = next(i for i, part in enumerate(parts) if _GLOB_CHARS & set(part))
    prefix = os.sep.join(parts[:fixed]) or (os.sep if fixed else "")
    root = Path(prefix or ".")
    if not root.is_dir():
        return []
    matches = []
    for dirpath, dirnames, filenames in _walk(root, None, skipped):
        rel = Path(dirpath).relative_to(root).parts
        for name in [*dirnames, *filenames]:
            if _match([*rel, name], parts[fixed:]):
                matches.append(Path(prefix, *rel, name))
    return sorted(matches)


def _match(parts: list[str], pattern: list[str]) -> bool:
    """Path components against pattern components (`**` = zero or more components)."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match(parts[1:], pattern[1:])
