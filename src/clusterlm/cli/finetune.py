"""Fine-tune a pretrained checkpoint for an application, or build the offline datasets.

  clusterlm finetune classify CKPT --data train.jsonl --val val.jsonl --out RUN
      records {"text", "label"}; a linear head on the LM's last-token (--pooling last) or mean
      (--pooling mean) hidden state; --method full trains everything, --method head only the
      head (a linear probe); --class-weights balanced|LABEL=W,…; writes accuracy, macro-F1 and
      plots/confusion.png. Predict with `clusterlm classify RUN "text"`.

  clusterlm finetune sft CKPT --data pairs.jsonl --out RUN [--val val.jsonl] [--method lora]
      records {"prompt", "response"[, "system"]} or {"messages": [{"role", "content"}, …]}, in the
      chat template the server uses; loss on the assistant's replies only; short examples packed
      into full rows (--no-packing to turn off); --method lora trains rank-r adapters and merges them
      into the weights on save. An example longer than the context is an error (--drop-long skips
      and counts them). RUN is a normal run dir: eval, generate, serve and export work on it.

  clusterlm finetune data {classify,translate,qa} --out DIR [SOURCE ...]
      classify: stdlib source snippets labelled by package; translate: en→zh_CN pairs from the
      gettext catalogs (SOURCE: .mo paths or globs; default the system locale dirs); qa: questions
      on stdlib docstrings. Splits are by file / catalog / module. See docs/finetuning.md.

Needs the 'finetune' extra for metrics and baselines: pip install 'clusterlm[finetune]'.
"""

from __future__ import annotations

import argparse
import json
import sys

DEFAULT_LR = {"full": 5e-4, "head": 5e-3, "lora": 2e-3}


def _add_loop_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CKPT", help="pretrained checkpoint dir, run dir or HF dir")
    p.add_argument("--data", required=True, help="training records (JSONL)")
    p.add_argument("--out", required=True, help="run dir to write")
    p.add_argument("--lr", type=float, help="peak learning rate (default: by --method: "
                   + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the data (default: 1)")
    p.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs)")
    p.add_argument("--max-minutes", type=float, help="wall-clock budget; the schedule ends when it is spent")
    p.add_argument("--batch-size", type=int, default=16, help="rows per step (default: 16)")
    p.add_argument("--warmup-fraction", type=float, default=0.05, help="share of steps warming up (default: 0.05)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW decay of matrices (default: 0)")
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm, 0 = off (default: 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=10, help="log the training loss every N steps")
    p.add_argument("--eval-every", type=int, help="validate every N steps (default: at the end only)")
    p.add_argument("--device", default="cpu", help="cpu | cuda[:N] | auto (default: cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="task", required=True, metavar="{classify,sft,data}")
    cls = sub.add_parser("classify", help="classification head on a pretrained LM")
    _add_loop_arguments(cls)
    cls.add_argument("--val", required=True, help="validation records (JSONL) scored at the end")
    cls.add_argument("--pooling", choices=["last", "mean"], default="last", help="default: last")
    cls.add_argument("--method", choices=["full", "head"], default="full", help="default: full")
    cls.add_argument("--class-weights", default="none", metavar="none|balanced|LABEL=W,…",
                     help="loss weight per class (default: none)")
    cls.add_argument("--max-tokens", type=int, help="tokens per text, longer ones cut (default: the context)")
    sft = sub.add_parser("sft", help="supervised fine-tuning on prompt/response or chat records")
    _add_loop_arguments(sft)
    sft.add_argument("--val", help="validation records (JSONL): loss on their replies")
    sft.add_argument("--method", choices=["full", "lora"], default="full", help="default: full")
    sft.add_argument("--lora-rank", type=int, default=8, help="default: 8")
    sft.add_argument("--lora-alpha", type=float, default=16.0, help="update scale α/r (default α: 16)")
    sft.add_argument("--lora-dropout", type=float, default=0.0)
    sft.add_argument("--no-packing", action="store_true", help="one example per row (padded)")
    sft.add_argument("--drop-long", action="store_true", help="skip (and count) examples longer than the context")
    sft.add_argument("--context", type=int, help="tokens per row (default: the model's context)")
    data = sub.add_parser("data", help="build a task's dataset offline")
    data.add_argument("kind", choices=["classify", "translate", "qa"])
    data.add_argument("sources", nargs="*", metavar="SOURCE",
                      help="translate: .mo files or globs; classify/qa: a source root (default: the stdlib)")
    data.add_argument("--out", required=True, help="directory to write")
    data.add_argument("--seed", type=int, default=0, help="split seed (default: 0)")
    data.add_argument("--overwrite", action="store_true")


def _settings(args: argparse.Namespace) -> object:
    from clusterlm.api.finetune import LoopSettings

    return LoopSettings(lr=args.lr or DEFAULT_LR[args.method], epochs=args.epochs, max_steps=args.max_steps,
                        max_minutes=args.max_minutes, batch_size=args.batch_size,
                        warmup_fraction=args.warmup_fraction, weight_decay=args.weight_decay,
                        grad_clip=args.grad_clip, seed=args.seed, log_every=args.log_every,
                        eval_every=args.eval_every)


def _progress(args: argparse.Namespace):  # noqa: ANN202 - a callback or None
    return None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))


def run(args: argparse.Namespace) -> int:
    from clusterlm.api import finetune as api

    if args.task == "data":
        report = api.build_data(args.kind, args.out, sources=args.sources, seed=args.seed, overwrite=args.overwrite)
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    if args.task == "classify":
        options = api.ClassifyOptions(pooling=args.pooling, method=args.method, class_weights=args.class_weights,
                                      max_tokens=args.max_tokens)
        summary = api.finetune_classify(args.checkpoint, args.data, args.val, args.out, options=options,
                                        settings=_settings(args), device=args.device, overwrite=args.overwrite,
                                        progress=_progress(args))
    else:
        options = api.SFTOptions(method=args.method, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                                 lora_dropout=args.lora_dropout, packing=not args.no_packing,
                                 drop_long=args.drop_long, context=args.context)
        summary = api.finetune_sft(args.checkpoint, args.data, args.out, val_path=args.val, options=options,
                                   settings=_settings(args), device=args.device, overwrite=args.overwrite,
                                   progress=_progress(args))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def format_summary(s: dict) -> str:
    lines = [f"run dir      {s['run_dir']}", f"checkpoint   {s['checkpoint']}",
             f"steps        {s['steps']} ({s['stop_reason']}), {s['elapsed_s']:.1f} s"]
    if s.get("train_loss") is not None:
        lines.append(f"train loss   {s['train_loss']:.4f}")
    if s.get("val_loss") is not None:
        lines.append(f"val loss     {s['val_loss']:.4f}")
    if s["task"] == "classify":
        v = s["validation"]
        lines.append(f"validation   accuracy {v['accuracy']:.1%}  macro-F1 {v['macro_f1']:.3f}  "
                     f"({v['examples']} examples; confusion matrix: {s['run_dir']}/plots/confusion.png)")
    else:
        lines.append(f"examples     {s['examples']} ({s['dropped_long']} dropped as too long), "
                     f"{s['rows_per_epoch']} rows/epoch, method {s['method']}, "
                     f"{s['trainable_params']:,} of {s['total_params']:,} parameters trained")
    return "\n".join(lines)
