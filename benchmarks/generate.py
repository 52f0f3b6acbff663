"""Generation throughput: KV cache vs no cache, and ours vs HF `generate`, measured in one run.

One GPT-2-style model (random weights, seeded), greedy decoding of exactly N new tokens
(no EOS stop) from the same prompt, batch 1, fp32:

  ours, KV cache        clusterlm.generate.generate_ids (preallocated per-layer cache)
  ours, no cache        the same loop re-running the whole context every step
  HF generate           GPT2LMHeadModel with the same weights (SDPA attention, its default
                        dynamic KV cache), `generate(do_sample=False, max/min_new_tokens=N)`

The three greedy outputs are compared token by token (they must agree, up to the point where
float rounding between implementations could flip a near-tie). Each timing is the best of
`--repeats` runs (the least disturbed by other processes on a shared machine).

    .venv/bin/python benchmarks/generate.py [--new-tokens 512] [--repeats 3]
Targets (issue 4): cache / no cache ≥ 5× at 512 new tokens; ours / HF generate ≥ 1.0×.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Default: a small GPT (4 layers, width 256, 8192-token vocab) with a context that holds 512
    # new tokens; the CPU MFU shape is --layers 6 --d-model 384 --heads 6.
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: batch-1 decoding gains nothing from a second "
                             "thread here; 0 = torch default)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="cpu",
                        help="this process's CPU time (default: robust to other processes on the cores) or wall")
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    from clusterlm.generate.generator import GenerationSettings, generate_ids
    from clusterlm.generate.sampling import SamplingSettings
    from clusterlm.model.build import build_model
    from clusterlm.config.model import ModelConfig
    from clusterlm.model.flops import param_count
    from clusterlm.checkpoint.hf import to_transformers

    cfg = ModelConfig(style="gpt2", n_layer=args.layers, n_head=args.heads, d_model=args.d_model,
                      vocab_size=args.vocab, max_seq_len=args.context)
    if args.prompt_tokens + args.new_tokens > args.context:
        parser.error("prompt + new tokens must fit the context (the HF peer has no sliding window)")
    model = build_model(cfg).eval()
    model.init_weights(seed=1)
    hf = to_transformers(model, cfg, attn_implementation="sdpa").eval()  # GPT2LMHeadModel, same weights
    prompt = torch.randint(0, args.vocab, (args.prompt_tokens,), generator=torch.Generator().manual_seed(0)).tolist()
    N = args.new_tokens
    print(f"model: gpt2 style, {param_count(cfg) / 1e6:.1f}M params, L={cfg.n_layer} d={cfg.d_model}, "
          f"context {cfg.max_seq_len}; prompt {len(prompt)} tokens, {N} new tokens, greedy, batch 1, fp32, "
          f"{torch.get_num_threads()} threads, {args.clock} clock, transformers {transformers.__version__}")

    def ours(use_cache: bool) -> list[int]:
        settings = GenerationSettings(max_new_tokens=N, sampling=SamplingSettings(temperature=0.0),
                                      use_kv_cache=use_cache)
        return list(generate_ids(model, prompt, settings))

    def peer() -> list[int]:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                              do_sample=False, max_new_tokens=N, min_new_tokens=N, eos_token_id=None,
                              pad_token_id=0, use_cache=True)
        return out[0, len(prompt):].tolist()

    def best_rate(fn, repeats: int) -> tuple[float, list[int]]:
        best, tokens = 0.0, []
        for _ in range(repeats):
            started = clock()
            tokens = fn()
            best = max(best, len(tokens) / (clock() - started))
        return best, tokens

    ours(True), peer()  # warm-up
    cached_rate, cached = best_rate(lambda: ours(True), args.repeats)
    hf_rate, hf_tokens = best_rate(peer, args.repeats)
    uncached_rate, uncached = best_rate(lambda: ours(False), max(1, args.repeats - 1))

    def agree(a: list[int], b: list[int]) -> str:
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        return "all" if n == len(a) == len(b) else f"first {n}"

    assert len(cached) == len(uncached) == len(hf_tokens) == N
    print(f"greedy tokens: cache vs no cache agree on {agree(cached, uncached)} of {N}; "
          f"ours vs HF agree on {agree(cached, hf_tokens)} of {N}")
    print(f"\nours, KV cache   {cached_rate:8.1f} tok/s")
    print(f"ours, no cache   {uncached_rate:8.1f} tok/s")
    print(f"HF generate      {hf_rate:8.1f} tok/s")
    r_cache, r_hf = cached_rate / uncached_rate, cached_rate / hf_rate
    print(f"\nKV cache / no cache = {r_cache:.1f}× (target ≥ 5×) {'PASS' if r_cache >= 5 else 'BELOW TARGET'}")
    print(f"ours / HF generate  = {r_hf:.2f}× (target ≥ 1.0×) {'PASS' if r_hf >= 1.0 else 'BELOW TARGET'}")


if __name__ == "__main__":
    main()
