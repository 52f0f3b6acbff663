"""Every preset builds on the meta device with the parameter count flops.py and the authors give."""

from __future__ import annotations

import pytest

from clusterlm.model.build import build_model
from clusterlm.config.model import ModelConfig
from clusterlm.model.flops import param_count
from clusterlm.config.presets import preset_names, published_params


@pytest.mark.parametrize("name", preset_names())
def test_preset_builds_on_meta_with_expected_param_count(name):
    cfg = ModelConfig(preset=name)
    if cfg.vocab_size is None:  # tiny shapes take their vocabulary from the dataset
        cfg = cfg.model_copy(update={"vocab_size": 1000})
    model = build_model(cfg, device="meta")
    assert all(p.device.type == "meta" for p in model.parameters())
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == param_count(cfg)
    published = published_params(name)
    if published is not None:
        figure, tolerance = published
        assert abs(n_params - figure) <= tolerance * figure, f"{name}: {n_params:,} vs published {figure:,.0f}"


def test_tied_head_is_one_parameter_after_materialising():
    cfg = ModelConfig(preset="tiny", vocab_size=100)
    model = build_model(cfg, device="meta")
    model.to_empty(device="cpu")
    model.init_weights(0)
    assert model.output.weight is model.tok_embeddings.weight
    assert sum(p.numel() for p in model.parameters()) == param_count(cfg)
