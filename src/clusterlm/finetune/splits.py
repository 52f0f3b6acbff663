"""Split data by group (catalog, module, file), never by item, so held-out groups are unseen.

Groups are visited in a seeded hash order; each goes to test, then val, until that split
holds its fraction of the items, skipping a group that would overshoot it by more than the
fraction again (one huge catalog must not become the whole test set); the rest is train.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from clusterlm.errors import DataError

SPLITS = ("train", "val", "test")


def assign_splits(sizes: Mapping[str, int], val_fraction: float, test_fraction: float,
                  seed: int = 0) -> dict[str, str]:
    """group → "train" | "val" | "test"; DataError when a split would be empty."""
    order = sorted(sizes, key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    total = sum(sizes.values())
    target = {"test": test_fraction * total, "val": val_fraction * total}
    filled = {"test": 0, "val": 0}
    out = {}
    for group in order:
        out[group] = "train"
        for split in ("test", "val"):
            if filled[split] < target[split] and filled[split] + sizes[group] <= 2 * target[split]:
                out[group] = split
                filled[split] += sizes[group]
                break
    for split in SPLITS:
        fraction = {"train": 1.0, "val": val_fraction, "test": test_fraction}[split]
        if fraction > 0 and split not in out.values():
            raise DataError(f"too few groups ({len(sizes)}) to give the {split} split its own; "
                            "add inputs or change the split fractions")
    return out
