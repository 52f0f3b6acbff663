"""KV-cache decoding, sampling and streaming decoding."""

from __future__ import annotations

import pytest
import torch
from generate_harness import GREEDY, STYLES, VOCAB, tiny_model

from clusterlm.errors import UsageError
from clusterlm.generate.generator import GenerationSettings, StreamDecoder, generate_ids, generate_text
from clusterlm.generate.kv_cache import KVCache, RecurrentState, new_cache
from clusterlm.generate.sampling import SamplingSettings, filter_logits, sample_next
from clusterlm.model.build import build_model
from clusterlm.config.model import ModelConfig

_model = tiny_model


@pytest.mark.parametrize("name", list(STYLES))
def test_greedy_output_is_identical_with_and_without_cache(name):
    model = _model(name)
    prompt = list(range(1, 21))  # 20 tokens: longer than the 16-token context
    outputs = [
        list(generate_ids(model, prompt, GenerationSettings(max_new_tokens=40, sampling=GREEDY, use_kv_cache=c)))
        for c in (True, False)
    ]
    assert len(outputs[0]) == 40
    assert outputs[0] == outputs[1]
    assert len(set(outputs[0])) > 1  # a real continuation, not one token repeated


@pytest.mark.parametrize("name", ["gpt2", "llama-gqa"])
def test_cached_logits_match_a_full_forward(name):
    model = _model(name, max_seq_len=32)
    tokens = torch.randint(0, VOCAB, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(tokens)
        cache = new_cache(model)
        # prefill 8, then a 5-token chunk (needs the bottom-right causal mask), then single tokens
        parts = [model(tokens[:, :8], kv_cache=cache, start_pos=0), model(tokens[:, 8:13], kv_cache=cache, start_pos=8)]
        parts += [model(tokens[:, i:i + 1], kv_cache=cache, start_pos=i) for i in range(13, 20)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-5)


def test_kv_cache_is_preallocated_and_grouped_query_sized():
    model = _model("llama-gqa", max_seq_len=32)
    cache = new_cache(model)
    assert isinstance(cache, KVCache)
    with torch.no_grad():
        model(torch.tensor([[1, 2, 3]]), kv_cache=cache, start_pos=0)
        buffer = cache.layer(0).k
        assert tuple(buffer.shape) == (1, 2, 32, 8)  # (B, Hkv, S_max, D): 2 KV heads, not 4
        for pos in range(3, 10):
            model(torch.tensor([[pos]]), kv_cache=cache, start_pos=pos)
    assert cache.layer(0).k is buffer  # written in place, never reallocated


def test_recurrent_state_continues_and_refuses_to_rewind():
    model = _model("lstm")
    state = new_cache(model)
    assert isinstance(state, RecurrentState)
    tokens = torch.randint(0, VOCAB, (1, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(tokens)
        step = torch.cat([model(tokens[:, :5], kv_cache=state, start_pos=0)]
                         + [model(tokens[:, i:i + 1], kv_cache=state, start_pos=i) for i in range(5, 12)], dim=1)
        torch.testing.assert_close(step, full, rtol=1e-5, atol=1e-6)
        with pytest.raises(ValueError, match="cannot rewind"):
            model(tokens[:, :1], kv_cache=state, start_pos=3)


def test_generation_stops_at_eos():
    model = _model("gpt2")
    prompt = [5, 6, 7]
    first = next(generate_ids(model, prompt, GenerationSettings(max_new_tokens=1, sampling=GREEDY)))
    settings = GenerationSettings(max_new_tokens=10, sampling=GREEDY, eos_id=first)
    assert list(generate_ids(model, prompt, settings)) == []


def test_seeded_sampling_is_reproducible_and_seed_dependent():
    model = _model("llama-gqa")
    sampling = SamplingSettings(temperature=1.0, top_k=20, top_p=0.95)

    def run(seed: int) -> list[int]:
        return list(generate_ids(model, [1, 2, 3], GenerationSettings(max_new_tokens=30, sampling=sampling, seed=seed)))

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_top_k_and_top_p_filters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda x: torch.isfinite(x)[0].tolist()  # noqa: E731
    assert kept(filter_logits(logits, top_k=2, top_p=None)) == [True, True, False, False]
    assert kept(filter_logits(logits, top_k=None, top_p=0.5)) == [True, False, False, False]
    assert kept(filter_logits(logits, top_k=None, top_p=0.8)) == [True, True, False, False]
    assert kept(filter_logits(logits, top_k=None, top_p=0.81)) == [True, True, True, False]
    assert kept(filter_logits(logits, top_k=3, top_p=0.99)) == [True, True, True, False]
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits.repeat(64, 1), SamplingSettings(top_k=2), g)[i]) for i in range(64)}
    assert draws == {0, 1}


def test_bad_sampling_settings_are_usage_errors():
    with pytest.raises(UsageError, match="temperature"):
        SamplingSettings(temperature=-1)
    with pytest.raises(UsageError, match="top-p"):
        SamplingSettings(top_p=1.5)
    with pytest.raises(UsageError, match="top-k"):
        SamplingSettings(top_k=0)
    for t in (float("nan"), float("inf"), 1e-45, 1e3):  # 1e-45 would overflow the scaled logits
        with pytest.raises(UsageError, match="temperature must be 0"):
            SamplingSettings(temperature=t)
    with pytest.raises(UsageError, match="64-bit"):
        GenerationSettings(seed=2**70)
    with pytest.raises(UsageError, match="empty"):
        list(generate_ids(_model("gpt2"), [], GenerationSettings()))


def test_stream_decoder_never_splits_a_multibyte_character(tokenizer):
    text = "hello wörld 世界 🙂 done"
    ids = tokenizer.encode(text).ids
    assert len(ids) > len(text.encode("utf-8")) // 2  # non-ASCII really is split into byte tokens
    decoder = StreamDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids] + [decoder.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert "" in pieces[:-1]  # some tokens ended mid-character and were held back


def test_generate_text_streams_the_continuation(tokenizer):
    cfg = ModelConfig(**STYLES["gpt2"], vocab_size=tokenizer.get_vocab_size(), max_seq_len=32)
    model = build_model(cfg).eval()
    settings = GenerationSettings(max_new_tokens=12, sampling=SamplingSettings(temperature=1.0), seed=0)
    pieces = list(generate_text(model, tokenizer, "hello", settings))
    ids = list(generate_ids(model, tokenizer.encode("hello").ids, settings))
    assert "".join(pieces) == tokenizer.decode(tokenizer.encode("hello").ids + ids)[len("hello"):]
