"""The seed's §5 example: a one-unit sigmoid classifier trained with SGD and binary cross-entropy.

Data: x = [1, 2, 3, 4, 5], y = [0, 0, 1, 1, 1]. The model is p(y=1 | x) = σ(w x + b) — logistic
regression, i.e. the output unit of the §4.3 network with one input and no hidden layer.
Training is torch.optim.SGD on the mean BCE for a number of epochs (1000 in the seed); by default
the batch is the whole 5-point set, so one epoch is one step and the loss falls monotonically.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

TRAIN_X = (1.0, 2.0, 3.0, 4.0, 5.0)
TRAIN_Y = (0.0, 0.0, 1.0, 1.0, 1.0)


@dataclass
class ClassifierResult:
    weight: float
    bias: float
    loss_by_epoch: list[float]           # per epoch, mean of its batch losses (each taken before its step)
    final_loss: float                    # mean training loss after the last step
    probabilities: list[float]           # σ(w x + b) per training point after training
    predictions: list[int]               # probability ≥ 0.5
    targets: list[int] = field(default_factory=lambda: [int(v) for v in TRAIN_Y])

    @property
    def accuracy(self) -> float:
        hits = sum(p == t for p, t in zip(self.predictions, self.targets))
        return hits / len(self.targets)

    @property
    def decision_boundary(self) -> float:
        """The x where σ(w x + b) = 0.5, i.e. w x + b = 0."""
        return -self.bias / self.weight if self.weight != 0 else float("nan")


def train_classifier(epochs: int = 1000, lr: float = 0.1, seed: int = 0,
                     batch_size: int = len(TRAIN_X)) -> ClassifierResult:
    """Train σ(w x + b) on the seed's five points; deterministic for a given seed."""
    # Five-element tensors: extra intra-op threads only add synchronisation (and stall badly when
    # the cores are busy), so train on one thread and give the caller its setting back.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(epochs, lr, seed, batch_size)
    finally:
        torch.set_num_threads(threads)


def _train(epochs: int, lr: float, seed: int, batch_size: int) -> ClassifierResult:
    generator = torch.Generator().manual_seed(seed)
    x = torch.tensor(TRAIN_X).unsqueeze(1)  # (5, 1)
    y = torch.tensor(TRAIN_Y).unsqueeze(1)  # (5, 1)
    # nn.Linear(1, 1)'s default init: w, b ~ U(−1, 1) for one input; drawn from our own generator.
    weight = torch.empty(1, 1).uniform_(-1.0, 1.0, generator=generator).requires_grad_()
    bias = torch.empty(1).uniform_(-1.0, 1.0, generator=generator).requires_grad_()
    optimizer = torch.optim.SGD([weight, bias], lr=lr)

    losses = []
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator) if batch_size < len(x) else torch.arange(len(x))
        batch_losses = []
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            # BCE on the logit = BCE on σ(logit), computed without log(0) when σ saturates.
            loss = F.binary_cross_entropy_with_logits(F.linear(x[idx], weight, bias), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            batch_losses.append(loss.item() * len(idx))
        losses.append(sum(batch_losses) / len(x))

    with torch.no_grad():
        logits = F.linear(x, weight, bias)
        final_loss = float(F.binary_cross_entropy_with_logits(logits, y))
        probabilities = torch.sigmoid(logits).squeeze(1)
    return ClassifierResult(
        weight=weight.item(), bias=bias.item(), loss_by_epoch=losses, final_loss=final_loss,
        probabilities=[float(p) for p in probabilities],
        predictions=[int(p >= 0.5) for p in probabilities],
    )


OVERFITTING_NOTE = """\
Note on overfitting: 100 % training accuracy on five points says nothing about generalisation.
Any boundary between x = 2 and x = 3 fits them perfectly, and no point the model has not seen
was ever scored. On separable data like this, unregularised logistic regression also keeps
growing |w| for as long as it trains (the loss only reaches 0 as |w| → ∞), becoming ever more
confident — overfitting in its plainest form. Remedies: more data; regularisation (weight
decay / L2, early stopping); and a held-out validation split to measure the gap between
training and validation loss — which is what `clusterlm train` reports (val loss, gap,
early stopping on patience)."""
