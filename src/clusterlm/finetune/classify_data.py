"""Classification records (`{"text", "label"}` JSONL) → token ids and label indices.

Labels are strings (integers are accepted and read as their decimal string). The label set
is the training file's; a validation or test label outside it is an error, because the head
has no output for it. Texts longer than `max_tokens` are cut to their first `max_tokens`
tokens and counted (classification keeps working on a prefix, unlike SFT, where a cut
would lose the reply).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterlm.errors import DataError, UsageError
from clusterlm.finetune.jsonl import read_jsonl, require_str


@dataclass
class LabelledSet:
    ids: list[list[int]]
    labels: list[int]  # indices into the label list
    truncated: int
    path: Path


def read_labelled(path: str | Path) -> list[tuple[int, str, str]]:
    """(line, text, label) of every record; DataError for a missing text or label."""
    path = Path(path)
    rows = []
    for number, obj in read_jsonl(path):
        text = require_str(path, number, obj, "text")
        label = obj.get("label")
        if isinstance(label, bool) or not isinstance(label, (str, int)) or (isinstance(label, str) and not label.strip()):
            what = "missing" if label is None else f"{label!r}, not a non-empty string"
            raise DataError(f"{path}:{number}: field 'label' is {what}")
        rows.append((number, text, str(label)))
    return rows


def label_set(rows: list[tuple[int, str, str]], path: Path) -> list[str]:
    labels = sorted({label for _, _, label in rows})
    if len(labels) < 2:
        raise DataError(f"{path} has {len(labels)} distinct label(s); classification needs at least 2")
    return labels


def encode_labelled(rows: list[tuple[int, str, str]], path: str | Path, labels: list[str], tokenizer: Any,
                    max_tokens: int) -> LabelledSet:
    index = {label: i for i, label in enumerate(labels)}
    ids, ys, truncated = [], [], 0
    for number, text, label in rows:
        if label not in index:
            raise DataError(f"{path}:{number}: label '{label}' does not occur in the training data "
                            f"(the head knows: {', '.join(labels)})")
        tokens = tokenizer.encode(text, add_special_tokens=False).ids
        if not tokens:
            raise DataError(f"{path}:{number}: the text encodes to no tokens")
        if len(tokens) > max_tokens:
            truncated += 1
            tokens = tokens[:max_tokens]
        ids.append(tokens)
        ys.append(index[label])
    return LabelledSet(ids, ys, truncated, Path(path))


def class_weights(spec: str, labels: list[str], train_labels: list[int]) -> list[float] | None:
    """`none`, `balanced` (n / (K · n_k), scikit-learn's rule) or `LABEL=W,LABEL=W` (others 1)."""
    if spec == "none":
        return None
    counts = Counter(train_labels)
    if spec == "balanced":
        n, k = len(train_labels), len(labels)
        return [n / (k * counts[i]) for i in range(k)]
    weights = [1.0] * len(labels)
    for item in spec.split(","):
        name, sep, value = item.partition("=")
        if not sep or name not in labels:
            raise UsageError(f"--class-weights takes none, balanced or LABEL=W,…; '{item}' names no training label")
        try:
            weights[labels.index(name)] = float(value)
        except ValueError:
            raise UsageError(f"--class-weights: '{value}' is not a number") from None
        if weights[labels.index(name)] <= 0:
            raise UsageError(f"--class-weights: the weight of '{name}' must be > 0")
    return weights
