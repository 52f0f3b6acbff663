"""Train a model from a run config: `clusterlm train [CONFIG.yaml] [section.key=value ...]`.

Writes to train.out_dir: config.yaml, checkpoints/step-XXXXXXX/, latest, metrics.jsonl,
tb/ (TensorBoard) and plots/loss.png. Running the same command again on the same
out_dir resumes from its newest checkpoint (bit-identical to an uninterrupted run
for step-based schedules); --no-resume refuses an out_dir that already has
checkpoints, --resume requires one, --overwrite starts over (deleting the earlier
run's checkpoints and logs). One trainer at a time: a second one on a run dir in use
is refused, naming the holder (train.lock). Ctrl-C or SIGTERM stops after the current
step with a checkpoint.

Started by torchrun (see `clusterlm launch`), every worker runs this same command and
trains with the `parallel:` degrees (DDP / FSDP2 / tensor parallel, docs/distributed.md);
checkpoints are then sharded torch.distributed.checkpoint dirs that load at any world size.

Examples:
  clusterlm train quickstart data.dir=data/stdlib          (a shipped recipe, or any YAML file)
  clusterlm train model.preset=tiny data.dir=data/stdlib train.max_steps=200 train.out_dir=runs/tiny
"""

from __future__ import annotations

import argparse
import json
import sys

from clusterlm.cli.common import add_config_args, load_config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_args(parser)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", dest="resume", action="store_const", const="require", default="auto",
                       help="require a checkpoint in train.out_dir to resume from")
    group.add_argument("--no-resume", dest="resume", action="store_const", const="never",
                       help="refuse to start if train.out_dir already holds checkpoints")
    group.add_argument("--overwrite", action="store_true",
                       help="start over: delete the checkpoints and logs of an earlier run in train.out_dir")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")


def run(args: argparse.Namespace) -> int:
    from clusterlm.api.train import train

    result, is_main = train(load_config_from_args(args), resume=args.resume, progress=not args.quiet,
                            overwrite=args.overwrite)
    interrupted = result.stop_reason == "interrupted"
    if not is_main:
        return 130 if interrupted else 0  # rank 0 reports for the job
    summary = {"run_dir": str(result.run_dir), "step": result.step, "checkpoint": str(result.checkpoint),
               **result.summary}
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    if interrupted:
        sys.stderr.write(f"interrupted at step {result.step}; run the same command again to resume\n")
        return 130
    return 0


def format_summary(s: dict) -> str:
    def f(value: object, fmt: str) -> str:
        return format(value, fmt) if isinstance(value, (int, float)) else "n/a"

    lines = [
        f"run dir      {s['run_dir']}  (stopped: {s['stop_reason']} at step {s['step']})",
        f"model        {f(s['params'], ',')} parameters, {s['precision']} on {s['device']}",
        f"tokens seen  {f(s['tokens_seen'], ',')} in {f(s['elapsed_s'], '.0f')} s",
        f"throughput   {f(s['tokens_per_s'], ',.0f')} tok/s, MFU {f(s['mfu'], '.1%')} "
        f"(peak {f((s['peak_flops'] or 0) / 1e9, '.0f')} GFLOP/s, {s['peak_flops_source']})",
        (f"val loss     {f(s['val_loss'], '.4f')} (train {f(s['train_eval_loss'], '.4f')}, "
         f"gap {f(s['generalization_gap'], '+.4f')}; best {f(s['best_val_loss'], '.4f')} at step {s['best_val_step']})"
         if s.get("val_loss") is not None else "val loss     not measured yet (no validation in this run)"),
        f"checkpoint   {s['checkpoint']}",
    ]
    if s.get("comm_fraction") is not None:
        lines.append(f"parallel     {s['parallel']} on {s['world_size']} processes: "
                     f"{f(s['comm_bytes_per_step'] / 1e6, ',.2f')} MB/step communicated, "
                     f"{f(s['comm_fraction'], '.0%')} of step time in collectives")
    if s.get("nonfinite_steps"):
        lines.append(f"skipped      {s['nonfinite_steps']} non-finite steps")
    return "\n".join(lines)
