"""Serve a checkpoint over HTTP with OpenAI's completions and chat completions API.

`clusterlm serve CKPT [--host H] [--port P] [--device DEV] [--max-new-tokens-limit N]
[--max-batch B] [--max-body-bytes N] [--model-name NAME] [--api-key KEY]`

CKPT is anything `clusterlm generate` accepts (a checkpoint dir, a run dir, a single-file
export or an HF model dir with a tokenizer.json). Endpoints: GET /health, GET /v1/models,
POST /v1/completions and POST /v1/chat/completions (max_tokens, temperature, top_p, top_k,
seed, stop, n, stream, logprobs). Up to B requests are decoded together in one batch
(continuous batching; --max-batch 1 serves them one at a time).

  clusterlm serve runs/mine --port 8000
  curl -s localhost:8000/v1/completions -H 'Content-Type: application/json' \\
       -d '{"prompt": "def main(", "max_tokens": 50, "temperature": 0}'

It listens on 127.0.0.1 by default. With --api-key (or $CLUSTERLM_API_KEY) every request must
send 'Authorization: Bearer KEY'; there is no TLS: to expose it beyond this machine, put it
behind a reverse proxy that adds it. Needs the 'serve' extra: pip install 'clusterlm[serve]'.
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint dir, run dir, .safetensors export or HF dir")
    parser.add_argument("--host", default="127.0.0.1", metavar="ADDR",
                        help="address to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000, metavar="P", help="port to listen on (default: 8000)")
    parser.add_argument("--device", default="cpu", metavar="DEV", help="cpu | cuda[:N] | auto (default: cpu)")
    parser.add_argument("--max-new-tokens-limit", type=int, default=1024, metavar="N",
                        help="the largest max_tokens a request may ask for (default: 1024)")
    parser.add_argument("--max-batch", type=int, default=16, metavar="B",
                        help="sequences decoded together; more wait for a free slot (default: 16; 1 = no batching)")
    parser.add_argument("--max-body-bytes", type=int, default=2 * 1024 * 1024, metavar="N",
                        help="largest request body accepted, else 413 (default: 2 MiB)")
    parser.add_argument("--model-name", metavar="NAME",
                        help="the model id clients see (default: CKPT's directory name)")
    parser.add_argument("--api-key", metavar="KEY",
                        help="require 'Authorization: Bearer KEY' on every request "
                             "(default: $CLUSTERLM_API_KEY; unset = no authentication)")


def run(args: argparse.Namespace) -> int:
    from clusterlm.api.serve import API_KEY_ENV, serve

    serve(args.checkpoint, host=args.host, port=args.port, device=args.device,
          max_new_tokens_limit=args.max_new_tokens_limit, max_batch=args.max_batch,
          max_body_bytes=args.max_body_bytes, model_name=args.model_name,
          api_key=args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV))
    return 0
