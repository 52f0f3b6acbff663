from __future__ import annotations

import subprocess
import sys

import pytest

from clusterlm.cli.main import VERBS, main, verb_parser


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("clusterlm ")


def test_unknown_verb_is_one_line_exit_2(capsys):
    assert main(["nonsense"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


@pytest.mark.parametrize("verb", list(VERBS))
def test_every_verb_has_help(verb):
    parser, _ = verb_parser(verb)
    text = parser.format_help()
    assert f"clusterlm {verb}" in text


def test_console_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "clusterlm", "--version"], capture_output=True, text=True, check=True
    )
    assert "clusterlm" in out.stdout
