"""Backpropagation by hand: the seed's §4.3 network (2 inputs → 3 sigmoid hidden → 1 sigmoid output).

Everything is plain numpy in float64, written the way it is derived in docs/theory.md,
so each line can be checked against the maths and (in the tests) against torch autograd.

Conventions (row vectors, so a batch is a stack of rows):
    x   (N, 2)   inputs                     y   (N, 1)   targets in {0, 1} (or [0, 1])
    W1  (2, 3)   input → hidden weights      b1  (3,)     hidden biases
    W2  (3, 1)   hidden → output weights     b2  (1,)     output bias
    z1 = x W1 + b1,   a1 = σ(z1)            (N, 3)
    z2 = a1 W2 + b2,  a2 = σ(z2)            (N, 1)
    L  = mean over the batch of  −[y log a2 + (1 − y) log(1 − a2)]

The two weight matrices are distinct: the seed reuses the name W2 for both layers,
which makes its update formulas ambiguous (see docs/theory.md).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

Array = np.ndarray


@dataclass(frozen=True)
class Params:
    """The network's four parameter arrays (float64)."""

    W1: Array  # (2, 3)
    b1: Array  # (3,)
    W2: Array  # (3, 1)
    b2: Array  # (1,)

    def as_dict(self) -> dict[str, Array]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Forward:
    """Everything the backward pass needs from the forward pass."""

    x: Array   # (N, 2)
    z1: Array  # (N, 3) hidden pre-activations
    a1: Array  # (N, 3) hidden activations σ(z1)
    z2: Array  # (N, 1) output pre-activation (logit)
    a2: Array  # (N, 1) output probability σ(z2)


@dataclass(frozen=True)
class Gradients:
    """Deltas (∂L_n/∂z per example) and the parameter gradients of the mean loss."""

    delta2: Array  # (N, 1) output delta  a2 − y
    delta1: Array  # (N, 3) hidden delta (δ2 W2ᵀ) ⊙ σ′(z1)
    W1: Array      # (2, 3)
    b1: Array      # (3,)
    W2: Array      # (3, 1)
    b2: Array      # (1,)

    def params(self) -> Params:
        return Params(W1=self.W1, b1=self.b1, W2=self.W2, b2=self.b2)


def sigmoid(z: Array) -> Array:
    """σ(z) = 1 / (1 + e^−z), evaluated without overflow for large |z|."""
    # e^−|z| never overflows; pick the algebraically equal form per sign.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_prime(z: Array) -> Array:
    """σ′(z) = σ(z)(1 − σ(z))."""
    s = sigmoid(z)
    return s * (1.0 - s)


def forward(params: Params, x: Array) -> Forward:
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))  # (N, 2)
    z1 = x @ params.W1 + params.b1  # (N, 2) @ (2, 3) → (N, 3)
    a1 = sigmoid(z1)
    z2 = a1 @ params.W2 + params.b2  # (N, 3) @ (3, 1) → (N, 1)
    a2 = sigmoid(z2)
    return Forward(x=x, z1=z1, a1=a1, z2=z2, a2=a2)


def bce_loss(fwd: Forward, y: Array) -> float:
    """Mean binary cross-entropy −[y log a + (1 − y) log(1 − a)], a = σ(z2).

    Computed from the logit z2 with log σ(z) = −log(1 + e^−z) and log(1 − σ(z)) = −log(1 + e^z),
    which is the same number but stays finite when a2 rounds to exactly 0 or 1.
    """
    y = _targets(y, fwd)
    log_a = -np.logaddexp(0.0, -fwd.z2)
    log_one_minus_a = -np.logaddexp(0.0, fwd.z2)
    return float(np.mean(-(y * log_a + (1.0 - y) * log_one_minus_a)))


