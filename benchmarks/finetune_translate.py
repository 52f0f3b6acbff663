"""Translation benchmark (en → zh_CN): a fine-tuned small GPT vs identity copy and a TF-IDF
translation memory, scored with sacrebleu chrF and BLEU (zh) on held-out catalogs, same run.

Data: `clusterlm finetune data translate` (the gettext catalogs on this machine, split by
catalog). The tokenizer must cover Chinese, so the base is not the stdlib model: a byte-level
BPE is trained on both sides of the training pairs and the quickstart GPT shape is pretrained
on that bilingual text for --pretrain-minutes, then SFT (full) runs for --sft-minutes.

    .venv/bin/python benchmarks/finetune_translate.py [--work runs/finetune-bench] [--limit 500]
Budget: ≤ 15 min on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from finetune_common import Bench, add_common_arguments, pretrain, table


def bilingual_corpus(pairs: Path, out: Path, pairs_per_doc: int = 32) -> Path:
    """The training pairs as documents of `pairs_per_doc` lines "English<TAB>中文" (prepare's JSONL input)."""
    rows = [json.loads(line) for line in pairs.read_text(encoding="utf-8").splitlines() if line.strip()]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as fh:
        for i in range(0, len(rows), pairs_per_doc):
            text = "\n".join(f"{r['prompt']}\t{r['response']}" for r in rows[i:i + pairs_per_doc])
            fh.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--pretrain-minutes", type=float, default=3.0)
    parser.add_argument("--sft-minutes", type=float, default=6.0)
    parser.add_argument("--limit", type=int, default=500, help="test pairs scored (spread over the test file)")
    args = parser.parse_args()
    bench = Bench(Path(args.work), args.threads)
    data = bench.dataset("translate", "mt")
    corpus = bilingual_corpus(data / "train.jsonl", bench.work / "mt_text" / "pairs.jsonl")
    base = pretrain(bench, "mt", [str(corpus)], args.pretrain_minutes)
    run = bench.work / "mt_sft"
    sft = bench.run("sft", ["finetune", "sft", str(base), "--data", str(data / "train.jsonl"), "--out", str(run),
                            "--epochs", "100", "--max-minutes", str(args.sft_minutes), "--drop-long",
                            "--overwrite", "--quiet", "--json"], parse_json=True)
    report = bench.run("evaluate", ["eval-translate", str(run), "--data", str(data / "test.jsonl"), "--train",
                                    str(data / "train.jsonl"), "--limit", str(args.limit), "--max-new-tokens", "96",
                                    "--predictions", str(bench.work / "mt_predictions.jsonl"), "--overwrite",
                                    "--quiet", "--json"], parse_json=True)
    names = {"model": "GPT 2×128, SFT full", "identity": "identity (copy source)",
             "translation_memory": "TF-IDF translation memory"}
    rows = [(names[k], f"{s['chrf']:.1f}", f"{s['bleu']:.1f}") for k, s in report["scores"].items()]
    print(table(rows, ("system", "chrF", "BLEU (zh)")))
    print(f"test pairs scored: {report['examples']}; SFT: {sft['examples']} pairs ({sft['dropped_long']} too long), "
          f"{sft['steps']} steps in {sft['elapsed_s']:.0f} s; decoding {report['decode_s']:.0f} s; "
          f"total wall time {bench.total_s / 60:.1f} min")
    print(f"results: {bench.save('translate', {'scores': report['scores'], 'sft': sft})}")


if __name__ == "__main__":
    main()
