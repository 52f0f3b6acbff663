"""Resume policy: which checkpoint (if any) a run continues from, and whether it may.

`auto` continues from the run dir's `latest` checkpoint when there is one; `require` insists on
one; `never` refuses a run dir that already holds checkpoints. A checkpoint is only resumed by
the same model (weight-shaping fields equal) on data with the same tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from clusterlm.checkpoint.layout import STEP_DIR, read_meta
from clusterlm.checkpoint.store import CheckpointStore
from clusterlm.config.model import ModelConfig
from clusterlm.data.loader import Dataset
from clusterlm.errors import CheckpointError, OutputExistsError
from clusterlm.eval.runner import check_tokenizer_matches
from clusterlm.train.setup import describe_mismatch, same_weights_config
from clusterlm.train.state import TrainState

Resume = Literal["auto", "require", "never"]


def find_resume_checkpoint(store: CheckpointStore, mode: Resume, model_cfg: ModelConfig,
                           dataset: Dataset) -> Path | None:
    latest = store.latest()
    if latest is None:
        if mode == "require":
            raise CheckpointError(f"nothing to resume: {store.run_dir} has no checkpoint")
        return None
    if mode == "never":
        raise OutputExistsError(
            f"{store.run_dir} already holds checkpoints (latest {latest.name}); choose another "
            "train.out_dir, delete it, or drop --no-resume to continue that run"
        )
    diffs = same_weights_config(model_cfg, read_meta(latest).model)
    if diffs:
        raise CheckpointError(
            f"{latest} was trained with a different model config ({describe_mismatch(diffs)}); "
            "use the original model config to resume, or another train.out_dir"
        )
    check_tokenizer_matches(latest, dataset)
    return latest


def check_resumed_step(state: TrainState, checkpoint: Path) -> None:
    """The restored counters must belong to the checkpoint they came from (a swapped or garbled
    train state would otherwise resume at another step than its weights)."""
    match = STEP_DIR.match(checkpoint.name)
    step = int(match.group(1)) if match else read_meta(checkpoint).step
    if state.step != step:
        raise CheckpointError(f"{checkpoint}: its train state is at step {state.step}, its name and meta.json "
                              f"say step {step}; the checkpoint is corrupted — resume from an earlier one")
