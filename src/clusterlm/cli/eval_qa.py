"""Score a question-answering model: exact match and token F1 beside TF-IDF retrieval.

  clusterlm eval-qa RUN --data test.jsonl [--documents docs.jsonl] [--limit N]

Records are {"prompt": question, "response": reference answer} (as written by `clusterlm
finetune data qa`). The model answers greedily in the chat template it was fine-tuned with.
Exact match and token F1 use SQuAD's answer normalisation (percent). With --documents (the
builder's docs.jsonl: {"document", "answer"}), the retrieval baseline — the answer of the
TF-IDF-nearest document — is scored in the same run.
"""

from __future__ import annotations

import argparse

from clusterlm.cli.eval_translate import add_eval_arguments, check_eval_arguments, print_report, progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_eval_arguments(parser, max_new_tokens=64)
    parser.add_argument("--documents", help="retrieval index (JSONL {document, answer}): adds the baseline")


def run(args: argparse.Namespace) -> int:
    from clusterlm.api import finetune as api

    check_eval_arguments(args)
    report = api.eval_qa(args.checkpoint, args.data, documents=args.documents, limit=args.limit,
                         max_new_tokens=args.max_new_tokens, device=args.device,
                         predictions=args.predictions, overwrite=args.overwrite, progress=progress(args))
    print_report(report, {"exact_match": "EM", "f1": "F1"}, args.json)
    return 0
