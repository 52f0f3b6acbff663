"""The shared decode loop: continuous batching gives every sequence exactly what it gets alone."""

from __future__ import annotations

import pytest
import torch
from generate_harness import GREEDY, STYLES, VOCAB, tiny_model

from clusterlm.generate.engine import DecodeEngine, GenerationSettings
from clusterlm.generate.generator import generate_ids
from clusterlm.generate.kv_cache import new_cache
from clusterlm.generate.sampling import SamplingSettings

_model = tiny_model


def _requests() -> list[tuple[list[int], GenerationSettings]]:
    """Prompts of 1 … 20 tokens (20 > the 16-token window: cropped, then sliding), budgets of
    1 … 30 tokens, greedy and seeded sampling, one with end-of-text."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i, (length, budget) in enumerate([(1, 12), (7, 30), (20, 9), (3, 1), (12, 25), (5, 17), (9, 4)]):
        prompt = torch.randint(0, VOCAB, (length,), generator=g).tolist()
        sampling = SamplingSettings(temperature=0.9, top_k=20, top_p=0.9) if i % 3 == 1 else GREEDY
        out.append((prompt, GenerationSettings(max_new_tokens=budget, sampling=sampling, seed=100 + i,
                                               eos_id=7 if i == 4 else None)))
    return out


def _run_batched(model, requests, max_batch: int, arrive_every: int) -> tuple[list[list[int]], int]:
    """Requests join every `arrive_every` steps; returns each one's tokens and the largest batch."""
    engine = DecodeEngine(model, max_batch=max_batch)
    outputs: dict[int, list[int]] = {}
    pending, seqs, peak, step = list(requests), [], 0, 0
    while pending or engine.has_work:
        if pending and step % arrive_every == 0:
            prompt, settings = pending.pop(0)
            seqs.append(engine.add(prompt, settings))
        for event in engine.step():
            assert event.error is None
            if event.token_id is not None:
                outputs.setdefault(event.sequence.id, []).append(event.token_id)
        peak, step = max(peak, len(engine.running)), step + 1
    return [outputs.get(seq.id, []) for seq in seqs], peak


@pytest.mark.parametrize("name", list(STYLES))
def test_batched_sequences_get_exactly_what_they_get_alone(name):
    model = _model(name)
    requests = _requests()
    alone = [list(generate_ids(model, prompt, settings)) for prompt, settings in requests]
    assert len(set(map(tuple, alone))) == len(alone)  # distinct continuations: a mix-up would show
    for max_batch, arrive_every in ((4, 1), (16, 2), (3, 3)):
        batched, peak = _run_batched(model, requests, max_batch, arrive_every)
        assert peak > 1  # really decoded together
        assert batched == alone, (max_batch, arrive_every)


def test_a_cancelled_sequence_frees_its_row_and_leaves_the_others_alone():
    model = _model("llama-gqa", max_seq_len=64)
    engine = DecodeEngine(model, max_batch=2)
    settings = GenerationSettings(max_new_tokens=20, sampling=GREEDY)
    a, b, c = (engine.add(p, settings) for p in ([1, 2, 3], [4, 5], [6, 7, 8, 9]))
    outputs: dict[int, list[int]] = {a.id: [], b.id: [], c.id: []}

    def collect() -> None:
        for event in engine.step():
            if event.token_id is not None:
                outputs[event.sequence.id].append(event.token_id)

    for _ in range(3):
        collect()
    assert [s.id for s in engine.running] == [a.id, b.id] and list(engine.waiting) == [c]
    engine.cancel(a)  # a's row goes to b (compaction), c takes the free one at the next step
    assert engine.running == [b] and b.row == 0
    while engine.has_work:
        collect()
    assert len(outputs[a.id]) == 3 and a.finish_reason == "cancelled"
    for seq, prompt in ((b, [4, 5]), (c, [6, 7, 8, 9])):
        assert outputs[seq.id] == list(generate_ids(model, prompt, settings))


def test_batched_decode_logits_match_each_row_alone():
    """The per-row position path of the model (a (B,) start_pos with a padded cache) against a
    plain full forward of each row."""
    for name in ("gpt2", "llama-gqa"):
        model = _model(name, max_seq_len=32)
        rows = [torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(n)) for n in (3, 11, 6)]
        cache = new_cache(model, n_rows=3)
        with torch.no_grad():
            for r, tokens in enumerate(rows):  # prefill all but the last token of each row
                model(tokens[None, :-1], kv_cache=cache.rows(r, 1), start_pos=0)
            last = torch.stack([t[-1:] for t in rows])  # (3, 1)
            positions = torch.tensor([len(t) - 1 for t in rows])
            batched = model(last, kv_cache=cache.rows(0, 3), start_pos=positions)[:, -1]
            alone = torch.cat([model(t[None])[:, -1] for t in rows])
        torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)


def test_logprobs_are_the_models_log_softmax():
    model = _model("gpt2")
    engine = DecodeEngine(model)
    seq = engine.add([1, 2, 3], GenerationSettings(max_new_tokens=1, sampling=GREEDY), top_logprobs=3)
    (event,) = engine.step()
    with torch.no_grad():
        expected = torch.log_softmax(model(torch.tensor([[1, 2, 3]]))[0, -1], dim=-1)
    assert event.token_id == int(expected.argmax()) and event.finish_reason == "length"
    assert event.logprob == pytest.approx(float(expected.max()), abs=1e-5)
    assert [i for i, _ in event.top_logprobs] == expected.topk(3).indices.tolist()
    assert seq.finish_reason == "length" and not engine.has_work


def test_zero_budget_and_failing_rows_finish_without_stopping_the_rest():
    model = _model("gpt2")
    engine = DecodeEngine(model, max_batch=4)
    nothing = engine.add([1, 2], GenerationSettings(max_new_tokens=0))
    fine = engine.add([3, 4], GenerationSettings(max_new_tokens=2, sampling=GREEDY))
    events = engine.step()
    assert [(e.sequence, e.token_id, e.finish_reason) for e in events][0] == (nothing, None, "length")
    assert events[1].sequence is fine and events[1].token_id is not None
    boom = RuntimeError("boom")
    failed = engine.fail_running(boom)
    assert [(e.sequence, e.finish_reason, e.error) for e in failed] == [(fine, "error", boom)]
    assert not engine.has_work
