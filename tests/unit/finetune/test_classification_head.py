"""Classification: pooling over padded batches, label handling, class weights, train → save → load."""

from __future__ import annotations

import pytest
import torch

from clusterlm.errors import CheckpointError, DataError, UsageError
from clusterlm.finetune.body import hidden_states, pad_batch, pool
from clusterlm.finetune.classifier import load_classifier
from clusterlm.finetune.classify_data import class_weights, encode_labelled, label_set, read_labelled
from clusterlm.finetune.classify_train import ClassifyOptions, finetune_classify
from clusterlm.finetune.loop import LoopSettings
from clusterlm.finetune.store import load_base
from fthelp import write_jsonl

ROWS = ([{"text": f"the quick brown fox {i}", "label": "fox"} for i in range(8)]
        + [{"text": f"def f(x):\n    return x + {i}", "label": "code"} for i in range(8)])


@pytest.mark.parametrize("mode", ["last", "mean"])
def test_pooling_a_padded_batch_equals_pooling_each_sequence_alone(base_ckpt, mode):
    lm = load_base(base_ckpt).model
    seqs = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    tokens, lengths = pad_batch(seqs, pad_id=1)
    batched = pool(hidden_states(lm, tokens), lengths, mode)  # (3, C)
    for i, s in enumerate(seqs):
        h = hidden_states(lm, torch.tensor([s]))  # (1, T, C)
        expected = h[0, -1] if mode == "last" else h[0].mean(0)
        torch.testing.assert_close(batched[i], expected, rtol=1e-5, atol=1e-5)


def test_labels_and_class_weights(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "t.jsonl", ROWS[:3] + ROWS[8:9] + [{"text": "x y", "label": 7}])
    rows = read_labelled(path)
    labels = label_set(rows, path)
    assert labels == ["7", "code", "fox"]
    data = encode_labelled(rows, path, labels, tokenizer, max_tokens=4)
    assert data.truncated == 4 and all(len(i) <= 4 for i in data.ids)
    # balanced: n / (K · n_k) with counts 7:1, code:1, fox:3
    assert class_weights("balanced", labels, data.labels) == pytest.approx([5 / 3, 5 / 3, 5 / 9])
    assert class_weights("fox=2", labels, data.labels) == [1.0, 1.0, 2.0]
    assert class_weights("none", labels, data.labels) is None
    with pytest.raises(UsageError, match="'cat=2' names no training label"):
        class_weights("cat=2", labels, data.labels)


@pytest.mark.parametrize("row, message", [
    ({"text": "x"}, "field 'label' is missing"),
    ({"text": "x", "label": ""}, "field 'label' is '', not a non-empty string"),
    ({"label": "fox"}, "field 'text' is missing"),
])
def test_bad_labelled_records(tmp_path, row, message):
    with pytest.raises(DataError, match=f"t.jsonl:2: {message}"):
        read_labelled(write_jsonl(tmp_path / "t.jsonl", [ROWS[0], row]))


def test_unseen_validation_label_and_single_class_are_refused(base_ckpt, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", ROWS)
    val = write_jsonl(tmp_path / "val.jsonl", ROWS[:2] + [{"text": "meow", "label": "cat"}])
    with pytest.raises(DataError, match="val.jsonl:3: label 'cat' does not occur in the training data"):
        finetune_classify(base_ckpt, train, val, tmp_path / "run")
    one = write_jsonl(tmp_path / "one.jsonl", ROWS[:4])
    with pytest.raises(DataError, match="1 distinct label"):
        finetune_classify(base_ckpt, one, one, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("method", ["full", "head"])
def test_train_save_load_predict(base_ckpt, tmp_path, method):
    data = write_jsonl(tmp_path / "d.jsonl", ROWS)
    summary = finetune_classify(base_ckpt, data, data, tmp_path / "run",
                                options=ClassifyOptions(method=method, pooling="mean"),
                                settings=LoopSettings(lr=3e-2, epochs=15, batch_size=8))
    assert summary["validation"]["accuracy"] == 1.0  # in-sample, two easy classes
    assert (tmp_path / "run" / "plots" / "confusion.png").stat().st_size > 1000
    clf = load_classifier(tmp_path / "run")
    probs = clf.predict_proba(["the quick brown fox 99", "def f(x):\n    return x + 99"])
    assert clf.labels == ["code", "fox"]
    assert probs.argmax(-1).tolist() == [1, 0]
    torch.testing.assert_close(probs.sum(-1), torch.ones(2))
    base = load_base(base_ckpt).model.state_dict()
    tuned = load_base(tmp_path / "run").model.state_dict()
    body_changed = any(not torch.equal(base[k], tuned[k]) for k in base)
    assert body_changed == (method == "full")


def test_a_plain_lm_checkpoint_is_not_a_classifier(base_ckpt):
    with pytest.raises(CheckpointError, match="without a classification head"):
        load_classifier(base_ckpt)
