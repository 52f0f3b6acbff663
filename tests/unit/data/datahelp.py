"""Synthetic corpora for the data tests (importable: tests have no packages)."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma "
         "tau upsilon phi chi psi omega def return class import from self print value index").split()


def make_text(rng: random.Random, n_words: int) -> str:
    lines, line = [], []
    for _ in range(n_words):
        line.append(rng.choice(WORDS))
        if len(line) >= rng.randint(4, 12):
            lines.append(" ".join(line))
            line = []
    lines.append(" ".join(line))
    return "\n".join(lines) + "\n"


def write_corpus(root: Path, n_docs: int = 40, n_words: int = 120, seed: int = 0) -> Path:
    """`n_docs` distinct plain-text documents under root/ (two sub-directories)."""
    rng = random.Random(seed)
    for i in range(n_docs):
        path = root / f"part{i % 2}" / f"doc{i:03d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# document {i}\n" + make_text(rng, n_words), encoding="utf-8")
    return root
