"""The hand-derived backprop of the 2-3-1 network equals torch autograd and torch.optim.SGD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from clusterlm.theory.backprop import (
    Params,
    autograd_gradients,
    backward,
    bce_loss,
    forward,
    seed_output_delta,
    sgd_update,
    sigmoid,
    worked_example,
)


def random_problem(seed: int, batch: int, scale: float, soft_targets: bool):
    rng = np.random.default_rng(seed)
    params = Params(W1=rng.normal(0, scale, (2, 3)), b1=rng.normal(0, scale, 3),
                    W2=rng.normal(0, scale, (3, 1)), b2=rng.normal(0, scale, 1))
    x = rng.normal(0, 2.0, (batch, 2))
    y = rng.uniform(0, 1, (batch, 1)) if soft_targets else rng.integers(0, 2, (batch, 1)).astype(float)
    return params, x, y


def torch_network(params: Params) -> torch.nn.Sequential:
    """The same network built from nn.Linear (weights stored transposed: (out, in))."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 1)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(params.W1.T))
        net[0].bias.copy_(torch.from_numpy(params.b1))
        net[2].weight.copy_(torch.from_numpy(params.W2.T))
        net[2].bias.copy_(torch.from_numpy(params.b2))
    return net


problems = st.builds(random_problem, seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 8),
                     scale=st.sampled_from([0.1, 1.0, 3.0]), soft_targets=st.booleans())


@settings(max_examples=40, deadline=None)
@given(problem=problems)
def test_every_gradient_equals_torch_autograd(problem):
    params, x, y = problem
    grads = backward(params, forward(params, x), y)
    # Reference 1: nn.Linear layers + BCE-with-logits, nothing shared with our code.
    net = torch_network(params)
    F.binary_cross_entropy_with_logits(net(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    assert_close(torch.from_numpy(grads.W1), net[0].weight.grad.T)
    assert_close(torch.from_numpy(grads.b1), net[0].bias.grad)
    assert_close(torch.from_numpy(grads.W2), net[2].weight.grad.T)
    assert_close(torch.from_numpy(grads.b2), net[2].bias.grad)
    # Reference 2: the autograd function the CLI reports against.
    for name, ref in autograd_gradients(params, x, y).items():
        assert_close(torch.from_numpy(getattr(grads, name)), torch.from_numpy(ref))


@settings(max_examples=20, deadline=None)
@given(problem=problems)
def test_deltas_are_per_example_loss_gradients_wrt_preactivations(problem):
    params, x, y = problem
    fwd = forward(params, x)
    grads = backward(params, fwd, y)
    w1 = torch.from_numpy(params.W1).requires_grad_()  # any leaf needing grad makes z1 part of the graph
    z1 = torch.from_numpy(x) @ w1 + torch.from_numpy(params.b1)
    z1.retain_grad()
    z2 = torch.sigmoid(z1) @ torch.from_numpy(params.W2) + torch.from_numpy(params.b2)
    z2.retain_grad()
    # Summed (not mean) loss: ∂L/∂z of row n is then exactly example n's delta.
    F.binary_cross_entropy_with_logits(z2, torch.from_numpy(y), reduction="sum").backward()
    assert_close(torch.from_numpy(grads.delta2), z2.grad)
    assert_close(torch.from_numpy(grads.delta1), z1.grad)
    assert_close(torch.from_numpy(fwd.z1), z1.detach())


@settings(max_examples=20, deadline=None)
@given(problem=problems)
def test_loss_equals_torch_binary_cross_entropy(problem):
    params, x, y = problem
    fwd = forward(params, x)
    # bce_loss works from the logit z2 (finite when σ(z2) rounds to 0 or 1); torch's
    # logit form is the same formula. F.binary_cross_entropy on a2 = σ(z2) loses ~1e-9 of
    # relative precision in log(1 − a2) when a2 is close to 1, so it is checked more loosely.
    z2, target = torch.from_numpy(fwd.z2), torch.from_numpy(y)
    expected = F.binary_cross_entropy_with_logits(z2, target)
    assert bce_loss(fwd, y) == pytest.approx(expected.item(), rel=1e-12, abs=1e-12)
    on_probabilities = F.binary_cross_entropy(torch.from_numpy(fwd.a2), target)
    assert bce_loss(fwd, y) == pytest.approx(on_probabilities.item(), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_update_equals_torch_optim_sgd(seed):
    params, x, y = random_problem(seed, batch=4, scale=1.0, soft_targets=False)
    lr = 0.3
    ours = sgd_update(params, backward(params, forward(params, x), y), lr)
    net = torch_network(params)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr)
    F.binary_cross_entropy_with_logits(net(torch.from_numpy(x)), torch.from_numpy(y)).backward()
    optimizer.step()
    assert_close(torch.from_numpy(ours.W1), net[0].weight.detach().T)
    assert_close(torch.from_numpy(ours.b1), net[0].bias.detach())
    assert_close(torch.from_numpy(ours.W2), net[2].weight.detach().T)
    assert_close(torch.from_numpy(ours.b2), net[2].bias.detach())
    assert not np.allclose(ours.W1, params.W1)  # the step moved the weights


def test_seed_delta_is_the_squared_error_delta_not_the_cross_entropy_one():
    params, x, y = random_problem(7, batch=5, scale=1.0, soft_targets=False)
    fwd = forward(params, x)
    z2 = torch.from_numpy(fwd.z2).requires_grad_()
    (0.5 * (torch.from_numpy(y) - torch.sigmoid(z2)) ** 2).sum().backward()
    seed = seed_output_delta(fwd, y)
    assert_close(torch.from_numpy(seed), -z2.grad)
    correct = backward(params, fwd, y).delta2
    assert np.all(np.sign(seed) == -np.sign(correct))
    assert_close(torch.from_numpy(seed), torch.from_numpy(-correct * fwd.a2 * (1 - fwd.a2)))


def test_sigmoid_and_loss_stay_finite_when_saturated():
    z = np.array([-1000.0, -30.0, 0.0, 30.0, 1000.0])
    assert_close(torch.from_numpy(sigmoid(z)), torch.sigmoid(torch.from_numpy(z)))
    big = Params(W1=np.full((2, 3), 50.0), b1=np.zeros(3), W2=np.full((3, 1), 50.0), b2=np.zeros(1))
    loss = bce_loss(forward(big, np.array([[10.0, 10.0]])), np.array([[0.0]]))
    assert np.isfinite(loss) and loss == pytest.approx(150.0)


def test_worked_example_agrees_with_autograd_and_lowers_the_loss():
    example = worked_example()
    assert example["max_abs_diff_vs_autograd"] < 1e-12
    assert example["loss_after"] < example["loss"]
    assert example["lr"] == 0.5


def test_mismatched_targets_are_refused():
    params, x, _ = random_problem(0, batch=3, scale=1.0, soft_targets=False)
    with pytest.raises(ValueError, match="targets"):
        backward(params, forward(params, x), np.zeros(2))
