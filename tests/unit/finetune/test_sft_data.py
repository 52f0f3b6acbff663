"""SFT records: reading, the long-example policy, tokenizer coverage, packing and collation."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from clusterlm.errors import DataError
from clusterlm.finetune.sft_data import Example, collate, load_sft_data, make_rows
from fthelp import write_jsonl

PAIRS = [{"prompt": f"say {w}", "response": f"{w} {w}"} for w in ("fox", "dog", "hello", "world", "你好")]


def test_load_reads_both_record_shapes(tokenizer, tmp_path):
    rows = PAIRS + [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]
    data = load_sft_data(write_jsonl(tmp_path / "d.jsonl", rows), tokenizer, context=64)
    assert len(data.examples) == 6 and data.dropped_long == 0
    assert data.response_tokens == sum(sum(e.trained) for e in data.examples)


@pytest.mark.parametrize("row, message", [
    ({"prompt": "x"}, "field 'response' is missing"),
    ({"prompt": "x", "response": 3}, "field 'response' is a int"),
    ({"prompt": "  ", "response": "y"}, "field 'prompt' is empty"),
    ({"messages": []}, "non-empty list"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "unknown chat role"),
])
def test_bad_records_name_their_line(tokenizer, tmp_path, row, message):
    path = write_jsonl(tmp_path / "d.jsonl", PAIRS[:2] + [row])
    with pytest.raises(DataError, match=f"d.jsonl:3: .*{message}"):
        load_sft_data(path, tokenizer, context=64)


def test_empty_file_and_bad_json_are_refused(tokenizer, tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="empty"):
        load_sft_data(tmp_path / "empty.jsonl", tokenizer, context=64)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "response": "b"}\n[1, 2]\n')
    with pytest.raises(DataError, match="bad.jsonl:2: expected a JSON object"):
        load_sft_data(tmp_path / "bad.jsonl", tokenizer, context=64)


def test_a_long_example_is_refused_or_dropped_and_counted(tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", PAIRS + [{"prompt": "long " * 40, "response": "x"}])
    with pytest.raises(DataError, match=r"d.jsonl:6: the example is \d+ tokens, longer than .*--drop-long"):
        load_sft_data(path, tokenizer, context=56)
    data = load_sft_data(path, tokenizer, context=56, drop_long=True)
    assert data.dropped_long == 1 and len(data.examples) == 5


def test_a_tokenizer_that_cannot_write_the_language_is_refused(tmp_path):
    # A word-level vocabulary with an unknown token: Chinese becomes [UNK], the round trip fails.
    vocab = {"[UNK]": 0, "<|endoftext|>": 1, "say": 2, "fox": 3, "<": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "say fox", "response": "你好"}])
    with pytest.raises(DataError, match="d.jsonl:1: the checkpoint's tokenizer cannot encode this text exactly"):
        load_sft_data(path, tok, context=64)


def _examples(lengths):
    return [Example(list(range(100 * i, 100 * i + n)), [False] * (n // 2) + [True] * (n - n // 2))
            for i, n in enumerate(lengths)]


def test_packing_fills_rows_without_splitting_or_losing_examples():
    examples = _examples([5, 9, 3, 12, 7, 4, 6])
    rows = make_rows(examples, row_tokens=16, packing=True, seed=1)
    assert all(len(r.ids) <= 16 for r in rows)
    assert len(rows) < len(examples)
    packed = sorted(tuple(r.ids) for r in rows)
    # every example appears whole, in one row, once
    flat = [i for r in rows for i in r.ids]
    assert sorted(flat) == sorted(i for e in examples for i in e.ids)
    for e in examples:
        assert any(tuple(e.ids) == row[k:k + len(e.ids)] for row in packed for k in range(len(row)))
    assert make_rows(examples, 16, packing=True, seed=1) == rows  # seeded
    assert len(make_rows(examples, 16, packing=False, seed=1)) == len(examples)


def test_collate_shifts_targets_and_mask_and_pads():
    rows = [Example([1, 2, 3, 4], [False, False, True, True]), Example([5, 6], [False, True])]
    inputs, targets, mask = collate(rows, pad_id=0)
    assert inputs.tolist() == [[1, 2, 3], [5, 0, 0]]
    assert targets.tolist() == [[2, 3, 4], [6, 0, 0]]
    # position t predicts token t+1; it is trained when token t+1 is
    assert mask.tolist() == [[False, True, True], [True, False, False]]
    assert mask.dtype == torch.bool
