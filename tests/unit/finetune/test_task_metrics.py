"""Metric code against hand-computed examples and against sacrebleu / scikit-learn themselves."""

from __future__ import annotations

import pytest
import sacrebleu

from clusterlm.finetune.metrics import (classification_scores, exact_match, normalize_answer, qa_scores,
                                        token_f1, translation_scores)


def test_squad_normalisation_and_exact_match():
    assert normalize_answer("The  Cat, sat on a mat!") == "cat sat on mat"
    assert exact_match("the cat.", "Cat") == 1.0
    assert exact_match("a cat sat", "cat") == 0.0


def test_token_f1_by_hand():
    # pred tokens: cat sat mat ; ref tokens: cat sat on mat → common 3, P = 3/3, R = 3/4, F1 = 6/7
    assert token_f1("the cat sat mat", "A cat sat on the mat") == pytest.approx(6 / 7)
    # repeated words count with multiplicity: pred "a a b" → [b] vs ref "b b" → common 1, P 1, R 1/2
    assert token_f1("x x b", "b b") == pytest.approx(2 * (1 / 3) * (1 / 2) / (1 / 3 + 1 / 2))
    assert token_f1("", "") == 1.0 and token_f1("the", "cat") == 0.0
    scores = qa_scores(["the cat", "dog"], ["cat", "a cat"])
    assert scores["exact_match"] == pytest.approx(50.0) and scores["f1"] == pytest.approx(50.0)


def test_translation_scores_equal_sacrebleu_with_zh_tokenisation():
    hyps = ["我爱你", "无法打开文件 %s", "选项"]
    refs = ["我爱他", "无法读取文件 %s", "选项："]
    scores = translation_scores(hyps, refs)
    assert scores["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert scores["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize="zh").score)
    # zh tokenisation matters: unsegmented Chinese is one "word" per sentence under 13a.
    assert scores["bleu"] > sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a").score
    perfect = translation_scores(refs, refs)
    assert perfect["chrf"] == pytest.approx(100.0) and perfect["bleu"] == pytest.approx(100.0)


def test_classification_scores_by_hand():
    labels = ["a", "b", "c"]
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 0, 2]
    s = classification_scores(y_true, y_pred, labels)
    assert s["accuracy"] == pytest.approx(4 / 6)
    # F1: a: P 1/2 R 1/2 → 1/2; b: P 2/3 R 1 → 4/5; c: P 1 R 1/2 → 2/3
    assert s["f1_per_class"] == pytest.approx({"a": 0.5, "b": 0.8, "c": 2 / 3})
    assert s["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert s["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # A class that is never predicted nor present still counts in the macro average (F1 0).
    assert classification_scores([0, 1], [0, 1], ["a", "b", "c"])["macro_f1"] == pytest.approx(2 / 3)
