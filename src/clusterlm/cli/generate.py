"""Generate text from a checkpoint, streaming it to stdout as it is produced.

`clusterlm generate CKPT --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K]
[--top-p P] [--seed S] [--no-kv-cache] [--device DEV]`

CKPT is a checkpoint dir, a run dir (its latest checkpoint), a single-file export or an HF
model dir with a tokenizer.json. The prompt is printed, then the continuation piece by
piece; generation stops at the end-of-text token or after N new tokens. Temperature 0 is
greedy decoding (deterministic); otherwise --seed makes a sample reproducible. A prompt
longer than the model's context is cropped to its last tokens (a note goes to stderr).
"""

from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="checkpoint dir, run dir, .safetensors export or HF dir")
    parser.add_argument("--prompt", required=True, help="text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate at most (default: 200)")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default: 0.8)")
    parser.add_argument("--top-k", type=int, help="sample only among the K most likely tokens")
    parser.add_argument("--top-p", type=float, help="nucleus sampling: the smallest set with probability ≥ P")
    parser.add_argument("--seed", type=int, help="seed for sampling (default: random)")
    parser.add_argument("--no-kv-cache", action="store_true", help="recompute the whole context each step (slow)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda[:N] | auto (default: cpu)")
    parser.add_argument("--no-echo", action="store_true", help="print only the continuation, not the prompt")


def run(args: argparse.Namespace) -> int:
    from clusterlm.api.generate import generate

    stream = generate(args.checkpoint, args.prompt, max_new_tokens=args.max_new_tokens,
                      temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                      kv_cache=not args.no_kv_cache, device=args.device)
    if stream.cropped_to is not None:
        sys.stderr.write(f"note: the prompt has {len(stream.prompt_ids)} tokens; "
                         f"the model sees its last {stream.cropped_to}\n")
    out = sys.stdout
    if not args.no_echo:
        out.write(args.prompt)
        out.flush()
    started = time.perf_counter()
    for piece in stream:
        out.write(piece)
        out.flush()
    out.write("\n")
    elapsed_s = time.perf_counter() - started
    n_new = stream.completion_tokens
    sys.stderr.write(f"[{n_new} tokens in {elapsed_s:.2f} s, {n_new / max(elapsed_s, 1e-9):.1f} tok/s]\n")
    return 0
