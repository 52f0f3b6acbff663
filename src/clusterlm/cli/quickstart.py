"""Prepare → train → eval → generate on the default corpus, then print a short summary.

`clusterlm quickstart [--config RECIPE_OR_YAML] [--fresh] [section.key=value ...]`

Uses the shipped recipe `quickstart` (src/clusterlm/configs/quickstart.yaml): the embedded default corpus (this Python's
standard library sources), a byte-level BPE, a small GPT trained for a fixed number of
minutes on the CPU. The dataset is reused when it was already prepared with the same
settings; the run resumes (or, if finished, is just re-evaluated) unless --fresh. The
summary compares the model's held-out bits per byte with gzip -9 and xz -9e on the
same held-out text.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

DEFAULT_PROMPT = "def "  # keep in step with clusterlm.api.quickstart.DEFAULT_PROMPT (not imported: --help stays light)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides of the recipe, e.g. train.max_minutes=2")
    parser.add_argument("--config", default="quickstart",
                        help="recipe name (quickstart, cpu-60min) or a run config YAML (default: quickstart)")
    parser.add_argument("--fresh", action="store_true",
                        help="delete the previous quickstart run (train.out_dir) and train again")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"sample prompt (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--max-new-tokens", type=int, default=120, help="sample length in tokens (default: 120)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from clusterlm.api.quickstart import quickstart
    from clusterlm.config.run import load_run_config
    from clusterlm.errors import UsageError

    for item in args.overrides:
        if "=" not in item:
            raise UsageError(f"expected section.key=value overrides, got {item!r}")
    cfg = load_run_config(args.config, args.overrides)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def show(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    summary = quickstart(cfg, fresh=args.fresh, prompt=args.prompt, max_new_tokens=args.max_new_tokens,
                         progress=not args.quiet, say=say, on_sample=None if args.json else show)
    if not args.json:
        sys.stdout.write("\n\n")
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def format_summary(s: dict[str, Any]) -> str:
    def num(value: Any, fmt: str) -> str:
        return format(value, fmt) if isinstance(value, (int, float)) else "n/a"

    bpb = s["val_bits_per_byte"]
    verdict = []
    for name, key in (("gzip -9", "gzip_bits_per_byte"), ("xz -9e", "xz_bits_per_byte")):
        verdict.append(f"{name} {s[key]:.3f} ({'beaten' if bpb < s[key] else 'not beaten'})")
    t = s["seconds"]
    lines = [
        "── quickstart summary " + "─" * 50,
        f"model          {num(s['params'], ',')} parameters ({s['precision']}), {s['steps']:,} steps, "
        f"{num(s['tokens_seen'], ',')} tokens seen in {s['train_minutes']:.1f} min",
        f"throughput     {num(s['tokens_per_s'], ',.0f')} tok/s, MFU {num(s['mfu'], '.1%')} of "
        f"{num(s['peak_gflops'], '.0f')} GFLOP/s measured peak",
        f"held-out       loss {s['val_loss']:.4f} nats/token, {bpb:.3f} bits/byte, top-1 "
        f"{s['val_top1_accuracy']:.1%} over {s['val_tokens']:,} tokens",
        f"vs compressors {' · '.join(verdict)} on the same {s['held_out_bytes']:,} bytes",
        f"generalisation train loss {s['train_loss']:.4f} → gap (val − train) {s['generalization_gap']:+.4f}",
        f"sample         {s['sample'][:200]!r}",
        f"plots          {s['plots']}   (metrics: {s['metrics']}, TensorBoard: {s['run_dir']}/tb)",
        f"checkpoint     {s['checkpoint']}",
        f"time           prepare {t['prepare']:.0f} s{' (reused)' if s['dataset_reused'] else ''}, "
        f"train {t['train']:.0f} s, eval {t['eval']:.0f} s, generate {t['generate']:.0f} s",
        "next           clusterlm eval " + s["run_dir"] + " · clusterlm generate " + s["run_dir"]
        + " --prompt 'import '",
    ]
    return "\n".join(lines)
