"""Evaluate checkpoints: loss, perplexity, bits per byte, top-1/top-5 next-token accuracy.

`clusterlm eval RUN_OR_CKPT [RUN_OR_CKPT ...] [--data DIR] [--split train,val] [--batches N] [--json]`

Each argument is a checkpoint dir or a run dir (its `latest` checkpoint). Metrics are
computed on sequential, non-overlapping windows of each split (the first N batches;
--batches 0 = the whole split), plus the generalisation gap (val − train loss).
Several checkpoints — e.g. a Transformer and an LSTM baseline trained on the same
dataset — are scored on the same windows and shown side by side. Bits per byte
divide by the split's UTF-8 bytes, so models with different tokenizers compare fairly.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="RUN_OR_CKPT", help="run dir(s) or checkpoint dir(s)")
    parser.add_argument("--data", help="dataset dir (default: the one the checkpoint was trained on)")
    parser.add_argument("--split", default="train,val", help="comma-separated splits (default: train,val)")
    parser.add_argument("--batches", type=int, default=100,
                        help="batches per split, 0 = the whole split (default: 100)")
    parser.add_argument("--batch-size", type=int, default=16, help="sequences per batch (default: 16)")
    parser.add_argument("--seq-len", type=int, help="window length (default: the training seq_len)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default: auto)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                        help="auto: fp32 on CPU, bf16 autocast on GPUs that support it")
    parser.add_argument("--json", action="store_true", help="print results as JSON")


def run(args: argparse.Namespace) -> int:
    from clusterlm.api.evaluate import evaluate
    from clusterlm.config import limits as L
    from clusterlm.errors import UsageError

    splits = [s.strip() for s in args.split.split(",") if s.strip()]
    if not splits:
        raise UsageError(f"--split takes train and/or val, got {args.split!r}")
    L.check_range("--batches", args.batches, 0, L.MAX_STEPS)
    L.check_range("--batch-size", args.batch_size, 1, L.MAX_MICRO_BATCH)
    L.check_range("--seq-len", args.seq_len, 1, L.MAX_SEQ_LEN)
    reports = [evaluate(path, data_dir=args.data, splits=splits, batches=args.batches or None,
                        batch_size=args.batch_size, seq_len=args.seq_len, device=args.device,
                        precision=args.precision)
               for path in args.paths]
    if args.json:
        print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    else:
        print(format_reports(reports))
    return 0


def format_reports(reports: list[dict[str, Any]]) -> str:
    header = (f"{'checkpoint':<40} {'split':<5} {'loss':>7} {'ppl':>9} {'bits/byte':>9} "
              f"{'top1':>6} {'top5':>6} {'tokens':>9}")
    lines = [header, "-" * len(header)]
    for r in reports:
        name = f"{r['checkpoint']}"[-40:]
        for split, m in r["splits"].items():
            bpb = m["bits_per_byte"]
            lines.append(
                f"{name:<40} {split:<5} {m['loss']:>7.4f} {m['perplexity']:>9.2f} "
                f"{(f'{bpb:.4f}' if bpb is not None else 'n/a'):>9} {m['top1_accuracy']:>6.1%} "
                f"{m['top5_accuracy']:>6.1%} {m['tokens']:>9,}"
            )
            name = ""
        if r.get("generalization_gap") is not None:
            lines.append(f"{'':<40} gap (val − train loss) {r['generalization_gap']:+.4f}"
                         f"   [{r['model']['style']}, {r['model']['params']:,} params, step {r['step']}]")
    return "\n".join(lines)
