"""Serve a checkpoint over HTTP with an OpenAI-style completions API.

`clusterlm serve CKPT [--host H] [--port P] [--device DEV] [--max-new-tokens-limit N] [--model-name NAME]`

CKPT is anything `clusterlm generate` accepts (a checkpoint dir, a run dir, a single-file
export or an HF model dir with a tokenizer.json). Endpoints: GET /health, GET /v1/models,
POST /v1/completions (prompt, max_tokens, temperature, top_k, top_p, seed, stop, stream).
Requests are served one at a time; each may ask for at most N new tokens.

  clusterlm serve runs/mine --port 8000
  curl -s localhost:8000/v1/completions -H 'Content-Type: application/json' \\
       -d '{"prompt": "def main(", "max_tokens": 50, "temperature": 0}'

It listens on 127.0.0.1 by default and has no authentication: to expose it, put it
behind a reverse proxy that does. Needs the 'serve' extra: pip install 'clusterlm[serve]'.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint dir, run dir, .safetensors export or HF dir")
    parser.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                        help="address to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, metavar="P", help="port to listen on (default: 8000)")
    parser.add_argument("--device", default="cpu", metavar="DEV", help="cpu | cuda[:N] | auto (default: cpu)")
    parser.add_argument("--max-new-tokens-limit", type=int, default=1024, metavar="N",
                        help="the largest max_tokens a request may ask for (default: 1024)")
    parser.add_argument("--model-name", metavar="NAME",
                        help="the model id clients see (default: CKPT's directory name)")


def _check_can_listen(host: str, port: int) -> None:
    """Bind once before the (slow) model load, so a busy port or bad host is a one-line error up front."""
    import socket

    from clusterlm.errors import UsageError

    if not 0 <= port <= 65535:  # getaddrinfo would silently wrap it
        raise UsageError(f"--port must be in 0 … 65535, got {port}")
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            sock.bind(address)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def run(args: argparse.Namespace) -> int:
    from clusterlm.errors import UsageError

    # Checked before loading anything: the extra is optional, and its absence should cost nothing.
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UsageError("clusterlm serve needs the 'serve' extra: pip install 'clusterlm[serve]'") from None
    if args.max_new_tokens_limit < 1:
        raise UsageError(f"--max-new-tokens-limit must be ≥ 1, got {args.max_new_tokens_limit}")
    _check_can_listen(args.host, args.port)

    from clusterlm.cli.generate import load_for_generation
    from clusterlm.data.tokenizer import EOS_TOKEN
    from clusterlm.serve.app import create_app

    loaded = load_for_generation(args.checkpoint, args.device)
    model_name = args.model_name or Path(args.checkpoint).resolve().name
    app = create_app(loaded.model, loaded.tokenizer, model_name=model_name,
                     eos_id=loaded.tokenizer.token_to_id(EOS_TOKEN), max_new_tokens_limit=args.max_new_tokens_limit)
    n_params = sum(p.numel() for p in loaded.model.parameters())
    sys.stderr.write(f"serving '{model_name}' ({n_params:,} parameters, from {loaded.path}) "
                     f"at http://{args.host}:{args.port}/v1/completions\n")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
