from __future__ import annotations

import numpy as np
import torch
from torch import nn

from clusterlm.data.loader import Dataset
from clusterlm.eval.runner import evaluate_split


class _Recorder(nn.Module):
    """Uniform predictions; remembers every input batch."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab, self.seen = vocab, []

    def forward(self, x):
        self.seen.append(x.clone())
        return torch.zeros(*x.shape, self.vocab)


def test_partial_evaluation_spreads_windows_over_the_split(tiny_data):
    ds = Dataset.open(tiny_data)
    tokens = np.asarray(ds.tokens("train")).astype(np.int64)
    windows = (len(tokens) - 1) // 16
    model = _Recorder(ds.vocab_size)
    stats = evaluate_split(model, ds, "train", seq_len=16, batch_size=2, max_batches=2, device=torch.device("cpu"))
    stride = windows // 4
    starts = [k * stride * 16 for k in range(4)]  # every stride-th window, from the start to the end
    got = torch.cat(model.seen)
    assert got.shape == (4, 16) and stats.tokens == 64
    for row, start in zip(got, starts):
        assert row.tolist() == tokens[start:start + 16].tolist()
    assert starts[-1] > len(tokens) // 2  # reaches the second half of the split


def test_full_evaluation_covers_every_window_once(tiny_data):
    ds = Dataset.open(tiny_data)
    model = _Recorder(ds.vocab_size)
    stats = evaluate_split(model, ds, "val", seq_len=16, batch_size=3, max_batches=None, device=torch.device("cpu"))
    assert stats.tokens == (ds.num_tokens("val") - 1) // 16 * 16
    assert torch.cat(model.seen)[0].tolist() == np.asarray(ds.tokens("val"))[:16].astype(np.int64).tolist()
