"""Serving throughput and latency: continuous batching vs batching off, measured in one run.

One small GPT-2-style model (random weights, seeded; a BPE tokenizer trained on this Python's
standard library) is saved as a checkpoint and served twice by `clusterlm serve` on this
machine (both up at once; each level is measured on one, then the other, so a change in the
machine's load hits both alike):

  batching on    --max-batch 16   (continuous batching over the shared decode loop)
  batching off   --max-batch 1    (the same server and code, one request at a time)

For 1, 4 and 16 concurrent clients, each client sends `--requests` non-streaming
`/v1/completions` requests one after another (distinct prompts, greedy, `max_tokens` new
tokens). Reported per level: requests/s and output tokens/s (summed `usage.completion_tokens`
over wall time), p50/p95 request latency, and the server's CPU seconds for the level (its
output tokens per CPU-second is the figure least disturbed by other processes on a shared
machine). Both servers must return the same text for every prompt (greedy decoding; batching
must not change a request's output).

    .venv/bin/python benchmarks/serve.py [--max-tokens 64] [--requests 4] [--threads 1]
Targets (issue 13): output tokens/s at 16 clients ≥ 3× batching off; p95 latency at 1 client
≤ 1.1× batching off.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

import httpx

LEVELS = (1, 4, 16)


def build_checkpoint(out: Path, args: argparse.Namespace) -> list[str]:
    """Save the model + tokenizer under `out`; return prompts (distinct lines of stdlib source)."""
    import torch

    from clusterlm.data.tokenizer import train_tokenizer
    from clusterlm.model.build import build_model
    from clusterlm.model.config import ModelConfig
    from clusterlm.model.serialization import save_model_dir

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [p.read_text(errors="replace") for p in sorted(stdlib.glob("*.py"))[:60]]
    tokenizer = train_tokenizer(texts, vocab_size=args.vocab, min_frequency=2)
    tokenizer.save(str(out / "tokenizer.json"))
    cfg = ModelConfig(style="gpt2", n_layer=args.layers, n_head=args.heads, d_model=args.d_model,
                      vocab_size=tokenizer.get_vocab_size(), max_seq_len=args.context)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.init_weights(seed=1)
    save_model_dir(out / "ckpt", model, cfg, out / "tokenizer.json", {"step": 0})
    lines = sorted({line.strip() for text in texts for line in text.splitlines() if 30 <= len(line.strip()) <= 80})
    return lines[:: max(1, len(lines) // 400)][:400]


def start_server(ckpt: Path, port: int, max_batch: int, threads: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("CLUSTERLM_API_KEY", None)
    cmd = [sys.executable, "-m", "clusterlm", "serve", str(ckpt), "--port", str(port), "--max-batch", str(max_batch),
           "--max-new-tokens-limit", "4096"]
    server = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while True:
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"server did not start:\n{log.read_text()}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return server
        except httpx.TransportError:
            time.sleep(0.2)


def run_level(base: str, prompts: list[str], clients: int, requests: int, max_tokens: int) -> dict:
    """`clients` threads, each sending `requests` requests back to back; returns the level's figures."""
    latencies_s: list[float] = []
    tokens, texts = [0], {}
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def client(c: int) -> None:
        with httpx.Client(base_url=base, timeout=600) as http:
            start.wait()
            for r in range(requests):
                prompt = prompts[(c * requests + r) % len(prompts)]
                began = time.perf_counter()
                body = http.post("/v1/completions", json={"prompt": prompt, "max_tokens": max_tokens,
                                                          "temperature": 0}).json()
                elapsed = time.perf_counter() - began
                with lock:
                    latencies_s.append(elapsed)
                    tokens[0] += body["usage"]["completion_tokens"]
                    texts[prompt] = body["choices"][0]["text"]

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    wall_s = time.perf_counter() - began
    latencies_s.sort()
    return {"rps": len(latencies_s) / wall_s, "tok_s": tokens[0] / wall_s, "texts": texts, "wall_s": wall_s,
            "p50": statistics.median(latencies_s), "p95": latencies_s[min(len(latencies_s) - 1,
                                                                          round(0.95 * (len(latencies_s) - 1)))]}


