"""Score a fine-tuned model on held-out records beside its baselines, in the same run.

translation   chrF and BLEU (zh) of the model's greedy translations, of the identity copy and,
              given the training pairs, of the TF-IDF translation memory
QA            exact match and token F1 of the model's answers and, given the documentation
              index, of TF-IDF retrieval
classifier    accuracy, macro-F1 and confusion of a classifier checkpoint, and, given the
              training records, of TF-IDF + logistic regression
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clusterlm.errors import DataError
from clusterlm.finetune import baselines
from clusterlm.finetune.classifier import load_classifier
from clusterlm.finetune.classify_data import encode_labelled, read_labelled
from clusterlm.finetune.decode import EvalItem, generate_replies, read_eval_items
from clusterlm.finetune.jsonl import read_jsonl, require_str, write_jsonl
from clusterlm.finetune.metrics import classification_scores, qa_scores, translation_scores
from clusterlm.finetune.runfiles import refuse_existing
from clusterlm.finetune.store import load_base, torch_device

Progress = Callable[[int, int], None] | None


def _model_replies(run: str | Path, items: list[EvalItem], max_new_tokens: int | None, device: str,
                   progress: Progress) -> tuple[list[str], dict[str, Any]]:
    loaded = load_base(run, device=torch_device(device))
    tok = loaded.tokenizer
    for i, item in enumerate(items):
        if tok.decode(tok.encode(item.reference, add_special_tokens=False).ids) != item.reference:
            raise DataError(f"record {i + 1}: the checkpoint's tokenizer cannot encode the reference exactly "
                            "(it does not cover this language); fine-tune a checkpoint whose tokenizer does")
    limit = max_new_tokens or min(256, loaded.config.max_seq_len)
    started = time.perf_counter()
    replies = generate_replies(loaded.model, tok, [it.prompt_text for it in items], limit, progress)
    return replies, {"checkpoint": str(loaded.path), "decode_s": round(time.perf_counter() - started, 2),
                     "max_new_tokens": limit}


def _compare(run: str | Path, items: list[EvalItem], baselines_out: dict[str, list[str]],
             score: Callable[[list[str], list[str]], dict[str, float]], *, max_new_tokens: int | None, device: str,
             predictions: str | Path | None, progress: Progress) -> dict[str, Any]:
    """The model's replies and the baselines' outputs, all scored by `score` against the references."""
    replies, info = _model_replies(run, items, max_new_tokens, device, progress)
    systems = {"model": replies, **baselines_out}
    refs = [it.reference for it in items]
    if predictions is not None:
        write_jsonl(predictions, [{"source": it.source, "reference": it.reference,
                                   **{name: out[i] for name, out in systems.items()}} for i, it in enumerate(items)])
    return {**info, "examples": len(items), "scores": {name: score(out, refs) for name, out in systems.items()}}


def eval_translate(run: str | Path, data: str | Path, *, train: str | Path | None = None, limit: int | None = None,
                   max_new_tokens: int | None = None, device: str = "cpu", predictions: str | Path | None = None,
                   overwrite: bool = False, progress: Progress = None) -> dict[str, Any]:
    """chrF and BLEU of the model, the identity copy and (with `train`) the translation memory."""
    refuse_existing(predictions, overwrite)
    items = read_eval_items(data, limit)
    sources = [it.source for it in items]
    systems = {"identity": baselines.identity_translate(sources)}
    train_items = read_eval_items(train) if train else []
    if train_items:
        systems["translation_memory"] = baselines.translation_memory(
            [it.source for it in train_items], [it.reference for it in train_items], sources)
    report = _compare(run, items, systems, translation_scores, max_new_tokens=max_new_tokens, device=device,
                      predictions=predictions, progress=progress)
    return {"data": str(data), "train_pairs": len(train_items) or None, **report}


def read_documents(path: str | Path) -> tuple[list[str], list[str]]:
    """The retrieval index of QA: records `{"document", "answer"}` (written by the QA builder)."""
    docs, answers = [], []
    for number, obj in read_jsonl(path):
        docs.append(require_str(path, number, obj, "document"))
        answers.append(require_str(path, number, obj, "answer"))
    return docs, answers


def eval_qa(run: str | Path, data: str | Path, *, documents: str | Path | None = None, limit: int | None = None,
            max_new_tokens: int | None = 64, device: str = "cpu", predictions: str | Path | None = None,
            overwrite: bool = False, progress: Progress = None) -> dict[str, Any]:
    """Exact match and token F1 of the model and (with `documents`) of TF-IDF retrieval."""
    refuse_existing(predictions, overwrite)
    items = read_eval_items(data, limit)
    systems = {}
    index = read_documents(documents) if documents else None
    if index:
        systems["retrieval"] = baselines.retrieve_answers(index[0], index[1], [it.source for it in items])
    report = _compare(run, items, systems, qa_scores, max_new_tokens=max_new_tokens, device=device,
                      predictions=predictions, progress=progress)
    return {"data": str(data), "documents": len(index[0]) if index else None, **report}


def eval_classifier(run: str | Path, data: str | Path, *, train: str | Path | None = None,
                    device: str = "cpu") -> dict[str, Any]:
    """Accuracy / macro-F1 / confusion of a classifier on labelled records, and of TF-IDF + LR."""
    clf = load_classifier(run, device=torch_device(device))
    rows = read_labelled(data)
    test = encode_labelled(rows, data, clf.labels, clf.tokenizer, clf.max_tokens)  # refuses unseen labels
    started = time.perf_counter()
    probs = clf.predict_ids(test.ids)  # the texts as encode_labelled cut them
    report: dict[str, Any] = {"checkpoint": str(clf.path), "data": str(data), "truncated": test.truncated,
                              "predict_s": round(time.perf_counter() - started, 2),
                              "scores": {"model": classification_scores(test.labels, probs.argmax(-1).tolist(),
                                                                        clf.labels)}}
    if train is not None:
        train_rows = read_labelled(train)
        index = {label: i for i, label in enumerate(clf.labels)}
        unknown = sorted({label for _, _, label in train_rows} - set(index))
        if unknown:
            raise DataError(f"{train}: label '{unknown[0]}' is not one the classifier was trained on")
        preds = baselines.tfidf_logreg([t for _, t, _ in train_rows], [index[lab] for _, _, lab in train_rows],
                                       [t for _, t, _ in rows])
        report["scores"]["tfidf_logreg"] = classification_scores(test.labels, preds, clf.labels)
    return report
