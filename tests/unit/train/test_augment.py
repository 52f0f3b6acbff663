from __future__ import annotations

import itertools

import torch

from clusterlm.train.augment import augment_batch, augment_generator, doc_shuffle, span_mask


def test_span_mask_masks_about_rate_of_inputs_and_keeps_targets():
    x = torch.arange(1, 1 + 4 * 300).reshape(4, 300)
    y = x + 1
    xm, ym = augment_batch("span_mask", x, y, rate=0.1, eos_id=0, pad_id=-1, generator=augment_generator(0, 0, 0))
    frac = (xm == -1).float().mean().item()
    assert 0.05 < frac <= 0.1 + 1e-6
    assert torch.equal(ym, y)
    assert torch.equal(xm[xm != -1], x[xm != -1])


def test_augmentation_is_a_function_of_seed_step_micro():
    x = torch.arange(200).reshape(2, 100)
    a = span_mask(x, 0.2, -1, augment_generator(1, 5, 0))
    b = span_mask(x, 0.2, -1, augment_generator(1, 5, 0))
    c = span_mask(x, 0.2, -1, augment_generator(1, 6, 0))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_doc_shuffle_permutes_documents_and_keeps_shift():
    eos = 0
    window = torch.tensor([[1, 2, 0, 3, 4, 5, 0, 6, 7, 0, 8, 9]])
    x, y = window[:, :-1], window[:, 1:]
    pieces = [[1, 2, 0], [3, 4, 5, 0], [6, 7, 0], [8, 9]]
    concatenations = [sum(p, []) for p in itertools.permutations(pieces)]
    changed = False
    for seed in range(10):
        xs, ys = doc_shuffle(x, y, eos, augment_generator(seed, 0, 0))
        assert torch.equal(xs[:, 1:], ys[:, :-1])  # still a shifted pair
        full = torch.cat([xs, ys[:, -1:]], 1)[0].tolist()
        assert full in concatenations  # the same documents, intact, in some order
        changed |= full != window[0].tolist()
    assert changed
