"""Worked examples of the training algorithm, small enough to follow by hand (see docs/theory.md).

  clusterlm theory backprop [--lr LR] [--json]
      The seed's §4.3 network (2 inputs → 3 sigmoid hidden → 1 sigmoid output) on one example:
      forward pass, binary cross-entropy, deltas, gradients and one gradient-descent update,
      computed from first principles in numpy and checked against torch autograd.

  clusterlm theory classifier [--epochs N] [--lr LR] [--seed S] [--batch-size B] [--json]
      The seed's §5 example: a one-unit sigmoid classifier on x = 1..5, y = 0,0,1,1,1 trained
      with SGD and binary cross-entropy (default 1000 epochs); prints the loss as it falls, the
      final weights, predictions, training accuracy and a note on overfitting.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


MAX_EPOCHS = 100_000  # ~30 s on a 2-core CPU; 10**6 took minutes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="example", metavar="EXAMPLE", required=True)
    backprop = sub.add_parser("backprop", help="backprop by hand on the 2-3-1 network, checked against autograd")
    backprop.add_argument("--lr", type=float, default=None, help="learning rate η of the update (default: 0.5)")
    backprop.add_argument("--json", action="store_true", help="print the numbers as JSON")
    classifier = sub.add_parser("classifier", help="train the one-unit sigmoid classifier of the seed's §5")
    classifier.add_argument("--epochs", type=int, default=1000, help="passes over the 5 points (default: 1000)")
    classifier.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (default: 0.1)")
    classifier.add_argument("--seed", type=int, default=0, help="seed of the initial weights (default: 0)")
    classifier.add_argument("--batch-size", type=int, default=5,
                            help="examples per SGD step, 1..5 (default: 5, the whole set: one step per epoch)")
    classifier.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    if args.lr is not None:
        _check_lr(args.lr)
    if args.example == "backprop":
        from clusterlm.theory.backprop import worked_example

        example = worked_example(args.lr)
        print(json.dumps(backprop_json(example), indent=2) if args.json else format_backprop(example))
        return 0
    return _run_classifier(args)


def _run_classifier(args: argparse.Namespace) -> int:
    from clusterlm.config.limits import SEED_MAX, check_range
    from clusterlm.theory.classifier import OVERFITTING_NOTE, TRAIN_X, train_classifier

    check_range("--epochs", args.epochs, 1, MAX_EPOCHS)
    check_range("--batch-size", args.batch_size, 1, len(TRAIN_X))
    check_range("--seed", args.seed, 0, SEED_MAX)
    result = train_classifier(epochs=args.epochs, lr=args.lr, seed=args.seed, batch_size=args.batch_size)
    if args.json:
        print(json.dumps({
            "epochs": args.epochs, "lr": args.lr, "seed": args.seed, "batch_size": args.batch_size,
            "weight": result.weight, "bias": result.bias, "decision_boundary": result.decision_boundary,
            "loss_by_epoch": result.loss_by_epoch, "final_loss": result.final_loss,
            "x": list(TRAIN_X), "probabilities": result.probabilities, "predictions": result.predictions,
            "targets": result.targets, "accuracy": result.accuracy,
        }, indent=2))
        return 0
    lines = [
        "One-unit sigmoid classifier p(y=1 | x) = σ(w x + b), binary cross-entropy, torch.optim.SGD",
        f"(lr {args.lr:g}, batch {args.batch_size}, seed {args.seed}) on x = 1..5, y = 0,0,1,1,1",
        "",
    ]
    every = max(1, args.epochs // 10)
    for epoch, loss in enumerate(result.loss_by_epoch, start=1):
        if epoch == 1 or epoch % every == 0 or epoch == args.epochs:
            lines.append(f"  epoch {epoch:>{len(str(args.epochs))}}  loss {loss:.6f}")
    lines += [
        f"  final loss {result.final_loss:.6f}",
        "",
        f"weights: w = {result.weight:.4f}, b = {result.bias:.4f}"
        f"  (decision boundary x = −b/w = {result.decision_boundary:.4f})",
        "",
        "   x   p(y=1)  predicted  target",
    ]
    for x, p, pred, target in zip(TRAIN_X, result.probabilities, result.predictions, result.targets):
        lines.append(f"  {x:>2g}   {p:.4f}  {pred:>9}  {target:>6}")
    hits = round(result.accuracy * len(TRAIN_X))
    lines += ["", f"training accuracy: {100 * result.accuracy:.0f} % ({hits}/{len(TRAIN_X)})"]
    if result.accuracy < 1.0:
        lines.append("(not separated yet: train for more epochs or with a larger --lr)")
    lines += ["", OVERFITTING_NOTE]
    print("\n".join(lines))
    return 0


def _check_lr(lr: float) -> None:
    from clusterlm.config.limits import check_range

    check_range("--lr", lr, 0, 1e6, low_open=True)


def _fmt(value: Any) -> str:
    """A vector or matrix as nested lists with 6 decimals; a (1, 1) array or scalar as one number."""
    import numpy as np

    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 1:
        return f"{arr.item():.6f}"
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 1:
        return "[" + ", ".join(f"{v:.6f}" for v in arr) + "]"
    return "[" + ", ".join(_fmt(row) for row in arr) + "]"


def format_backprop(ex: dict[str, Any]) -> str:
    """The worked example as text; docs/theory.md quotes this output (a test keeps them in sync)."""
    p, fwd, g, new = ex["params"], ex["forward"], ex["grads"], ex["updated"]
    y = float(ex["y"].item())
    a2 = float(fwd.a2.item())
    return "\n".join([
        "Backprop by hand: 2 inputs → 3 hidden (sigmoid) → 1 output (sigmoid), binary cross-entropy, float64",
        "",
        f"input x = {_fmt(ex['x'])}, target y = {y:g}, learning rate η = {ex['lr']:g}",
        f"  W1 (2×3) = {_fmt(p.W1)}",
        f"  b1 (3)   = {_fmt(p.b1)}",
        f"  W2 (3×1) = {_fmt(p.W2.T)}ᵀ",
        f"  b2 (1)   = {_fmt(p.b2)}",
        "",
        "forward",
        f"  z1 = x W1 + b1   = {_fmt(fwd.z1)}",
        f"  a1 = σ(z1)       = {_fmt(fwd.a1)}",
        f"  z2 = a1 W2 + b2  = {_fmt(fwd.z2)}",
        f"  a2 = σ(z2)       = {_fmt(fwd.a2)}",
        f"  L = −[y log a2 + (1 − y) log(1 − a2)] = {ex['loss']:.6f}",
        "",
        "backward",
        f"  δ2 = a2 − y              = {_fmt(g.delta2)}",
        f"       (the seed's (y − a2)·σ′(z2) = {_fmt(ex['seed_delta'])}: opposite sign and"
        f" scaled by σ′(z2) = {a2 * (1 - a2):.6f})",
        f"  δ1 = (δ2 W2ᵀ) ⊙ σ′(z1)   = {_fmt(g.delta1)}",
        f"  ∂L/∂W2 = a1ᵀ δ2          = {_fmt(g.W2.T)}ᵀ",
        f"  ∂L/∂b2 = δ2              = {_fmt(g.b2)}",
        f"  ∂L/∂W1 = xᵀ δ1           = {_fmt(g.W1)}",
        f"  ∂L/∂b1 = δ1              = {_fmt(g.b1)}",
        "",
        "update θ ← θ − η ∂L/∂θ",
        f"  W1 = {_fmt(new.W1)}",
        f"  b1 = {_fmt(new.b1)}",
        f"  W2 = {_fmt(new.W2.T)}ᵀ",
        f"  b2 = {_fmt(new.b2)}",
        f"  loss {ex['loss']:.6f} → {ex['loss_after']:.6f} after the step",
        "",
        f"max |numpy − torch autograd| over all gradients = {ex['max_abs_diff_vs_autograd']:.1e}",
    ])


def backprop_json(ex: dict[str, Any]) -> dict[str, Any]:
    fwd, g = ex["forward"], ex["grads"]
    return {
        "x": ex["x"].tolist(), "y": ex["y"].tolist(), "lr": ex["lr"],
        "params": {k: v.tolist() for k, v in ex["params"].as_dict().items()},
        "forward": {k: getattr(fwd, k).tolist() for k in ("z1", "a1", "z2", "a2")},
        "loss": ex["loss"],
        "deltas": {"delta2": g.delta2.tolist(), "delta1": g.delta1.tolist(),
                   "seed_delta2": ex["seed_delta"].tolist()},
        "gradients": {k: v.tolist() for k, v in g.params().as_dict().items()},
        "updated": {k: v.tolist() for k, v in ex["updated"].as_dict().items()},
        "loss_after": ex["loss_after"],
        "max_abs_diff_vs_autograd": ex["max_abs_diff_vs_autograd"],
    }
