"""Helpers for the serve tests: a tiny model and a real uvicorn server on a free local port."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from clusterlm.model.build import build_model
from clusterlm.config.model import ModelConfig

API_KEY = "test-key-123"


def tiny_model(tokenizer, style: str = "llama", max_seq_len: int = 64):
    # A larger init spreads the logits, so greedy decoding wanders instead of repeating one token.
    shape = dict(n_layer=2, n_head=4, n_kv_head=2, d_model=32) if style == "llama" else dict(n_layer=1, d_model=32)
    cfg = ModelConfig(style=style, **shape, vocab_size=tokenizer.get_vocab_size(), max_seq_len=max_seq_len,
                      init_std=0.2)
    model = build_model(cfg)
    model.init_weights(seed=3)
    return model.eval()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    app: object
    base_url: str

    @property
    def scheduler(self):
        return self.app.state.scheduler


@contextmanager
def live_server(app) -> Iterator[LiveServer]:
    """A real uvicorn server on a free local port, in a thread of this process."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield LiveServer(app, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
