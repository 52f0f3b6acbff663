"""Label texts with a classifier trained by `clusterlm finetune classify`.

  clusterlm classify RUN "some text" ["another text" …] [--json]
      every label with its probability, highest first
  clusterlm classify RUN --data test.jsonl [--train train.jsonl] [--json]
      accuracy, macro-F1 and confusion on labelled records ({"text", "label"}); with --train, the
      TF-IDF + logistic-regression baseline trained on those records is scored beside it

A record whose label the classifier never saw in training is an error (it has no output for it).
"""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="RUN", help="classifier run dir or checkpoint dir")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to label")
    parser.add_argument("--data", help="labelled JSONL to score instead of TEXTs")
    parser.add_argument("--train", help="with --data: training JSONL for the TF-IDF baseline")
    parser.add_argument("--device", default="cpu", help="cpu | cuda[:N] | auto (default: cpu)")
    parser.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from clusterlm.errors import UsageError
    from clusterlm.api import finetune as api

    if args.data and args.texts:
        raise UsageError("give TEXTs or --data, not both")
    if args.train and not args.data:
        raise UsageError("--train needs --data")
    if args.data:
        report = api.eval_classifier(args.checkpoint, args.data, train=args.train, device=args.device)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            for name, s in report["scores"].items():
                print(f"{name:<14} accuracy {s['accuracy']:.1%}  macro-F1 {s['macro_f1']:.3f}  ({s['examples']} examples)")
        return 0
    results = api.classify_texts(args.checkpoint, args.texts, device=args.device)
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2, ensure_ascii=False))
        return 0
    for r in results:
        if len(results) > 1:
            print(r["text"])
        for label, p in r["probabilities"].items():
            print(f"  {p:6.1%}  {label}")
    return 0
