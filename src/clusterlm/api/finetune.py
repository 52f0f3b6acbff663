"""Library entry points of the fine-tuning verbs: one function each, called by the CLI.

    finetune_classify   `clusterlm finetune classify`   train a classifier, score it on val
    finetune_sft        `clusterlm finetune sft`        supervised fine-tuning (full or LoRA)
    build_data          `clusterlm finetune data TASK`  the offline datasets (classify, translate, qa)
    classify_texts      `clusterlm classify CKPT TEXT`  label probabilities of texts
    eval_classifier     `clusterlm classify CKPT --data`
    eval_translate      `clusterlm eval-translate`      chrF/BLEU vs identity and translation memory
    eval_qa             `clusterlm eval-qa`             EM/F1 vs TF-IDF retrieval

Every function validates its inputs before writing anything, raises `clusterlm.errors`
exceptions for bad input, and returns a JSON-serialisable dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clusterlm.errors import UsageError
from clusterlm.finetune.classifier import load_classifier
from clusterlm.finetune.data_classify import build_classification_data
from clusterlm.finetune.data_qa import build_qa_data
from clusterlm.finetune.data_translate import build_translation_data
from clusterlm.finetune.classify_train import ClassifyOptions, finetune_classify
from clusterlm.finetune.evaluate import eval_classifier, eval_qa, eval_translate
from clusterlm.finetune.loop import LoopSettings
from clusterlm.finetune.runfiles import refuse_existing
from clusterlm.finetune.sft_train import SFTOptions, finetune_sft
from clusterlm.finetune.store import torch_device
from clusterlm.generate.text import require_text

__all__ = ["ClassifyOptions", "LoopSettings", "SFTOptions", "build_data", "classify_texts", "eval_classifier",
           "eval_qa", "eval_translate", "finetune_classify", "finetune_sft"]

TASKS = ("classify", "translate", "qa")


def build_data(task: str, out: str | Path, *, sources: Sequence[str] = (), seed: int = 0,
               overwrite: bool = False) -> dict[str, Any]:
    """Build a task's dataset offline into `out`. `sources`: catalogs/globs (translate) or one
    source root (classify, qa; default this Python's standard library)."""
    if task not in TASKS:
        raise UsageError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    refuse_existing(out, overwrite)
    if task == "translate":
        return build_translation_data(out, list(sources) or None, seed=seed, overwrite=overwrite)
    if len(sources) > 1:
        raise UsageError(f"'{task}' takes one source root (a directory of Python sources)")
    root = sources[0] if sources else None
    if root is not None and not Path(root).is_dir():
        raise UsageError(f"{root} is not a directory")
    if task == "classify":
        return build_classification_data(out, root, seed=seed, overwrite=overwrite)
    return build_qa_data(out, root, seed=seed, overwrite=overwrite)


def classify_texts(checkpoint: str | Path, texts: Sequence[str], device: str = "cpu") -> list[dict[str, Any]]:
    """For each text: the top label and every label's probability (highest first)."""
    if not texts or any(not t.strip() for t in texts):
        raise UsageError("give at least one non-empty text to classify")
    for i, text in enumerate(texts):
        require_text(text, f"TEXT {i + 1}")
    clf = load_classifier(checkpoint, device=torch_device(device))
    probs = clf.predict_proba(list(texts))
    out = []
    for text, row in zip(texts, probs.tolist()):
        ranked = sorted(zip(clf.labels, row), key=lambda lp: -lp[1])
        out.append({"text": text, "label": ranked[0][0], "probabilities": dict(ranked)})
    return out
