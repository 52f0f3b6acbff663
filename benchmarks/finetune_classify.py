"""Classification benchmark: a fine-tuned small GPT vs TF-IDF + logistic regression, same run.

Data: `clusterlm finetune data classify` (stdlib source snippets labelled by package, split by
file). Base: the quickstart GPT pretrained for --pretrain-minutes on the stdlib (reused from
--work if present). Fine-tuning variants: full and head-only, last-token and mean pooling.
Every model and the baseline are scored on the same held-out test files.

    .venv/bin/python benchmarks/finetune_classify.py [--work runs/finetune-bench] [--pretrain-minutes 4]
Budget: ≤ 15 min on a 2-core CPU including pretraining.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from finetune_common import Bench, add_common_arguments, pretrain, table

VARIANTS = [("full", "last", 3), ("full", "mean", 3), ("head", "last", 20), ("head", "mean", 20)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--pretrain-minutes", type=float, default=4.0)
    args = parser.parse_args()
    bench = Bench(Path(args.work), args.threads)
    data = bench.dataset("classify", "cls")
    base = pretrain(bench, "stdlib", [], args.pretrain_minutes)
    rows, results = [], {}
    baseline = None
    for method, pooling, epochs in VARIANTS:
        name = f"{method}-{pooling}"
        run = bench.work / f"cls_{name}"
        bench.run(f"finetune {name}", ["finetune", "classify", str(base), "--data", str(data / "train.jsonl"),
                                       "--val", str(data / "val.jsonl"), "--out", str(run), "--method", method,
                                       "--pooling", pooling, "--epochs", str(epochs), "--class-weights", "balanced",
                                       "--overwrite", "--quiet"])
        extra = ["--train", str(data / "train.jsonl")] if baseline is None else []
        report = bench.run(f"test {name}", ["classify", str(run), "--data", str(data / "test.jsonl"), *extra, "--json"],
                           parse_json=True)
        baseline = baseline or report["scores"]["tfidf_logreg"]
        s = report["scores"]["model"]
        results[name] = s
        rows.append((f"GPT 2×128, {method}, {pooling} pooling", f"{s['accuracy']:.1%}", f"{s['macro_f1']:.3f}",
                     f"{bench.steps[-2]['wall_s']:.0f} s"))
    results["tfidf_logreg"] = baseline
    rows.append(("TF-IDF + logistic regression", f"{baseline['accuracy']:.1%}", f"{baseline['macro_f1']:.3f}", "—"))
    print(table(rows, ("system", "test accuracy", "test macro-F1", "fine-tune time")))
    print(f"test examples: {baseline['examples']}; total wall time {bench.total_s / 60:.1f} min")
    print(f"results: {bench.save('classify', {'scores': results})}")


if __name__ == "__main__":
    main()
