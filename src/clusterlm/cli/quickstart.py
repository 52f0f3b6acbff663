"""Prepare → train → eval → generate on the default corpus, then print a short summary.

`clusterlm quickstart [--config configs/quickstart.yaml] [--fresh] [section.key=value ...]`

Uses the recipe in configs/quickstart.yaml: the embedded default corpus (this Python's
standard library sources), a byte-level BPE, a small GPT trained for a fixed number of
minutes on the CPU. The dataset is reused when it was already prepared with the same
settings; the run resumes (or, if finished, is just re-evaluated) unless --fresh. The
summary compares the model's held-out bits per byte with gzip -9 and xz -9e on the
same held-out text.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_PROMPT = "def "


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted overrides of the recipe, e.g. train.max_minutes=2")
    parser.add_argument("--config", help="recipe YAML (default: configs/quickstart.yaml of this checkout)")
    parser.add_argument("--fresh", action="store_true",
                        help="delete the previous quickstart run (train.out_dir) and train again")
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"sample prompt (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--max-new-tokens", type=int, default=120, help="sample length in tokens (default: 120)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def default_recipe() -> Path:
    # src/clusterlm/cli/quickstart.py → the checkout's configs/ directory
    return Path(__file__).resolve().parents[3] / "configs" / "quickstart.yaml"


def run(args: argparse.Namespace) -> int:
    from clusterlm.config.run import load_run_config
    from clusterlm.errors import ConfigError, UsageError

    for item in args.overrides:
        if "=" not in item:
            raise UsageError(f"expected section.key=value overrides, got {item!r}")
    recipe = Path(args.config) if args.config else default_recipe()
    if not recipe.is_file():
        raise ConfigError(f"quickstart recipe not found: {recipe} (pass --config PATH)")
    cfg = load_run_config(recipe, args.overrides)
    if not cfg.data.dir:
        raise ConfigError(f"{recipe}: data.dir must name where the quickstart dataset goes")
    if args.max_new_tokens < 0:
        raise UsageError("--max-new-tokens must be ≥ 0")
    summary = quickstart(cfg, fresh=args.fresh, prompt=args.prompt, max_new_tokens=args.max_new_tokens,
                         progress=not args.quiet, stream=not args.json)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_summary(summary))
    return 0


def quickstart(cfg: Any, *, fresh: bool = False, prompt: str = DEFAULT_PROMPT, max_new_tokens: int = 120,
               progress: bool = True, stream: bool = True) -> dict[str, Any]:
    """Run the four stages; return the numbers the summary prints."""
    from clusterlm.cli.evaluate import evaluate_checkpoint
    from clusterlm.data.loader import Dataset
    from clusterlm.eval.compression import compressed_bits_per_byte, split_text
    from clusterlm.train.trainer import Trainer

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    data_dir, reused = prepare_or_reuse(cfg.data, quiet=not progress)
    seconds["prepare"] = time.perf_counter() - t0

    run_dir = Path(cfg.train.out_dir)
    if fresh and run_dir.exists():
        _remove_run_dir(run_dir)
    t0 = time.perf_counter()
    _say(f"[2/4] training {cfg.model.preset or cfg.model.style} for up to "
         f"{cfg.train.max_minutes or '?'} min → {run_dir}", stream)
    from clusterlm.errors import CheckpointError

    try:
        result = Trainer(cfg, progress=progress).run()
    except CheckpointError as exc:  # e.g. the recipe changed since the last quickstart
        raise CheckpointError(f"{exc} (or rerun with --fresh to start the quickstart run over)") from None
    seconds["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _say("[3/4] evaluating on the held-out split", stream)
    val = evaluate_checkpoint(str(run_dir), data_dir=str(data_dir), splits=["val"], batches=None,
                              batch_size=cfg.train.micro_batch, device=cfg.train.device)
    train = evaluate_checkpoint(str(run_dir), data_dir=str(data_dir), splits=["train"], batches=20,
                                batch_size=cfg.train.micro_batch, device=cfg.train.device)
    dataset = Dataset.open(data_dir)
    held_out = split_text(dataset, "val")
    baselines = compressed_bits_per_byte(held_out)
    seconds["eval"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _say(f"[4/4] sample (prompt {prompt!r}):", stream)
    sample = generate_sample(run_dir, prompt, max_new_tokens, dataset.eos_id, stream=stream)
    seconds["generate"] = time.perf_counter() - t0

    v, tr = val["splits"]["val"], train["splits"]["train"]
    s = result.summary
    return {
        "dataset": str(data_dir),
        "dataset_reused": reused,
        "run_dir": str(run_dir),
        "checkpoint": val["checkpoint"],
        "stop_reason": result.stop_reason,
        "params": s.get("params"),
        "steps": result.step,
        "tokens_seen": result.tokens_seen,
        "train_minutes": (s.get("elapsed_s") or 0) / 60,
        "tokens_per_s": s.get("tokens_per_s"),
        "mfu": s.get("mfu"),
        "precision": s.get("precision"),
        "peak_gflops": (s.get("peak_flops") or 0) / 1e9,
        "val_loss": v["loss"],
        "val_bits_per_byte": v["bits_per_byte"],
        "val_top1_accuracy": v["top1_accuracy"],
        "val_tokens": v["tokens"],
        "train_loss": tr["loss"],
        "generalization_gap": v["loss"] - tr["loss"],
        "held_out_bytes": len(held_out),
        "gzip_bits_per_byte": baselines["gzip -9"],
        "xz_bits_per_byte": baselines["xz -9e"],
        "sample_prompt": prompt,
        "sample": sample,
        "plots": str(run_dir / "plots" / "loss.png"),
        "metrics": str(run_dir / "metrics.jsonl"),
        "seconds": seconds,
    }


def prepare_or_reuse(data_cfg: Any, quiet: bool) -> tuple[Path, bool]:
    """Prepare `data_cfg.dir` unless it already holds a complete dataset made with the same settings.

    "Same" = the data config recorded in its manifest equals ours and it was made from the same
    source (for the default corpus: this Python's standard library).
    """
    from clusterlm.data import corpus
    from clusterlm.data.loader import Dataset
    from clusterlm.data.prepare import prepare_dataset
    from clusterlm.errors import ClusterLMError

    out = Path(data_cfg.dir)
    wanted = data_cfg.model_dump(mode="json", exclude={"dir", "workers"})
    source = corpus.describe() if not data_cfg.inputs else ", ".join(data_cfg.inputs)
    if out.exists():
        try:
            manifest = Dataset.open(out).manifest
        except ClusterLMError:
            manifest = {}
        if manifest.get("config") == wanted and (manifest.get("report") or {}).get("source") == source:
            print(f"[1/4] reusing dataset {out} (prepared with the same settings)", file=sys.stderr)
            return out, True
    replace = out.exists()
    if replace and not (out / "manifest.json").is_file() and any(out.iterdir()):
        from clusterlm.errors import OutputExistsError

        raise OutputExistsError(f"data.dir {out} exists and is not a clusterlm dataset; choose another data.dir")
    print(f"[1/4] preparing {out} from {source}", file=sys.stderr)
    prepare_dataset(data_cfg, out, overwrite=replace, quiet=quiet)
    return out, False


def generate_sample(run_dir: Path, prompt: str, max_new_tokens: int, eos_id: int, stream: bool) -> str:
    """A seeded sample from the final checkpoint, streamed to stdout as it is produced."""
    from clusterlm.generate.generator import GenerationSettings, generate_text
    from clusterlm.generate.sampling import SamplingSettings
    from clusterlm.model.serialization import load_model_dir

    loaded = load_model_dir(run_dir)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, seed=0, eos_id=eos_id,
                                  sampling=SamplingSettings(temperature=0.8, top_k=50))
    pieces = []
    if stream:
        sys.stdout.write(prompt)
    for piece in generate_text(loaded.model, loaded.tokenizer, prompt, settings):
        pieces.append(piece)
        if stream:
            sys.stdout.write(piece)
            sys.stdout.flush()
    if stream:
        sys.stdout.write("\n\n")
    return prompt + "".join(pieces)


def _remove_run_dir(run_dir: Path) -> None:
    from clusterlm.errors import UsageError

    # Only ever delete something that looks like a run dir (never an arbitrary out_dir).
    if not ((run_dir / "checkpoints").is_dir() or (run_dir / "metrics.jsonl").is_file()):
        raise UsageError(f"--fresh: {run_dir} does not look like a run dir; remove it yourself")
    shutil.rmtree(run_dir)


def _say(text: str, stream: bool) -> None:
    print(text, file=sys.stderr, flush=True)


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
