"""The embedded default corpus: the running Python's standard library sources.

Present on every machine that runs clusterlm, about 10 MB of real text (code,
docstrings, comments; `pydoc_data` adds the language reference's topic texts),
and nothing is downloaded. Excluded: the test suites (huge, repetitive data
files), third-party packages (`site-packages`), IDLE and turtle demos, bundled
wheels and build configuration.
"""

from __future__ import annotations

import sysconfig
from collections.abc import Iterator
from pathlib import Path

from clusterlm.data.inputs import InputFile, classify, walk_dir

# Directory names skipped anywhere under the stdlib root.
EXCLUDED_DIRS = frozenset(
    {
        "site-packages", "dist-packages", "test", "tests", "idle_test", "idlelib", "turtledemo",
        "__pycache__", "lib-dynload", "ensurepip", "_bundled",
    }
)
EXTENSIONS = (".py", ".txt", ".rst", ".html")


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def corpus_paths(root: Path | None = None) -> Iterator[Path]:
    """Every file of the default corpus's tree (tests, build configs and the like left out), sorted."""
    return walk_dir(root or stdlib_dir(), skip_dir=lambda name: name in EXCLUDED_DIRS or name.startswith("config-"))


def default_corpus_files(root: Path | None = None) -> list[InputFile]:
    """The default corpus as input files, in a deterministic (sorted path) order."""
    files: list[InputFile] = []
    for path in corpus_paths(root):
        if path.suffix in EXTENSIONS:
            f = classify(path, explicit=True)
            if f is not None:
                files.append(f)
    return files


def describe() -> str:
    return f"Python standard library sources ({stdlib_dir()})"
