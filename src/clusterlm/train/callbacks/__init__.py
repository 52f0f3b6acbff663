"""The parts of a training run around the step loop, each a `Callback` with its own tests.

    signals.py        SIGINT/SIGTERM → finish the step, checkpoint, stop (a second Ctrl-C: now)
    metrics.py        metrics.jsonl, TensorBoard, progress, MFU, communication figures, the summary
    nonfinite.py      skip non-finite steps; stop with a usable checkpoint after too many
    validation.py     periodic validation (loss, bits/byte, generalisation gap) and early stopping
    checkpointing.py  periodic, final and interrupt checkpoints through the run's CheckpointStore

The trainer calls them in that order at each hook (`base.Callback`).
"""
