"""The official `openai` client against a real uvicorn server: completions, chat, streaming,
authentication, 16 concurrent clients, a client that hangs up."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from clusterlm.data.chat import REPLY_STOPS, render_chat
from clusterlm.data.tokenizer import EOS_TOKEN
from clusterlm.generate.generator import GenerationSettings, TextStream
from clusterlm.generate.sampling import SamplingSettings

from serve_harness import API_KEY

pytestmark = pytest.mark.timeout(60)
GREEDY = SamplingSettings(temperature=0.0)


@pytest.fixture(scope="module")
def client(live):
    return openai.OpenAI(base_url=f"{live.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=30)


def _alone(live, tokenizer, prompt: str, max_tokens: int, sampling=GREEDY, seed=None, stops=()) -> TextStream:
    """What `clusterlm generate` makes of this prompt (a batch of one), run to the end."""
    settings = GenerationSettings(max_new_tokens=max_tokens, sampling=sampling, seed=seed,
                                  eos_id=tokenizer.token_to_id(EOS_TOKEN))
    stream = TextStream(live.app.state.model, tokenizer, prompt, settings, stops)
    stream.text = "".join(stream)
    return stream


def test_completion_whole_and_streamed_is_what_generate_makes(client, live, tokenizer):
    expected = _alone(live, tokenizer, "hello world", 20)
    whole = client.completions.create(model="tiny", prompt="hello world", max_tokens=20, temperature=0)
    assert whole.choices[0].text == expected.text and len(expected.text) > 0
    assert whole.choices[0].finish_reason == expected.finish_reason
    assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (len(expected.prompt_ids),
                                                                          expected.completion_tokens)
    chunks = list(client.completions.create(model="tiny", prompt="hello world", max_tokens=20, temperature=0,
                                            stream=True))
    assert len(chunks) > 2 and "".join(c.choices[0].text for c in chunks) == expected.text
    assert chunks[-1].choices[0].finish_reason == expected.finish_reason


def test_chat_renders_the_one_template_and_streams_openai_chunks(client, live, tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello model"}]
    expected = _alone(live, tokenizer, render_chat(messages), 16, stops=REPLY_STOPS)
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=16, temperature=0)
    assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == expected.text
    assert reply.usage.prompt_tokens == len(expected.prompt_ids)
    assert reply.usage.completion_tokens == expected.completion_tokens
    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=16, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == reply.usage.total_tokens


def test_seeded_sampling_n_and_logprobs(client):
    def sample(seed):
        return client.completions.create(model="tiny", prompt="the quick", max_tokens=12, temperature=1.0,
                                         top_p=0.95, seed=seed, n=2)
    first, again, other = sample(5), sample(5), sample(6)
    texts = [c.text for c in first.choices]
    assert texts == [c.text for c in again.choices]  # a seed reproduces every choice
    assert texts[0] != texts[1] and texts != [c.text for c in other.choices]
    assert [c.index for c in first.choices] == [0, 1] and first.usage.completion_tokens == 24
    greedy = client.completions.create(model="tiny", prompt="the quick", max_tokens=5, temperature=0, logprobs=3)
    lp = greedy.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    for chosen, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        assert logprob <= 0 and len(top) <= 3 and max(top.values()) == pytest.approx(logprob)  # greedy: the best
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                          temperature=0, logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens and all(len(t.top_logprobs) == 2 for t in content)


def test_a_wrong_or_missing_api_key_is_401(live):
    bad = openai.OpenAI(base_url=f"{live.base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.completions.create(model="tiny", prompt="x", max_tokens=1)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}])
    for headers in ({}, {"Authorization": API_KEY}, {"Authorization": f"Bearer {API_KEY}x"}):
        response = httpx.get(f"{live.base_url}/health", headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{live.base_url}/health", headers={"Authorization": f"Bearer {API_KEY}"}).json()["status"] == "ok"


def test_16_concurrent_clients_each_get_exactly_their_own_output(live, tokenizer):
    prompts = [f"{word} {i}" for i, word in enumerate(["hello", "the quick", "def f(x):", "lazy dog"] * 4)]
    # half greedy, half seeded samples; budgets differ so requests leave the batch at different steps
    requests = [dict(prompt=p, max_tokens=8 + i % 5, temperature=0.0 if i % 2 else 0.8, seed=i)
                for i, p in enumerate(prompts)]
    expected = [_alone(live, tokenizer, r["prompt"], r["max_tokens"], SamplingSettings(temperature=r["temperature"]),
                       seed=r["seed"]).text for r in requests]
    assert len(set(expected)) == 16
    results: list[str | None] = [None] * 16
    start = threading.Barrier(16)

    def one(i: int) -> None:
        client = openai.OpenAI(base_url=f"{live.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=30)
        start.wait()
        results[i] = client.completions.create(model="tiny", **requests[i]).choices[0].text

    peak_before = live.scheduler.peak_batch
    live.scheduler.peak_batch = 0
    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert results == expected
    assert live.scheduler.peak_batch > 4  # they really were decoded together
    live.scheduler.peak_batch = max(peak_before, live.scheduler.peak_batch)


def test_a_client_that_hangs_up_mid_stream_frees_its_slot(client, live, tokenizer):
    cancelled = live.scheduler.finished["cancelled"]
    stream = client.completions.create(model="tiny", prompt="hello", max_tokens=1000, temperature=0, stream=True)
    first = next(iter(stream))
    assert first.choices[0].finish_reason is None
    stream.close()  # hang up after one chunk of a 1000-token generation
    deadline = time.monotonic() + 10
    while live.scheduler.busy_rows or live.scheduler.finished["cancelled"] == cancelled:
        assert time.monotonic() < deadline, "the abandoned generation kept its slot"
        time.sleep(0.01)
    assert live.scheduler.finished["cancelled"] == cancelled + 1
    expected = _alone(live, tokenizer, "hello", 6).text
    assert client.completions.create(model="tiny", prompt="hello", max_tokens=6, temperature=0).choices[0].text == expected
