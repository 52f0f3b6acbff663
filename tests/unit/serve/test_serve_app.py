"""`clusterlm serve`: the OpenAI-style HTTP app on a tiny random model, and the verb around it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest
import torch
from serve_harness import free_port, tiny_model

from clusterlm.cli.main import main, verb_parser
from clusterlm.data.tokenizer import EOS_TOKEN
from clusterlm.generate.generator import GenerationSettings, generate_ids, generate_text
from clusterlm.generate.sampling import SamplingSettings
from clusterlm.generate.text import first_stop, partial_stop_length

PROMPT = "hello world"
LIMIT = 48  # the test server's --max-new-tokens-limit


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny_model(tokenizer)


@pytest.fixture(scope="module")
def client(model, tokenizer):
    from fastapi.testclient import TestClient

    from clusterlm.serve.app import create_app

    app = create_app(model, tokenizer, model_name="tiny", eos_id=tokenizer.token_to_id(EOS_TOKEN),
                     max_new_tokens_limit=LIMIT)
    with TestClient(app) as client:
        yield client


def _complete(client, **body):
    response = client.post("/v1/completions", json={"prompt": PROMPT, **body})
    assert response.status_code == 200, response.text
    return response.json()


def _stream(client, **body) -> list[str]:
    """The `data:` payloads of a streamed completion, in order."""
    with client.stream("POST", "/v1/completions", json={"prompt": PROMPT, "stream": True, **body}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = "".join(response.iter_text())
    events = raw.split("\n\n")
    assert events[-1] == ""  # every event ends with a blank line
    assert all(event.startswith("data: ") for event in events[:-1])
    return [event[len("data: "):] for event in events[:-1]]


def _greedy_text(model, tokenizer, max_tokens: int) -> str:
    settings = GenerationSettings(max_new_tokens=max_tokens, sampling=SamplingSettings(temperature=0.0),
                                  eos_id=tokenizer.token_to_id(EOS_TOKEN))
    return "".join(generate_text(model, tokenizer, PROMPT, settings))


def test_health_names_the_model(client):
    assert client.get("/health").json() == {"status": "ok", "model": "tiny"}


def test_models_lists_the_one_model_with_its_size(client, model):
    body = client.get("/v1/models").json()
    assert body["object"] == "list" and len(body["data"]) == 1
    card = body["data"][0]
    assert card["id"] == "tiny" and card["object"] == "model"
    assert card["params"] == sum(p.numel() for p in model.parameters())
    assert card["max_seq_len"] == 64


def test_greedy_completion_is_exactly_generate_text(client, model, tokenizer):
    body = _complete(client, max_tokens=30, temperature=0)
    assert body["object"] == "text_completion" and body["model"] == "tiny" and body["id"].startswith("cmpl-")
    choice = body["choices"][0]
    assert choice["text"] == _greedy_text(model, tokenizer, 30)  # the server adds nothing
    assert len(choice["text"]) > 0
    prompt_ids = tokenizer.encode(PROMPT).ids
    settings = GenerationSettings(max_new_tokens=30, sampling=SamplingSettings(temperature=0.0),
                                  eos_id=tokenizer.token_to_id(EOS_TOKEN))
    n_new = len(list(generate_ids(model, prompt_ids, settings)))
    assert body["usage"] == {"prompt_tokens": len(prompt_ids), "completion_tokens": n_new,
                             "total_tokens": len(prompt_ids) + n_new}


def test_max_tokens_ends_with_finish_reason_length(client):
    body = _complete(client, max_tokens=5, temperature=0)
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5


def test_stop_string_truncates_and_is_not_returned(client, model, tokenizer):
    full = _greedy_text(model, tokenizer, 30)
    stop = full[10:14]  # several tokens' worth of text, somewhere in the middle
    expected = full[:full.find(stop)]
    for stops in (stop, ["never-appears", stop]):
        body = _complete(client, max_tokens=30, temperature=0, stop=stops)
        assert body["choices"][0]["text"] == expected
        assert body["choices"][0]["finish_reason"] == "stop"
        assert body["usage"]["completion_tokens"] < 30  # generation stopped early


def test_seeded_sampling_is_reproducible(client):
    texts = [_complete(client, max_tokens=20, temperature=1.0, top_k=50, top_p=0.95, seed=seed)["choices"][0]["text"]
             for seed in (7, 7, 8)]
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]


@pytest.mark.parametrize("with_stop", [False, True])
def test_stream_concatenates_to_the_whole_response(client, model, tokenizer, with_stop):
    # A stop string spans several streamed pieces: they must be held back, not half sent.
    stop = _greedy_text(model, tokenizer, 30)[10:14] if with_stop else None
    whole = _complete(client, max_tokens=30, temperature=0, stop=stop)
    payloads = _stream(client, max_tokens=30, temperature=0, stop=stop)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(payload) for payload in payloads[:-1]]
    assert len(chunks) > 2  # really streamed, piece by piece
    assert all(chunk["object"] == "text_completion" and chunk["id"] == chunks[0]["id"] for chunk in chunks)
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert chunks[-1]["usage"] == whole["usage"]


def test_concurrent_requests_are_unaffected_by_each_other(client, model, tokenizer):
    expected = _greedy_text(model, tokenizer, 20)
    results: list[str] = []

    def one_request() -> None:
        results.append(_complete(client, max_tokens=20, temperature=0)["choices"][0]["text"])

    threads = [threading.Thread(target=one_request) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [expected] * 3


@pytest.mark.parametrize(("body", "words"), [
    ({"prompt": ""}, "prompt is empty"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"prompt": "x", "max_tokens": LIMIT + 1}, f"≤ {LIMIT}"),
    ({"prompt": "x", "temperature": -0.5}, "temperature"),
    ({"prompt": "x", "top_p": 2}, "top_p"),
    ({"prompt": "x", "top_k": 0}, "top_k"),
    ({"prompt": "x", "stop": [""]}, "stop strings"),
    ({"max_tokens": 4}, "prompt"),
    ({"prompt": 3}, "prompt"),
    ({"prompt": "x", "stop": 3}, "stop"),
])
def test_bad_requests_are_400_with_a_message(client, body, words):
    response = client.post("/v1/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert words in error["message"] and error["type"] == "invalid_request_error"


def test_a_body_that_is_not_json_is_400(client):
    response = client.post("/v1/completions", content=b"{prompt", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]


class _FailingModel(torch.nn.Module):
    """The tiny model, except that its `fail_at`-th forward call raises."""

    def __init__(self, inner, fail_at: int):
        super().__init__()
        self.inner, self.config, self.fail_at, self.calls = inner, inner.config, fail_at, 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("injected failure")
        return self.inner(*args, **kwargs)


def test_a_failure_mid_stream_ends_it_with_an_error_event_and_done(model, tokenizer):
    from fastapi.testclient import TestClient

    from clusterlm.serve.app import create_app

    failing = _FailingModel(model, fail_at=6)  # the prompt's prefill, then 4 decode steps, then boom
    app = create_app(failing, tokenizer, model_name="tiny", eos_id=None, max_new_tokens_limit=LIMIT)
    with TestClient(app) as client:
        payloads = _stream(client, max_tokens=20, temperature=0)
        assert payloads[-1] == "[DONE]"
        error = json.loads(payloads[-2])["error"]
        assert error["type"] == "server_error" and "RuntimeError" in error["message"]
        assert len(payloads) > 2  # text came first: the failure really was mid-stream
        failing.calls, failing.fail_at = 0, 2
        response = client.post("/v1/completions", json={"prompt": PROMPT, "max_tokens": 5})
        assert response.status_code == 500 and response.json()["error"]["type"] == "server_error"
        assert _complete(client, max_tokens=5, temperature=0)["choices"][0]["text"] == _greedy_text(model, tokenizer, 5)


def test_a_recurrent_checkpoint_is_served_with_batching(tokenizer):
    from fastapi.testclient import TestClient

    from clusterlm.serve.app import create_app

    lstm = tiny_model(tokenizer, style="lstm")
    app = create_app(lstm, tokenizer, model_name="lstm", eos_id=None, max_new_tokens_limit=LIMIT, max_batch=4)
    prompts = ["hello", "the quick brown fox", "def f(x):"]
    with TestClient(app) as client:
        body = client.post("/v1/completions", json={"prompt": prompts, "max_tokens": 12, "temperature": 0}).json()
        assert client.get("/v1/models").json()["data"][0]["max_seq_len"] is None
    texts = [c["text"] for c in sorted(body["choices"], key=lambda c: c["index"])]
    settings = GenerationSettings(max_new_tokens=12, sampling=SamplingSettings(temperature=0.0))
    assert texts == ["".join(generate_text(lstm, tokenizer, p, settings)) for p in prompts]
    assert app.state.scheduler.peak_batch == 3  # the three prompts were decoded together


def test_chat_prompt_is_the_data_chat_template(client, tokenizer):
    from clusterlm.data.chat import render_chat

    messages = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": [
        {"type": "text", "text": "hello "}, {"type": "text", "text": "model"}]}]
    body = client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 3, "temperature": 0}).json()
    # "developer" is OpenAI's newer name for "system"; text parts are joined
    expected = render_chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello model"}])
    assert body["usage"]["prompt_tokens"] == len(tokenizer.encode(expected).ids)
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"


def test_stop_helpers():
    assert first_stop("abcdef", ["de", "bc"]) == 1 and first_stop("abc", ["x"]) == -1
    assert partial_stop_length("hello wo", ["world"]) == 2
    assert partial_stop_length("hello w", ["xyz", "wo", "o wx"]) == 3
    assert partial_stop_length("hello", ["world"]) == 0


# --- the verb ---------------------------------------------------------------------------------

def test_serve_help_and_bad_checkpoint(tmp_path, capsys):
    parser, _ = verb_parser("serve")
    text = parser.format_help()
    assert "curl" in text and "127.0.0.1" in text and "--max-new-tokens-limit" in text
    assert "--api-key" in text and "CLUSTERLM_API_KEY" in text and "--max-batch" in text
    assert main(["serve", str(tmp_path / "nonexistent"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err


def test_serve_without_the_extra_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # makes `import uvicorn` raise ImportError
    assert main(["serve", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "error: clusterlm serve needs the 'serve' extra: pip install 'clusterlm[serve]'\n")


@pytest.mark.timeout(60)
def test_serve_runs_uvicorn_on_localhost(model, tokenizer, tmp_path):
    from clusterlm.checkpoint.formats import save_model_dir

    tokenizer.save(str(tmp_path / "tokenizer.json"))
    save_model_dir(tmp_path / "ckpt", model, model.config, tmp_path / "tokenizer.json", {"step": 1})
    port = free_port()
    log_path = tmp_path / "server.log"  # a file, not a pipe: a full pipe would block the server
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "clusterlm", "serve", str(tmp_path / "ckpt"),
                                   "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                  env={**os.environ, "OMP_NUM_THREADS": "1", "CLUSTERLM_API_KEY": "k3y"})
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer k3y"}
    try:
        deadline = time.monotonic() + 40
        while True:
            assert server.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the server did not come up within 40 s"
            try:
                health = httpx.get(f"{base}/health", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health.status_code == 401  # $CLUSTERLM_API_KEY is honoured
        assert httpx.get(f"{base}/health", headers=auth).json() == {"status": "ok", "model": "ckpt"}
        # Hang up on a long stream after its first event: the generation must not keep the model
        # locked (that once stalled every later request until garbage collection ran).
        long_stream = {"prompt": PROMPT, "max_tokens": LIMIT, "temperature": 0, "stream": True}
        with httpx.stream("POST", f"{base}/v1/completions", json=long_stream, headers=auth, timeout=10) as response:
            assert next(response.iter_lines()).startswith("data: ")
        body = httpx.post(f"{base}/v1/completions", json={"prompt": PROMPT, "max_tokens": 8, "temperature": 0},
                          headers=auth, timeout=10).json()
        assert body["choices"][0]["text"] == _greedy_text(model, tokenizer, 8)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
