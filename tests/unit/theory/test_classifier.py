"""The seed's §5 sigmoid classifier separates its five points and its loss falls."""

from __future__ import annotations

import pytest

from clusterlm.theory.classifier import TRAIN_X, train_classifier


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_training_reaches_full_accuracy_with_falling_loss(seed):
    result = train_classifier(epochs=1000, lr=0.1, seed=seed)
    assert result.accuracy == 1.0
    assert result.predictions == [0, 0, 1, 1, 1]
    # Whole-set batches with lr below 2/(smoothness of the loss): each step lowers the loss.
    losses = result.loss_by_epoch + [result.final_loss]
    assert all(later <= earlier for earlier, later in zip(losses, losses[1:]))
    assert result.final_loss < 0.5 * losses[0]
    assert 2.0 < result.decision_boundary < 3.0
    assert result.weight > 0


def test_stochastic_minibatches_also_separate_the_points():
    result = train_classifier(epochs=200, lr=0.1, seed=3, batch_size=1)
    assert result.accuracy == 1.0
    assert result.final_loss < result.loss_by_epoch[0]
    assert len(result.loss_by_epoch) == 200


def test_same_seed_same_weights_different_seed_different_weights():
    a = train_classifier(epochs=20, seed=5, batch_size=2)
    b = train_classifier(epochs=20, seed=5, batch_size=2)
    c = train_classifier(epochs=20, seed=6, batch_size=2)
    assert (a.weight, a.bias) == (b.weight, b.bias)
    assert (a.weight, a.bias) != (c.weight, c.bias)


def test_too_few_epochs_is_reported_honestly():
    # One tiny step leaves seed 0's random init (which calls every point 1) where it was; the
    # accuracy must reflect the predictions, not be assumed.
    result = train_classifier(epochs=1, lr=1e-6, seed=0)
    assert len(result.probabilities) == len(TRAIN_X)
    assert result.accuracy < 1.0
    expected = sum(p == t for p, t in zip(result.predictions, result.targets)) / len(TRAIN_X)
    assert result.accuracy == expected
    assert result.predictions == [int(p >= 0.5) for p in result.probabilities]