def backward(params: Params, fwd: Forward, y: Array) -> Gradients:
    """Gradients of the mean BCE loss, by the chain rule, layer by layer from the output back."""
    y = _targets(y, fwd)
    n = fwd.x.shape[0]
    # Output delta δ2 = ∂L_n/∂z2 = ∂L_n/∂a2 · σ′(z2) = (a2 − y)/(a2(1 − a2)) · a2(1 − a2) = a2 − y.
    # The σ′ cancels: that is why sigmoid and cross-entropy are paired.
    delta2 = fwd.a2 - y  # (N, 1)
    # Hidden delta δ1 = ∂L_n/∂z1: send δ2 back through W2 (the weights it came through), then through σ′.
    delta1 = (delta2 @ params.W2.T) * sigmoid_prime(fwd.z1)  # (N, 1) @ (1, 3) ⊙ (N, 3) → (N, 3)
    # Weight gradient = (input of the layer)ᵀ · (delta of the layer), averaged over the batch
    # because L is the batch mean; bias gradient = mean delta (its input is the constant 1).
    return Gradients(
        delta2=delta2,
        delta1=delta1,
        W2=fwd.a1.T @ delta2 / n,  # (3, N) @ (N, 1) → (3, 1)
        b2=delta2.mean(axis=0),    # (1,)
        W1=fwd.x.T @ delta1 / n,   # (2, N) @ (N, 3) → (2, 3)
        b1=delta1.mean(axis=0),    # (3,)
    )


def sgd_update(params: Params, grads: Gradients, lr: float) -> Params:
    """One step of gradient descent: θ ← θ − η ∂L/∂θ for every parameter."""
    new = {name: value - lr * getattr(grads, name) for name, value in params.as_dict().items()}
    return replace(params, **new)


def seed_output_delta(fwd: Forward, y: Array) -> Array:
    """The seed's δ3 = (y − a3)·f′(z3), kept only to show in the worked example how it differs.

    It is −∂/∂z of the squared error ½(y − a)², not of the cross-entropy, so with cross-entropy it
    is wrong by the factor −σ′(z) (see docs/theory.md).
    """
    y = _targets(y, fwd)
    return (y - fwd.a2) * sigmoid_prime(fwd.z2)


def autograd_gradients(params: Params, x: Array, y: Array) -> dict[str, Array]:
    """The same loss differentiated by torch autograd in float64 (the reference the tests use).

    Built from torch's own sigmoid and binary_cross_entropy, not from the formulas above.
    """
    # torch only for the reference: the worked example itself is numpy (and imports fast).
    import torch
    import torch.nn.functional as F

    leaves = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True)
              for name, value in params.as_dict().items()}
    xt = torch.as_tensor(np.atleast_2d(x), dtype=torch.float64)
    yt = torch.as_tensor(np.asarray(y, dtype=np.float64).reshape(-1, 1))
    a1 = torch.sigmoid(xt @ leaves["W1"] + leaves["b1"])
    a2 = torch.sigmoid(a1 @ leaves["W2"] + leaves["b2"])
    F.binary_cross_entropy(a2, yt).backward()
    return {name: leaf.grad.numpy() for name, leaf in leaves.items()}


def worked_example_inputs() -> tuple[Params, Array, Array, float]:
    """The fixed numbers `clusterlm theory backprop` works through: (params, x, y, learning rate).

    Our own choice of small, mixed-sign values (one example, target 1), so every step is easy to
    follow by hand.
    """
    params = Params(
        W1=np.array([[0.2, -0.4, 0.1],
                     [0.3, 0.1, -0.5]]),
        b1=np.array([0.1, -0.1, 0.2]),
        W2=np.array([[0.5], [-0.3], [0.8]]),
        b2=np.array([-0.2]),
    )
    x = np.array([[0.5, 1.0]])
    y = np.array([[1.0]])
    return params, x, y, 0.5


def worked_example(lr: float | None = None) -> dict[str, Any]:
    """Run the worked example end to end and return every intermediate number (numpy arrays)."""
    params, x, y, default_lr = worked_example_inputs()
    lr = default_lr if lr is None else lr
    fwd = forward(params, x)
    loss = bce_loss(fwd, y)
    grads = backward(params, fwd, y)
    updated = sgd_update(params, grads, lr)
    reference = autograd_gradients(params, x, y)
    max_abs_diff = max(float(np.max(np.abs(getattr(grads, name) - reference[name]))) for name in reference)
    return {
        "x": x, "y": y, "lr": lr, "params": params, "forward": fwd, "loss": loss, "grads": grads,
        "seed_delta": seed_output_delta(fwd, y),
        "updated": updated, "loss_after": bce_loss(forward(updated, x), y),
        "max_abs_diff_vs_autograd": max_abs_diff,
    }


def _targets(y: Array, fwd: Forward) -> Array:
    y = np.asarray(y, dtype=np.float64).reshape(-1, 1)
    if y.shape != fwd.a2.shape:
        raise ValueError(f"y has {y.shape[0]} targets for {fwd.a2.shape[0]} inputs")
    return y
