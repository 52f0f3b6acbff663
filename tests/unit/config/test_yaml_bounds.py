"""Config loading is bounded: alias bombs, deep nesting, huge or non-UTF-8 files fail fast, in one line."""

from __future__ import annotations

import os

import pytest

from clusterlm.config.base import MAX_CONFIG_BYTES, MAX_YAML_NODES, apply_overrides, load_yaml
from clusterlm.config.run import load_run_config
from clusterlm.errors import ConfigError

pytestmark = pytest.mark.timeout(20)


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """The classic "billion laughs": each level lists the previous one `width` times."""
    lines = ["a0: &a0 [" + ",".join(["lol"] * width) + "]"]
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_alias_bomb_fails_fast_with_one_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())  # 9**9 = 387 million "lol"s once expanded
    assert path.stat().st_size < 500
    with pytest.raises(ConfigError, match="aliases expand to more than") as info:
        load_yaml(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_recursive_alias_is_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("data: &d {inputs: [*d]}\n")
    with pytest.raises(ConfigError, match="recursive alias"):
        load_yaml(path)


def test_modest_aliases_still_work(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("base: &b {lr: 0.001, warmup: 10}\ntrain: {<<: *b, lr: 0.01}\nother: *b\n")
    assert load_yaml(path) == {"base": {"lr": 0.001, "warmup": 10}, "train": {"lr": 0.01, "warmup": 10},
                               "other": {"lr": 0.001, "warmup": 10}}


def test_expansion_budget_is_exact():
    ok = "[" + ", ".join(["1"] * (MAX_YAML_NODES - 1)) + "]"  # one sequence node + its items
    assert len(apply_overrides({}, [f"x={ok}"])["x"]) == MAX_YAML_NODES - 1
    with pytest.raises(ConfigError, match="more than"):
        apply_overrides({}, [f"x=[{ok}]"])


def test_alias_bomb_in_an_override_is_refused():
    bomb = "[" + ", ".join(f"&a{i} [" + ", ".join([f"*a{i - 1}" if i else "1"] * 10) + "]" for i in range(6)) + "]"
    with pytest.raises(ConfigError, match="override x: YAML aliases expand"):
        apply_overrides({}, [f"x={bomb}"])


@pytest.mark.parametrize("text, message", [
    ("x: " + "[" * 100_000 + "]" * 100_000, "nested deeper than"),
    ("".join(" " * i + f"k{i}:\n" for i in range(1300)) + " " * 1300 + "v: 1\n", "nested too deeply"),
    ("".join(f"k{i}: {i}\n" for i in range(MAX_YAML_NODES)), f"more than {MAX_YAML_NODES:,} YAML values"),
])
def test_pathological_documents_fail_fast(tmp_path, text, message):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_yaml(path)


def test_bad_utf8_is_one_config_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("train:\n  out_dir: runs/caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"not valid UTF-8 \(byte 0xe9 at offset 26\)"):
        load_run_config(path)


def test_oversized_and_special_files_are_refused(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_bytes(b"# " + b"x" * MAX_CONFIG_BYTES + b"\n")
    with pytest.raises(ConfigError, match="larger than 1 MB"):
        load_yaml(big)
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_yaml(fifo)  # never opened: a FIFO would block
