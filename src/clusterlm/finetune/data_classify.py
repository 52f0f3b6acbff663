"""Labelled text from the Python standard library: source snippets labelled by top-level package.

Each `.py` file of a package directory with at least `min_files` modules (asyncio, email,
multiprocessing, xml, …) is cut into snippets of whole lines, about `max_chars` long; the
label is the package. `encodings` is left out (generated codec tables: one template repeated,
trivially recognised). At most `per_file` snippets come from one file, so a few huge
modules do not dominate a class. The split is by file: validation and test snippets come
from modules never seen in training. The same files are part of the default pretraining
corpus, so a model pretrained on it has read this text (without the labels).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from clusterlm.data.corpus import corpus_paths, stdlib_dir
from clusterlm.errors import DataError
from clusterlm.finetune.jsonl import write_jsonl
from clusterlm.finetune.splits import SPLITS, assign_splits
from clusterlm.fsio import atomic_dir, atomic_write_json

EXCLUDED_FAMILIES = frozenset({"encodings"})


def snippets(text: str, max_chars: int, min_chars: int) -> list[str]:
    """Consecutive whole lines, each piece up to about `max_chars` characters, short pieces dropped."""
    pieces, current = [], ""
    for line in text.splitlines(keepends=True):
        if current and len(current) + len(line) > max_chars:
            pieces.append(current)
            current = ""
        current += line[:max_chars]
    if current:
        pieces.append(current)
    return [p.strip("\n") for p in pieces if len(p.strip()) >= min_chars]


def package_files(root: Path, min_files: int) -> dict[str, list[Path]]:
    """Top-level package → its .py files, for packages with ≥ `min_files` files."""
    families: dict[str, list[Path]] = {}
    for path in corpus_paths(root):
        rel = path.relative_to(root)
        if path.suffix == ".py" and len(rel.parts) > 1 and rel.parts[0] not in EXCLUDED_FAMILIES:
            families.setdefault(rel.parts[0], []).append(path)
    return {name: sorted(files) for name, files in sorted(families.items()) if len(files) >= min_files}


def build_classification_data(out: str | Path, root: str | Path | None = None, *, min_files: int = 10,
                              max_chars: int = 400, min_chars: int = 80, per_file: int = 12,
                              val_fraction: float = 0.15, test_fraction: float = 0.15, seed: int = 0,
                              overwrite: bool = False) -> dict[str, Any]:
    """Write `out/{train,val,test}.jsonl` (`text`, `label`, `file`) and report.json."""
    root = Path(root) if root else stdlib_dir()
    families = package_files(root, min_files)
    if len(families) < 2:
        raise DataError(f"{root} has {len(families)} package(s) with ≥ {min_files} modules; need 2 (lower --min-files)")
    by_file: dict[str, list[dict[str, str]]] = {}
    for label, files in families.items():
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            rel = str(path.relative_to(root))
            pieces = snippets(text, max_chars, min_chars)
            step = max(1, len(pieces) // per_file)  # spread the kept snippets over the whole file
            by_file[rel] = [{"text": p, "label": label, "file": rel} for p in pieces[::step][:per_file]]
    # Split within each package, so every class is in every split.
    rows: dict[str, list[dict[str, str]]] = {s: [] for s in SPLITS}
    for label in families:
        files = {f: len(r) for f, r in by_file.items() if r and r[0]["label"] == label}
        for f, split in assign_splits(files, val_fraction, test_fraction, seed).items():
            rows[split] += by_file[f]
    report = {"root": str(root), "labels": list(families), "examples": {s: len(rows[s]) for s in SPLITS},
              "per_label": {s: dict(Counter(r["label"] for r in rows[s])) for s in SPLITS},
              "max_chars": max_chars, "per_file": per_file, "seed": seed}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        for split in SPLITS:
            write_jsonl(tmp / f"{split}.jsonl", rows[split])
        atomic_write_json(tmp / "report.json", report)
    return report
