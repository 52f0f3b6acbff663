"""Question-answering benchmark: a fine-tuned small GPT (full and LoRA) vs TF-IDF retrieval,
exact match and token F1 (SQuAD normalisation) on questions about held-out stdlib modules.

Data: `clusterlm finetune data qa` ("What does `json.dumps` do?" → the docstring's first
sentence; split by top-level module). Base: the quickstart GPT pretrained on the stdlib for
--pretrain-minutes (shared with finetune_classify.py; reused from --work if present). The
retrieval baseline searches every docstring (test modules included: open book); the model
answers from its weights (closed book).

    .venv/bin/python benchmarks/finetune_qa.py [--work runs/finetune-bench] [--sft-minutes 3]
Budget: ≤ 15 min on a 2-core CPU including pretraining.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from finetune_common import Bench, add_common_arguments, pretrain, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--pretrain-minutes", type=float, default=4.0)
    parser.add_argument("--sft-minutes", type=float, default=3.0)
    parser.add_argument("--limit", type=int, help="test questions scored (default: all)")
    args = parser.parse_args()
    bench = Bench(Path(args.work), args.threads)
    data = bench.dataset("qa", "qa")
    base = pretrain(bench, "stdlib", [], args.pretrain_minutes)
    limit = ["--limit", str(args.limit)] if args.limit else []
    rows, results, retrieval = [], {}, None
    for method in ("full", "lora"):
        run = bench.work / f"qa_{method}"
        sft = bench.run(f"sft {method}", ["finetune", "sft", str(base), "--data", str(data / "train.jsonl"),
                                          "--val", str(data / "val.jsonl"), "--out", str(run), "--method", method,
                                          "--epochs", "100", "--max-minutes", str(args.sft_minutes), "--drop-long",
                                          "--overwrite", "--quiet", "--json"], parse_json=True)
        docs = ["--documents", str(data / "docs.jsonl")] if retrieval is None else []
        report = bench.run(f"evaluate {method}", ["eval-qa", str(run), "--data", str(data / "test.jsonl"), *docs,
                                                  *limit, "--predictions", str(bench.work / f"qa_{method}.jsonl"),
                                                  "--overwrite", "--quiet", "--json"], parse_json=True)
        retrieval = retrieval or report["scores"]["retrieval"]
        s = report["scores"]["model"]
        results[method] = {**s, "steps": sft["steps"], "val_loss": sft["val_loss"],
                           "trainable_params": sft["trainable_params"]}
        rows.append((f"GPT 2×128, SFT {method} ({sft['trainable_params']:,} params trained, {sft['steps']} steps)",
                     f"{s['exact_match']:.1f}", f"{s['f1']:.1f}", f"{sft['val_loss']:.3f}"))
    results["retrieval"] = retrieval
    rows.append(("TF-IDF retrieval over all docstrings", f"{retrieval['exact_match']:.1f}", f"{retrieval['f1']:.1f}",
                 "—"))
    print(table(rows, ("system", "EM", "F1", "val loss")))
    print(f"test questions: {retrieval['examples']}; total wall time {bench.total_s / 60:.1f} min")
    print(f"results: {bench.save('qa', {'scores': results})}")


if __name__ == "__main__":
    main()
