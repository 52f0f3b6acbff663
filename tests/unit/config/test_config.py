from __future__ import annotations

import pytest

from clusterlm.config.base import apply_overrides, parse_override
from clusterlm.config.run import RunConfig, load_run_config
from clusterlm.errors import ConfigError


def test_dotted_override_sets_typed_value():
    cfg = load_run_config(None, ["data.vocab_size=4096", "train.lr=3e-4", "model.preset=tiny"])
    assert cfg.data.vocab_size == 4096
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.model.n_layer == 2 and cfg.model.preset == "tiny"


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  preset: tiny\n  n_layer: 3\ntrain:\n  max_steps: 7\n  warmup_steps: 2\n")
    cfg = load_run_config(path, ["train.max_steps=9"])
    assert cfg.model.n_layer == 3  # explicit key beats the preset
    assert cfg.train.max_steps == 9


def test_unknown_key_is_named_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'data.vocab_sise'.*vocab_size"):
        load_run_config(None, ["data.vocab_sise=8192"])


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match=r"config key 'train.max_steps'.*'many'"):
        load_run_config(None, ["train.max_steps=many"])


def test_out_of_range_value_rejected():
    with pytest.raises(ConfigError, match="data.vocab_size"):
        load_run_config(None, ["data.vocab_size=10"])


def test_model_constraint_message_says_what_to_change():
    with pytest.raises(ConfigError, match="divisible by n_head"):
        load_run_config(None, ["model.d_model=100", "model.n_head=3"])


def test_unknown_preset_suggests_close_name():
    with pytest.raises(ConfigError, match="did you mean 'gpt2-124M'"):
        load_run_config(None, ["model.preset=gpt2-124m"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_run_config(tmp_path / "nope.yaml")


def test_malformed_override():
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("=3")


def test_override_into_scalar_is_error():
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"a": 1}, ["a.b=2"])


def test_defaults_validate():
    assert isinstance(RunConfig(), RunConfig)


def test_the_trainers_plan_recomputes_whole_blocks_or_nothing():
    from clusterlm.config.model import ModelConfig
    from clusterlm.config.parallel import ParallelPlan
    from clusterlm.errors import DistributedError

    model = ModelConfig(preset="tiny")
    for mode in ("none", "full"):
        assert ParallelPlan(recompute=mode).check(model, 32).recompute == mode
    with pytest.raises(DistributedError, match=r"recompute must be none or full .*'selective'"):
        ParallelPlan(recompute="selective").check(model, 32)  # the planner's mode: nothing would recompute
