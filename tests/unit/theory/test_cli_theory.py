"""`clusterlm theory backprop|classifier`: sane output, exit 0; bad arguments: one line, exit 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clusterlm.cli.main import main
from clusterlm.cli.theory import format_backprop
from clusterlm.theory.backprop import worked_example

DOCS = Path(__file__).resolve().parents[3] / "docs" / "theory.md"


def test_backprop_prints_every_stage_and_agrees_with_autograd(capsys):
    assert main(["theory", "backprop"]) == 0
    out = capsys.readouterr().out
    for label in ("z1 = x W1 + b1", "a2 = σ(z2)", "L = −[y log a2", "δ2 = a2 − y", "δ1 = (δ2 W2ᵀ)",
                  "∂L/∂W1", "∂L/∂W2", "update θ ← θ − η ∂L/∂θ"):
        assert label in out
    diff = float(re.search(r"max \|numpy − torch autograd\| over all gradients = (\S+)", out).group(1))
    assert diff < 1e-12


def test_backprop_json_has_the_numbers_and_the_step_lowers_the_loss(capsys):
    assert main(["theory", "backprop", "--json", "--lr", "0.1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["lr"] == 0.1
    assert len(data["params"]["W1"]) == 2 and len(data["params"]["W1"][0]) == 3
    assert len(data["params"]["W2"]) == 3 and len(data["params"]["W2"][0]) == 1
    assert data["loss_after"] < data["loss"]
    assert data["max_abs_diff_vs_autograd"] < 1e-12
    w1, g1, w1_new = (data[k]["W1"] for k in ("params", "gradients", "updated"))
    assert w1_new[0][0] == pytest.approx(w1[0][0] - 0.1 * g1[0][0])


def test_classifier_default_run_reaches_full_training_accuracy(capsys):
    assert main(["theory", "classifier"]) == 0
    out = capsys.readouterr().out
    assert "training accuracy: 100 % (5/5)" in out
    assert "epoch 1000" in out and "decision boundary" in out
    assert "overfitting" in out and "validation" in out
    losses = [float(v) for v in re.findall(r"epoch +\d+  loss (\S+)", out)]
    assert len(losses) == 11 and losses == sorted(losses, reverse=True)


def test_classifier_json(capsys):
    assert main(["theory", "classifier", "--epochs", "300", "--lr", "0.5", "--seed", "4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["accuracy"] == 1.0 and data["predictions"] == data["targets"] == [0, 0, 1, 1, 1]
    assert len(data["loss_by_epoch"]) == 300 and data["final_loss"] < data["loss_by_epoch"][0]


@pytest.mark.parametrize("argv", [
    ["theory"],
    ["theory", "nonsense"],
    ["theory", "classifier", "--epochs", "0"],
    ["theory", "classifier", "--epochs", "many"],
    ["theory", "classifier", "--lr", "-0.1"],
    ["theory", "classifier", "--lr", "nan"],
    ["theory", "classifier", "--batch-size", "6"],
    ["theory", "classifier", "--seed", "-1"],
    ["theory", "backprop", "--lr", "inf"],
    ["theory", "backprop", "--bogus"],
])
def test_bad_arguments_are_one_line_exit_2(argv, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert captured.out == ""


def test_docs_quote_the_current_worked_example():
    """docs/theory.md shows the numbers `clusterlm theory backprop` prints (all but the float-noise line)."""
    text = DOCS.read_text(encoding="utf-8")
    block = re.search(r"<!-- backprop-output -->\n```text\n(.*?)```", text, re.S)
    assert block, "docs/theory.md lacks the backprop-output block"
    expected = format_backprop(worked_example()).splitlines()
    quoted = block.group(1).rstrip("\n").splitlines()
    assert quoted[:-1] == expected[:-1]
    assert quoted[-1].startswith("max |numpy − torch autograd|")
