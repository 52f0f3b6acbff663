"""`clusterlm quickstart`: prepare → train → eval → generate on the default corpus, with a summary.

The recipe (`quickstart`, shipped as package data) trains a small GPT for a fixed number of
minutes on the CPU. The dataset is reused when it was already prepared with the same settings;
the run resumes (or, if finished, is just re-evaluated) unless `fresh`. The summary compares the
model's held-out bits per byte with gzip -9 and xz -9e on the same held-out text.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clusterlm.api.evaluate import evaluate
from clusterlm.checkpoint.layout import CHECKPOINTS_DIR
from clusterlm.checkpoint.load import load_model
from clusterlm.checkpoint.runlock import RunLock
from clusterlm.config import limits as L
from clusterlm.config.limits import check_range
from clusterlm.config.data import DataConfig
from clusterlm.config.run import RunConfig
from clusterlm.data import corpus
from clusterlm.data.loader import Dataset
from clusterlm.data.prepare import prepare_dataset
from clusterlm.errors import CheckpointError, ClusterLMError, ConfigError, OutputExistsError, UsageError
from clusterlm.eval.compression import compressed_bits_per_byte, split_text
from clusterlm.generate.generator import GenerationSettings, generate_text
from clusterlm.generate.sampling import SamplingSettings
from clusterlm.generate.text import require_text
from clusterlm.train.metrics import METRICS_FILE
from clusterlm.train.trainer import Trainer

DEFAULT_PROMPT = "def "


def _quiet(text: str) -> None:
    """The default reporter: say nothing."""


def quickstart(cfg: RunConfig, *, fresh: bool = False, prompt: str = DEFAULT_PROMPT, max_new_tokens: int = 120,
               progress: bool = True, say: Callable[[str], None] = _quiet,
               on_sample: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the four stages; return the numbers the summary prints. `say` gets a line per stage,
    `on_sample` the sample's text pieces as they are generated (the prompt first)."""
    require_text(prompt, "--prompt")  # checked before minutes of work, not after
    check_range("--max-new-tokens", max_new_tokens, 0, L.MAX_SEQ_LEN)
    if not cfg.data.dir:
        raise ConfigError("data.dir must name where the quickstart dataset goes")
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    data_dir, reused = prepare_or_reuse(cfg.data, quiet=not progress, say=say, fresh=fresh)
    seconds["prepare"] = time.perf_counter() - t0

    run_dir = Path(cfg.train.out_dir)
    if fresh and run_dir.exists():
        _remove_run_dir(run_dir)
    t0 = time.perf_counter()
    say(f"[2/4] training {cfg.model.preset or cfg.model.style} for up to {cfg.train.max_minutes or '?'} min → {run_dir}")
    try:
        result = Trainer(cfg, progress=progress).run()
    except (CheckpointError, OutputExistsError) as exc:  # e.g. the recipe changed since the last quickstart
        raise type(exc)(f"{exc} (quickstart: rerun with --fresh to start its run over)") from None
    seconds["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say("[3/4] evaluating on the held-out split")
    common = dict(data_dir=str(data_dir), batch_size=cfg.train.micro_batch, device=cfg.train.device)
    val = evaluate(str(run_dir), splits=["val"], batches=None, **common)
    train = evaluate(str(run_dir), splits=["train"], batches=20, **common)
    dataset = Dataset.open(data_dir)
    held_out = split_text(dataset, "val")
    baselines = compressed_bits_per_byte(held_out)
    seconds["eval"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say(f"[4/4] sample (prompt {prompt!r}):")
    sample = generate_sample(run_dir, prompt, max_new_tokens, dataset.eos_id, on_piece=on_sample)
    seconds["generate"] = time.perf_counter() - t0

    v, tr = val["splits"]["val"], train["splits"]["train"]
    s = result.summary
    return {
        "dataset": str(data_dir), "dataset_reused": reused, "run_dir": str(run_dir),
        "checkpoint": val["checkpoint"], "stop_reason": result.stop_reason, "params": s.get("params"),
        "steps": result.step, "tokens_seen": result.tokens_seen, "train_minutes": (s.get("elapsed_s") or 0) / 60,
        "tokens_per_s": s.get("tokens_per_s"), "mfu": s.get("mfu"), "precision": s.get("precision"),
        "peak_gflops": (s.get("peak_flops") or 0) / 1e9,
        "val_loss": v["loss"], "val_bits_per_byte": v["bits_per_byte"], "val_top1_accuracy": v["top1_accuracy"],
        "val_tokens": v["tokens"], "train_loss": tr["loss"], "generalization_gap": v["loss"] - tr["loss"],
        "held_out_bytes": len(held_out), "gzip_bits_per_byte": baselines["gzip -9"],
        "xz_bits_per_byte": baselines["xz -9e"], "sample_prompt": prompt, "sample": sample,
        "plots": str(run_dir / "plots" / "loss.png"), "metrics": str(run_dir / METRICS_FILE), "seconds": seconds,
    }


def prepare_or_reuse(data_cfg: DataConfig, quiet: bool, say: Callable[[str], None] = _quiet,
                     fresh: bool = False) -> tuple[Path, bool]:
    """Prepare `data_cfg.dir` unless it already holds a complete dataset made with the same settings.

    "Same" = the data config recorded in its manifest equals ours and it was made from the same
    source (for the default corpus: this Python's standard library). A dataset made otherwise is
    replaced only with `fresh` (it may be one the user pointed data.dir at by mistake).
    """
    out = Path(data_cfg.dir)
    wanted = data_cfg.model_dump(mode="json", exclude={"dir", "workers"})
    source = corpus.describe() if not data_cfg.inputs else ", ".join(data_cfg.inputs)
    if out.exists():
        try:
            manifest = Dataset.open(out).manifest
        except ClusterLMError:
            manifest = {}
        if manifest.get("config") == wanted and (manifest.get("report") or {}).get("source") == source:
            say(f"[1/4] reusing dataset {out} (prepared with the same settings)")
            return out, True
    replace = out.exists()
    if replace and not (out / "manifest.json").is_file() and any(out.iterdir()):
        raise OutputExistsError(f"data.dir {out} exists and is not a clusterlm dataset; choose another data.dir")
    if replace and (out / "manifest.json").is_file() and not fresh:
        raise OutputExistsError(f"data.dir {out} holds a dataset prepared with other settings or sources; pass "
                                "--fresh to replace it, or choose another data.dir")
    say(f"[1/4] preparing {out} from {source}")
    prepare_dataset(data_cfg, out, overwrite=replace, quiet=quiet)
    return out, False


def generate_sample(run_dir: Path, prompt: str, max_new_tokens: int, eos_id: int,
                    on_piece: Callable[[str], None] | None = None) -> str:
    """A seeded sample from the final checkpoint; `on_piece` sees it as it is produced."""
    loaded = load_model(run_dir)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, seed=0, eos_id=eos_id,
                                  sampling=SamplingSettings(temperature=0.8, top_k=50))
    pieces = [prompt]
    if on_piece is not None:
        on_piece(prompt)
    for piece in generate_text(loaded.model, loaded.tokenizer, prompt, settings):
        pieces.append(piece)
        if on_piece is not None:
            on_piece(piece)
    return "".join(pieces)


def _remove_run_dir(run_dir: Path) -> None:
    # Only ever delete something that looks like a run dir (never an arbitrary out_dir).
    if not ((run_dir / CHECKPOINTS_DIR).is_dir() or (run_dir / METRICS_FILE).is_file()):
        raise UsageError(f"--fresh: {run_dir} does not look like a run dir; remove it yourself")
    lock = RunLock(run_dir).acquire()  # never delete a run another trainer is writing
    try:
        shutil.rmtree(run_dir)
    finally:
        lock.release()
