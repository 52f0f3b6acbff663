"""Score a translation model: chrF and BLEU beside the identity copy and a translation memory.

  clusterlm eval-translate RUN --data test.jsonl [--train train.jsonl] [--limit N]

Records are {"prompt": source, "response": reference} (as written by `clusterlm finetune data
translate`). The model translates each source greedily in the chat template it was fine-tuned
with. Scores (sacrebleu, 0–100): chrF, and BLEU with the `zh` tokeniser (one token per Chinese
character). Baselines in the same run: identity (the source copied) and, with --train, the
TF-IDF nearest-neighbour translation memory over the training pairs. --limit N scores N records
spread evenly over the file.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_eval_arguments(parser: argparse.ArgumentParser, max_new_tokens: int | None = None) -> None:
    """Arguments shared by eval-translate and eval-qa; `max_new_tokens` is the --max-new-tokens default
    (None: min(256, context))."""
    parser.add_argument("checkpoint", metavar="RUN", help="fine-tuned run dir or checkpoint dir")
    parser.add_argument("--data", required=True, help="held-out records (JSONL)")
    parser.add_argument("--limit", type=int, help="score N records spread over the file (default: all)")
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                        help=f"longest reply (default: {max_new_tokens or 'min(256, context)'})")
    parser.add_argument("--predictions", help="write every output to this JSONL file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --predictions file")
    parser.add_argument("--device", default="cpu", help="cpu | cuda[:N] | auto (default: cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--json", action="store_true", help="print JSON")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_eval_arguments(parser)
    parser.add_argument("--train", help="training records: adds the translation-memory baseline")


def check_eval_arguments(args: argparse.Namespace) -> None:
    from clusterlm.errors import UsageError

    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be ≥ 1, got {args.limit}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be ≥ 1, got {args.max_new_tokens}")


def progress(args: argparse.Namespace):  # noqa: ANN201 - a callback or None
    if args.quiet:
        return None

    def report(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            print(f"decoded {done}/{total}", file=sys.stderr, flush=True)
    return report


def print_report(report: dict, columns: dict[str, str], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return
    print(f"{report['examples']} examples from {report['data']}; model {report['checkpoint']} "
          f"(decoding {report['decode_s']:.1f} s)")
    print(f"{'system':<20}" + "".join(f"{title:>10}" for title in columns.values()))
    for name, scores in report["scores"].items():
        print(f"{name:<20}" + "".join(f"{scores[key]:>10.2f}" for key in columns))


def run(args: argparse.Namespace) -> int:
    from clusterlm.api import finetune as api

    check_eval_arguments(args)
    report = api.eval_translate(args.checkpoint, args.data, train=args.train, limit=args.limit,
                                max_new_tokens=args.max_new_tokens, device=args.device,
                                predictions=args.predictions, overwrite=args.overwrite, progress=progress(args))
    print_report(report, {"chrf": "chrF", "bleu": "BLEU"}, args.json)
    return 0
