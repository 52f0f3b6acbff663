"""The classical baselines each task is measured against, all scikit-learn TF-IDF.

classification   TF-IDF of word uni- and bigrams (identifier-aware tokens) + logistic regression
translation      identity (copy the English source), and a translation memory: the Chinese side
                 of the training pair whose English source is nearest (cosine of character
                 2–4-gram TF-IDF), which is what a CAT tool's fuzzy match returns
question answer  retrieval: the documentation entry (qualified name + docstring) nearest to the
                 question (word TF-IDF), answered with that entry's first sentence
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from clusterlm.finetune.extras import require

# Words and identifiers: runs of letters, digits and underscores, plus the pieces of dotted names.
_TOKEN_PATTERN = r"(?u)\b\w\w+\b"


def tfidf_logreg(train_texts: Sequence[str], train_labels: Sequence[int], test_texts: Sequence[str],
                 seed: int = 0) -> list[int]:
    """Predicted label indices for `test_texts` from a TF-IDF + logistic-regression model."""
    text = require("sklearn.feature_extraction.text")
    linear = require("sklearn.linear_model")
    vectorizer = text.TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, token_pattern=_TOKEN_PATTERN,
                                      max_features=200_000)
    features = vectorizer.fit_transform(train_texts)
    model = linear.LogisticRegression(max_iter=2000, C=10.0, random_state=seed)
    model.fit(features, list(train_labels))
    return [int(p) for p in model.predict(vectorizer.transform(test_texts))]


def identity_translate(sources: Sequence[str]) -> list[str]:
    return list(sources)


def _nearest(index_texts: Sequence[str], queries: Sequence[str], vectorizer: Any, chunk: int = 1024) -> list[int]:
    """Index of the nearest `index_texts` entry (cosine of TF-IDF rows, which are L2-normalised)."""
    matrix = vectorizer.fit_transform(index_texts)  # (N, F)
    out: list[int] = []
    for start in range(0, len(queries), chunk):
        sims = vectorizer.transform(queries[start:start + chunk]) @ matrix.T  # (q, N) sparse
        out += np.asarray(sims.argmax(axis=1)).ravel().tolist()
    return out


def translation_memory(train_sources: Sequence[str], train_targets: Sequence[str],
                       queries: Sequence[str]) -> list[str]:
    """For each query, the target of the most similar training source (character n-gram TF-IDF)."""
    text = require("sklearn.feature_extraction.text")
    vectorizer = text.TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, lowercase=True)
    return [train_targets[i] for i in _nearest(train_sources, queries, vectorizer)]


def retrieve_answers(documents: Sequence[str], answers: Sequence[str], questions: Sequence[str]) -> list[str]:
    """For each question, the answer attached to the most similar document (word TF-IDF)."""
    text = require("sklearn.feature_extraction.text")
    vectorizer = text.TfidfVectorizer(sublinear_tf=True, token_pattern=r"(?u)[A-Za-z0-9]+")
    return [answers[i] for i in _nearest(documents, questions, vectorizer)]