def cpu_s(server: subprocess.Popen) -> float:
    """CPU seconds the server process has used (all its threads)."""
    import psutil

    times = psutil.Process(server.pid).cpu_times()
    return times.user + times.system


def measure(ckpt: Path, prompts: list[str], args: argparse.Namespace, out: Path) -> dict[str, dict[int, dict]]:
    """Both servers up at once (an idle one costs nothing); levels interleaved on, off, on, off, …
    so that a change in the machine's load hits both alike."""
    from clusterlm.serve.server import check_can_listen

    servers = {}
    try:
        for i, (name, max_batch) in enumerate((("on", 16), ("off", 1))):
            check_can_listen("127.0.0.1", args.port + i)
            servers[name] = (start_server(ckpt, args.port + i, max_batch, args.threads, out / f"{name}.log"),
                             f"http://127.0.0.1:{args.port + i}")
        results: dict[str, dict[int, dict]] = {"on": {}, "off": {}}
        for name, (_, base) in servers.items():
            run_level(base, prompts, 2, 1, 8)  # warm-up (first allocations, lazy imports)
        for n in LEVELS:
            for name, (server, base) in servers.items():
                before = cpu_s(server)
                results[name][n] = run_level(base, prompts, n, args.requests, args.max_tokens)
                results[name][n]["cpu_s"] = cpu_s(server) - before
        return results
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--max-tokens", type=int, default=64, help="new tokens per request")
    parser.add_argument("--requests", type=int, default=4, help="requests per client at each level")
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads (OMP_NUM_THREADS)")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        prompts = build_checkpoint(out, args)
        print(f"model: gpt2 style, L={args.layers} d={args.d_model} heads={args.heads} vocab={args.vocab} "
              f"context={args.context}, random weights; {args.max_tokens} new tokens per request (greedy, "
              f"non-streaming), {args.requests} requests per client; server: {args.threads} torch thread(s), "
              f"{os.cpu_count()} CPUs on this machine")
        results = measure(out / "ckpt", prompts, args, out)
    on, off = results["on"], results["off"]

    print(f"\n{'clients':>7} | {'batching':>8} | {'req/s':>6} | {'out tok/s':>9} | {'p50 s':>6} | {'p95 s':>6} | "
          f"{'server CPU s':>12} | {'tok/CPU-s':>9}")
    print("-" * 88)
    for n in LEVELS:
        for name, res in (("on", on[n]), ("off", off[n])):
            tokens = res["tok_s"] * res["wall_s"]
            print(f"{n:>7} | {name:>8} | {res['rps']:6.2f} | {res['tok_s']:9.1f} | {res['p50']:6.3f} | "
                  f"{res['p95']:6.3f} | {res['cpu_s']:12.1f} | {tokens / res['cpu_s']:9.1f}")
    same = all(on[n]["texts"] == off[n]["texts"] for n in LEVELS)
    print(f"\nsame text with batching on and off for every prompt: {'yes' if same else 'NO'}")
    speedup = on[16]["tok_s"] / off[16]["tok_s"]
    p95_ratio = on[1]["p95"] / off[1]["p95"]
    print(f"output tokens/s at 16 clients, on / off = {speedup:.2f}× (target ≥ 3×) "
          f"{'PASS' if speedup >= 3 else 'BELOW TARGET'}")
    print(f"p95 latency at 1 client, on / off = {p95_ratio:.2f}× (target ≤ 1.1×) "
          f"{'PASS' if p95_ratio <= 1.1 else 'ABOVE TARGET'}")
    for n in LEVELS:
        per_cpu = [r[n]["tok_s"] * r[n]["wall_s"] / r[n]["cpu_s"] for r in (on, off)]
        print(f"{n:>2} clients: output tokens/s on / off = {on[n]['tok_s'] / off[n]['tok_s']:.2f}×, "
              f"per server CPU-second {per_cpu[0] / per_cpu[1]:.2f}×")


if __name__ == "__main__":
    main()
