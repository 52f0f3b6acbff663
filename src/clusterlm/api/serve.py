"""`clusterlm serve` as a function: load a checkpoint, build the app, run uvicorn until Ctrl-C."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from clusterlm.config import limits as L
from clusterlm.config.limits import check_range
from clusterlm.errors import UsageError
from clusterlm.generate.loading import eos_id, load_for_generation

MAX_BATCH = 4096  # sequences decoded together: the KV cache holds this many rows

API_KEY_ENV = "CLUSTERLM_API_KEY"


def check_can_listen(host: str, port: int) -> None:
    """Bind once before the (slow) model load, so a busy port or bad host is a one-line error up front."""
    if not 0 <= port <= 65535:  # getaddrinfo would silently wrap it
        raise UsageError(f"--port must be in 0 … 65535, got {port}")
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            sock.bind(address)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def serve(checkpoint: str, *, host: str, port: int, device: str, max_new_tokens_limit: int, max_batch: int,
          max_body_bytes: int, model_name: str | None, api_key: str | None) -> None:
    """Serve CKPT until interrupted; every bad argument is a UsageError before anything loads."""
    # Checked before loading anything: the extra is optional, and its absence should cost nothing.
    try:
        import fastapi  # noqa: F401 — a heavy optional dependency, imported only to serve
        import uvicorn
    except ImportError:
        raise UsageError("clusterlm serve needs the 'serve' extra: pip install 'clusterlm[serve]'") from None
    check_range("--max-new-tokens-limit", max_new_tokens_limit, 1, L.MAX_SEQ_LEN)
    check_range("--max-batch", max_batch, 1, MAX_BATCH)
    check_range("--max-body-bytes", max_body_bytes, 1, 1 << 30)
    if api_key is not None and not api_key.strip():
        raise UsageError(f"the API key (--api-key or ${API_KEY_ENV}) is empty; give a key, or none to disable it")
    check_can_listen(host, port)

    # Imported only now: the app imports FastAPI, the optional extra whose absence is reported above.
    from clusterlm.serve.app import create_app

    loaded = load_for_generation(checkpoint, device)
    name = model_name or Path(checkpoint).resolve().name
    app = create_app(loaded.model, loaded.tokenizer, model_name=name, eos_id=eos_id(loaded.tokenizer),
                     max_new_tokens_limit=max_new_tokens_limit, max_batch=max_batch, api_key=api_key,
                     max_body_bytes=max_body_bytes)
    n_params = sum(p.numel() for p in loaded.model.parameters())
    auth = "bearer-token authentication" if api_key else "NO authentication"
    sys.stderr.write(f"serving '{name}' ({n_params:,} parameters, from {loaded.path}) at http://{host}:{port}/v1 "
                     f"(batches of up to {max_batch}, {auth})\n")
    uvicorn.run(app, host=host, port=port, log_level="info")
