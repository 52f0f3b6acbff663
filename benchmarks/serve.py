"""Serving throughput and latency: continuous batching vs batching off, measured in one run.

One small GPT-2-style model (random weights, seeded; a BPE tokenizer trained on this Python's
standard library) is saved as a checkpoint and served twice by `clusterlm serve` on this
machine, both up at once (an idle server costs nothing):

  batching on    --max-batch 16   (continuous batching over the shared decode loop)
  batching off   --max-batch 1    (the same server and code, one request at a time)

For 1, 4 and 16 concurrent clients, rounds of non-streaming `/v1/completions` requests: in
each round every client sends one request at once (distinct prompts, greedy, `--max-tokens` new
tokens), to one server and then the same to the other, so a change in the machine's load hits
both alike. A level has at least `--rounds` rounds and `--min-requests` requests (so the 1-client
p95 is not just the slowest of four). Reported per level: requests/s and output tokens/s (summed
`usage.completion_tokens` over wall time), p50/p95 request latency, and the server's CPU seconds
(its output tokens per CPU-second is the figure least disturbed by other processes on a shared
machine). Both servers must return the same text for every prompt (greedy decoding; batching
must not change a request's output).

    .venv/bin/python benchmarks/serve.py [--max-tokens 64] [--rounds 4] [--min-requests 20] [--threads 1]
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
    from clusterlm.config.model import ModelConfig
    from clusterlm.checkpoint.formats import save_model_dir

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


class Level:
    """One concurrency level against one server: its figures, accumulated over rounds."""

    def __init__(self, base: str, clients: int):
        self.http = [httpx.Client(base_url=base, timeout=600) for _ in range(clients)]
        self.latencies_s: list[float] = []
        self.tokens, self.wall_s, self.cpu_s = 0, 0.0, 0.0
        self.texts: dict[str, str] = {}

    def round(self, prompts: list[str], max_tokens: int) -> None:
        """Every client sends one request (a distinct prompt each), all at once."""
        lock, start = threading.Lock(), threading.Barrier(len(self.http) + 1)

        def client(http: httpx.Client, prompt: str) -> None:
            start.wait()
            began = time.perf_counter()
            body = http.post("/v1/completions", json={"prompt": prompt, "max_tokens": max_tokens,
                                                      "temperature": 0}).json()
            elapsed = time.perf_counter() - began
            with lock:
                self.latencies_s.append(elapsed)
                self.tokens += body["usage"]["completion_tokens"]
                self.texts[prompt] = body["choices"][0]["text"]

        threads = [threading.Thread(target=client, args=(http, p)) for http, p in zip(self.http, prompts)]
        for t in threads:
            t.start()
        start.wait()
        began = time.perf_counter()
        for t in threads:
            t.join()
        self.wall_s += time.perf_counter() - began

    def figures(self) -> dict:
        for http in self.http:
            http.close()
        lat = sorted(self.latencies_s)
        return {"rps": len(lat) / self.wall_s, "tok_s": self.tokens / self.wall_s, "tok_cpu_s": self.tokens / self.cpu_s,
                "p50": statistics.median(lat), "p95": lat[round(0.95 * (len(lat) - 1))], "cpu_s": self.cpu_s,
                "texts": self.texts, "n": len(lat)}


def cpu_s(server: subprocess.Popen) -> float:
    """CPU seconds the server process has used (all its threads)."""
    import psutil

    times = psutil.Process(server.pid).cpu_times()
    return times.user + times.system


def measure(ckpt: Path, prompts: list[str], args: argparse.Namespace, out: Path) -> dict[str, dict[int, dict]]:
    """Both servers up at once (an idle one costs nothing); every round runs on one, then on the
    other, so a change in the machine's load hits both alike."""
    from clusterlm.api.serve import check_can_listen

    servers = {}
    try:
        for i, (name, max_batch) in enumerate((("on", 16), ("off", 1))):
            check_can_listen("127.0.0.1", args.port + i)
            servers[name] = (start_server(ckpt, args.port + i, max_batch, args.threads, out / f"{name}.log"),
                             f"http://127.0.0.1:{args.port + i}")
        results: dict[str, dict[int, dict]] = {"on": {}, "off": {}}
        for server, base in servers.values():  # warm-up (first allocations, lazy imports)
            Level(base, 2).round(prompts[-2:], 8)
        for n in LEVELS:
            levels = {name: Level(base, n) for name, (_, base) in servers.items()}
            rounds = max(args.rounds, -(-args.min_requests // n))  # enough requests for a p95
            for r in range(rounds):
                batch = [prompts[(r * n + c) % len(prompts)] for c in range(n)]
                for name, (server, _) in servers.items():
                    before = cpu_s(server)
                    levels[name].round(batch, args.max_tokens)
                    levels[name].cpu_s += cpu_s(server) - before
            for name in servers:
                results[name][n] = levels[name].figures()
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
    parser.add_argument("--rounds", type=int, default=4, help="rounds per level: every client sends one request")
    parser.add_argument("--min-requests", type=int, default=20,
                        help="more rounds at low concurrency, so each level has at least this many requests")
    parser.add_argument("--threads", type=int, default=1, help="the server's torch threads (OMP_NUM_THREADS)")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        prompts = build_checkpoint(out, args)
        print(f"model: gpt2 style, L={args.layers} d={args.d_model} heads={args.heads} vocab={args.vocab} "
              f"context={args.context}, random weights; {args.max_tokens} new tokens per request (greedy, "
              f"non-streaming), ≥ {args.rounds} rounds of one request per client and ≥ {args.min_requests} requests per "
              f"level; server: {args.threads} torch thread(s), "
              f"{os.cpu_count()} CPUs on this machine")
        results = measure(out / "ckpt", prompts, args, out)
    on, off = results["on"], results["off"]

    print(f"\n{'clients':>7} | {'batching':>8} | {'req/s':>6} | {'out tok/s':>9} | {'p50 s':>6} | {'p95 s':>6} | "
          f"{'server CPU s':>12} | {'tok/CPU-s':>9}")
    print("-" * 88)
    for n in LEVELS:
        for name, res in (("on", on[n]), ("off", off[n])):
            print(f"{n:>7} | {name:>8} | {res['rps']:6.2f} | {res['tok_s']:9.1f} | {res['p50']:6.3f} | "
                  f"{res['p95']:6.3f} | {res['cpu_s']:12.1f} | {res['tok_cpu_s']:9.1f}")
    same = all(on[n]["texts"] == off[n]["texts"] for n in LEVELS)
    print(f"\nsame text with batching on and off for every prompt: {'yes' if same else 'NO'}")
    speedup = on[16]["tok_s"] / off[16]["tok_s"]
    p95_ratio = on[1]["p95"] / off[1]["p95"]
    print(f"output tokens/s at 16 clients, on / off = {speedup:.2f}× (target ≥ 3×) "
          f"{'PASS' if speedup >= 3 else 'BELOW TARGET'}")
    print(f"p95 latency at 1 client, on / off = {p95_ratio:.2f}× (target ≤ 1.1×) "
          f"{'PASS' if p95_ratio <= 1.1 else 'ABOVE TARGET'}")
    for n in LEVELS:
        print(f"{n:>2} clients ({on[n]['n']} requests): output tokens/s on / off = "
              f"{on[n]['tok_s'] / off[n]['tok_s']:.2f}×, per server CPU-second "
              f"{on[n]['tok_cpu_s'] / off[n]['tok_cpu_s']:.2f}×, p95 {on[n]['p95'] / off[n]['p95']:.2f}×")


if __name__ == "__main__":
    main()
