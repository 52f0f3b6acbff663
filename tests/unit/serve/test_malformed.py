"""A table of malformed requests against a real server: each is a 4xx with OpenAI's error body,
none is a 500 or kills the server, and the server still answers afterwards."""

from __future__ import annotations

import json

import httpx
import pytest
from serve_harness import API_KEY

pytestmark = pytest.mark.timeout(60)
C, H = "/v1/completions", "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]

RAW_BODIES = [b"", b"{", b"{prompt", b"null", b"[]", b'"x"', b"1", b"true", b"{'prompt': 'x'}", b"\xff\xfe{}",
              b'{"prompt": "x",}', b"[" * 5000, b'{"prompt": "x"} trailing', b'{"prompt": NaN}',
              b'{"prompt": "a\\ud800"}', b'{"a":' * 3000]
COMPLETION_FIELDS = {
    "prompt": [3, None, {}, [1, "a"], [[1], "a"], True, "", [], [""], [-1], [10**9], [[]]],
    "max_tokens": [0, -1, "5", 1.5, True, 10**30, 1001],
    "temperature": [-0.1, 2.5, "hot", 1e-45, True, None],
    "top_p": [0, 1.5, -1, "x"],
    "top_k": [0, -5, 1.5, "k"],
    "seed": [2**70, -(2**64), 1.5, "s"],
    "stop": [3, [""], [1], ["a"] * 17, "x" * 300],
    "n": [0, 17, -1, 1.5],
    "stream": ["yes", 1],
    "logprobs": [6, -1, True, "1"],
    "echo": [True], "best_of": [3], "suffix": ["x"], "logit_bias": [{"1": 5}], "presence_penalty": [1.0],
    "frequency_penalty": [0.5], "stream_options": ["x", {"include_usage": "yes"}], "model": [3, "other-model"],
}
CHAT_CASES = [
    {}, {"messages": []}, {"messages": "x"}, {"messages": [{}]}, {"messages": [{"role": "robot", "content": "x"}]},
    {"messages": [{"role": "user", "content": 3}]}, {"messages": [{"role": 1, "content": "x"}]},
    {"messages": [{"role": "tool", "content": "x"}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
    {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]}]},
    {"messages": USER, "tools": [{"type": "function"}]}, {"messages": USER, "response_format": {"type": "json_object"}},
    {"messages": USER, "max_completion_tokens": 0}, {"messages": USER, "logprobs": "yes"},
    {"messages": USER, "top_logprobs": 21}, {"messages": USER, "tool_choice": "required"},
    {"messages": USER, "temperature": float("nan")}, {"messages": USER, "seed": 2**70},
    {"messages": USER, "model": "gpt-4o"}, {"messages": USER, "max_tokens": 5000},
    {"messages": [{"role": "user", "content": "hello " * 2000}]},
]


def _cases() -> list[tuple[str, str, bytes]]:
    cases = [(method_path[0], method_path[1], b"{}") for method_path in
             (("GET", C), ("GET", H), ("POST", "/v1/models"), ("POST", "/nope"), ("GET", "/v1/models/other"),
              ("DELETE", "/health"))]
    cases += [("POST", path, raw) for path in (C, H) for raw in RAW_BODIES]
    for field, values in COMPLETION_FIELDS.items():
        for value in values:
            body = {"prompt": "hello", "max_tokens": 4, field: value}
            if field == "prompt" and value is None:
                del body["prompt"]
            cases.append(("POST", C, json.dumps(body).encode()))
    cases.append(("POST", C, json.dumps({"prompt": "hello " * 2000}).encode()))  # longer than the context
    cases.append(("POST", C, json.dumps({"prompt": "hello", "max_tokens": 1000}).encode().replace(b"hello", b"hello " * 40)))  # prompt + 1000 > 1024
    cases.append(("POST", C, json.dumps({"prompt": ["x"] * 20, "n": 4}).encode()))  # 80 choices
    cases.append(("POST", C, b'{"prompt": "' + b"x" * (3 * 1024 * 1024) + b'"}'))  # over the body limit
    cases += [("POST", H, json.dumps(body).encode()) for body in CHAT_CASES]
    return cases


def test_at_least_100_malformed_requests_are_4xx_json_and_the_server_survives(live):
    cases = _cases()
    assert len(cases) >= 100
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    failures = []
    with httpx.Client(base_url=live.base_url, headers=headers, timeout=30) as client:
        for method, path, body in cases:
            response = client.request(method, path, content=body)
            try:
                error = response.json()["error"]
                ok = (400 <= response.status_code < 500 and set(error) == {"message", "type", "param", "code"}
                      and isinstance(error["message"], str) and error["message"] and error["type"])
            except (ValueError, KeyError, TypeError):
                ok = False
            if not ok:
                failures.append((method, path, body[:80], response.status_code, response.text[:200]))
        assert failures == []
        assert client.get("/health").json() == {"status": "ok", "model": "tiny"}
        reply = client.post(C, json={"prompt": "hello", "max_tokens": 3, "temperature": 0})
        assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] == 3
    assert live.scheduler.busy_rows == 0


def test_errors_name_the_field_and_give_the_numbers(live, tokenizer):
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=live.base_url, headers=headers, timeout=30) as client:
        def error(path, body):
            response = client.post(path, json=body)
            return response.status_code, response.json()["error"]

        status, err = error(C, {"prompt": "hello " * 40, "max_tokens": 1000})
        assert status == 400 and err["code"] == "context_length_exceeded" and err["param"] == "max_tokens"
        assert "1024" in err["message"] and "1000 for the completion" in err["message"]
        status, err = error(C, {"prompt": "hello " * 2000})
        n_prompt = len(tokenizer.encode("hello " * 2000).ids)
        assert status == 400 and f"1024 tokens, and the prompt has {n_prompt}" in err["message"]
        status, err = error(C, {"prompt": "x", "model": "gpt-4o"})
        assert status == 404 and err["code"] == "model_not_found" and err["param"] == "model"
        status, err = error(C, {"prompt": "x", "seed": 2**70})
        assert status == 400 and err["param"] == "seed"
        status, err = error(H, {"messages": USER, "temperature": 1e-45})
        assert status == 400 and err["param"] == "temperature"
        status, err = error(H, {"messages": [{"role": "robot", "content": "x"}]})
        assert status == 400 and "robot" in err["message"]
        status, err = error(C, {"prompt": "x", "echo": True})
        assert status == 400 and err["param"] == "echo" and "not supported" in err["message"]
        big = client.post(C, content=b"x" * (3 * 1024 * 1024))
        assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
