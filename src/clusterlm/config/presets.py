"""Named model shapes.

Each preset is plain data: the config fields plus, for published models, the
parameter count the authors report (`published_params`), which
`tests/unit/model/test_presets.py` checks against a meta-device build.
Large presets exist for planning (`clusterlm plan`) and parameter counting; only
the small ones are meant to be trained on a laptop.
"""

from __future__ import annotations

import difflib
from typing import Any

from clusterlm.errors import ConfigError

# fmt: off
PRESETS: dict[str, dict[str, Any]] = {
    # --- tiny shapes for tests and CPU runs -------------------------------------------------
    "tiny":       dict(style="gpt2",  n_layer=2, n_head=2, d_model=64,  max_seq_len=64),
    "tiny-llama": dict(style="llama", n_layer=2, n_head=4, n_kv_head=2, d_model=64, max_seq_len=64),
    "tiny-lstm":  dict(style="lstm",  n_layer=2, d_model=64, max_seq_len=64),
    "tiny-gru":   dict(style="gru",   n_layer=2, d_model=64, max_seq_len=64),
    "tiny-rnn":   dict(style="rnn",   n_layer=2, d_model=64, max_seq_len=64),
    # Recurrent baselines at width 256 (configs/cpu-60min.yaml's width), to compare in `clusterlm eval`.
    "lstm-small": dict(style="lstm",  n_layer=2, d_model=256, max_seq_len=128),
    "gru-small":  dict(style="gru",   n_layer=2, d_model=256, max_seq_len=128),
    # ~14M parameters with an 8k vocabulary: the CPU MFU benchmark shape.
    "gpt2-14M":   dict(style="gpt2",  n_layer=6, n_head=6, d_model=384, max_seq_len=256, vocab_size=8192),
    # --- GPT-2 (Radford et al. 2019; counts as in the released checkpoints) -----------------
    "gpt2-124M":  dict(style="gpt2", n_layer=12, n_head=12, d_model=768,  max_seq_len=1024, vocab_size=50257,
                       published_params=124_439_808),
    "gpt2-350M":  dict(style="gpt2", n_layer=24, n_head=16, d_model=1024, max_seq_len=1024, vocab_size=50257,
                       published_params=354_823_168),
    "gpt2-774M":  dict(style="gpt2", n_layer=36, n_head=20, d_model=1280, max_seq_len=1024, vocab_size=50257,
                       published_params=774_030_080),
    "gpt2-1.5B":  dict(style="gpt2", n_layer=48, n_head=25, d_model=1600, max_seq_len=1024, vocab_size=50257,
                       published_params=1_557_611_200),
    # --- Llama (Touvron et al. 2023; Llama 3 model cards) -----------------------------------
    "llama-1B":   dict(style="llama", n_layer=16, n_head=32, n_kv_head=8, d_model=2048, d_ff=8192,
                       vocab_size=128256, max_seq_len=8192, rope_theta=500000.0, tie_embeddings=True,
                       published_params=1_235_814_400),   # Llama 3.2 1B
    "llama2-7B":  dict(style="llama", n_layer=32, n_head=32, d_model=4096, d_ff=11008,
                       vocab_size=32000, max_seq_len=4096, tie_embeddings=False,
                       published_params=6_738_415_616),
    "llama2-13B": dict(style="llama", n_layer=40, n_head=40, d_model=5120, d_ff=13824,
                       vocab_size=32000, max_seq_len=4096, tie_embeddings=False,
                       published_params=13_015_864_320),
    "llama2-70B": dict(style="llama", n_layer=80, n_head=64, n_kv_head=8, d_model=8192, d_ff=28672,
                       vocab_size=32000, max_seq_len=4096, tie_embeddings=False,
                       published_params=68_976_648_192),
    "llama3-8B":  dict(style="llama", n_layer=32, n_head=32, n_kv_head=8, d_model=4096, d_ff=14336,
                       vocab_size=128256, max_seq_len=8192, rope_theta=500000.0, tie_embeddings=False,
                       published_params=8_030_261_248),
    "llama3-70B": dict(style="llama", n_layer=80, n_head=64, n_kv_head=8, d_model=8192, d_ff=28672,
                       vocab_size=128256, max_seq_len=8192, rope_theta=500000.0, tie_embeddings=False,
                       published_params=70_553_706_496),
    "llama3-405B": dict(style="llama", n_layer=126, n_head=128, n_kv_head=8, d_model=16384, d_ff=53248,
                        vocab_size=128256, max_seq_len=8192, rope_theta=500000.0, tie_embeddings=False,
                        published_params=405_853_388_800),
    # --- Megatron-style GPT (Narayanan et al. 2021; Korthikanti et al. 2022), for planning ---
    # The papers round their sizes; published_params_approx is checked to 2 %.
    "gpt3-175B":     dict(style="gpt2", n_layer=96,  n_head=96,  d_model=12288, max_seq_len=2048,
                          vocab_size=51200, published_params_approx=175e9),
    "megatron-22B":  dict(style="gpt2", n_layer=48,  n_head=64,  d_model=6144,  max_seq_len=2048,
                          vocab_size=51200, published_params_approx=22e9),
    "megatron-530B": dict(style="gpt2", n_layer=105, n_head=128, d_model=20480, max_seq_len=2048,
                          vocab_size=51200, published_params_approx=530e9),
    "megatron-1T":   dict(style="gpt2", n_layer=128, n_head=160, d_model=25600, max_seq_len=2048,
                          vocab_size=51200, published_params_approx=1008e9),
}
# fmt: on

_META_KEYS = ("published_params", "published_params_approx")


def preset_names() -> list[str]:
    return list(PRESETS)


def preset_fields(name: str) -> dict[str, Any]:
    """Config fields of a preset (without the published-figure metadata)."""
    if name not in PRESETS:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(PRESETS)}"
        raise ConfigError(f"unknown model preset '{name}'{hint}")
    return {k: v for k, v in PRESETS[name].items() if k not in _META_KEYS} | {"preset": name}


def published_params(name: str) -> tuple[float, float] | None:
    """(published parameter count, relative tolerance) for a preset, if the authors give one."""
    entry = PRESETS[name]
    if "published_params" in entry:
        return float(entry["published_params"]), 0.0
    if "published_params_approx" in entry:
        return float(entry["published_params_approx"]), 0.02
    return None
