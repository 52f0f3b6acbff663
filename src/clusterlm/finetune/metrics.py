"""Task metrics, each from the field's standard definition.

classification   accuracy, macro-F1 and the confusion matrix (scikit-learn), plus a PNG of it
translation      chrF and BLEU from sacrebleu, BLEU with its `zh` tokenisation (each Chinese
                 character a token; without it an unsegmented Chinese sentence is one "word")
QA               exact match and token F1 with SQuAD v1.1's answer normalisation (lower case,
                 drop punctuation and the articles a/an/the, collapse whitespace), as in the
                 official evaluation script (Rajpurkar et al. 2016)
"""

from __future__ import annotations

import io
import re
import string
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clusterlm.finetune.extras import require
from clusterlm.fsio import atomic_write_bytes


# --- classification ------------------------------------------------------------------------------

def classification_scores(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 over all `labels` (a class never predicted scores F1 0), per-class F1,
    and the confusion matrix (rows: true label, columns: predicted)."""
    metrics = require("sklearn.metrics")
    ks = list(range(len(labels)))
    per_class = metrics.f1_score(y_true, y_pred, labels=ks, average=None, zero_division=0)
    return {
        "examples": len(y_true),
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "macro_f1": float(metrics.f1_score(y_true, y_pred, labels=ks, average="macro", zero_division=0)),
        "f1_per_class": {label: float(f) for label, f in zip(labels, per_class)},
        "confusion": metrics.confusion_matrix(y_true, y_pred, labels=ks).tolist(),
        "labels": list(labels),
    }


def plot_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str], out: Path, title: str) -> Path:
    """The confusion matrix as a PNG (counts in the cells; rows true, columns predicted)."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    k = len(labels)
    size = max(4.0, 0.55 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=110)
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(k), labels, rotation=60, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    peak = max(max(row) for row in confusion) or 1
    for i in range(k):
        for j in range(k):
            value = confusion[i][j]
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                    color="white" if value > peak / 2 else "black")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())
    return out


# --- translation ---------------------------------------------------------------------------------

def translation_scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus chrF (character 6-grams, β = 2) and BLEU (zh tokenisation), both 0–100."""
    sacrebleu = require("sacrebleu")
    refs = [list(references)]
    chrf = sacrebleu.metrics.CHRF().corpus_score(list(hypotheses), refs).score
    bleu = sacrebleu.metrics.BLEU(tokenize="zh").corpus_score(list(hypotheses), refs).score
    return {"chrf": float(chrf), "bleu": float(bleu), "examples": len(references)}


# --- question answering --------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall over the normalised bags of words."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)  # both empty: 1; one empty: 0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def qa_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean exact match and token F1, in percent (as SQuAD reports them)."""
    n = len(references)
    em = sum(exact_match(p, r) for p, r in zip(predictions, references))
    f1 = sum(token_f1(p, r) for p, r in zip(predictions, references))
    return {"exact_match": 100.0 * em / max(n, 1), "f1": 100.0 * f1 / max(n, 1), "examples": n}
