"""Model configuration: one typed schema for every architecture this project builds.

The same `ModelConfig` is used to build a model for training and, on the meta
device or purely analytically (`model/flops.py`), to plan a run on a cluster.
A `preset:` key expands to a named shape from `config/presets.py`; any other key
given alongside it overrides the preset's value.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from clusterlm.config import limits as L
from clusterlm.config.base import Section
from clusterlm.config.presets import preset_fields
from clusterlm.errors import ConfigError

Style = Literal["gpt2", "llama", "rnn", "lstm", "gru"]
TRANSFORMER_STYLES = ("gpt2", "llama")
RECURRENT_STYLES = ("rnn", "lstm", "gru")


class ModelConfig(Section):
    """Every size has a range (`config/limits.py`); nan and inf are refused."""

    model_config = ConfigDict(allow_inf_nan=False)

    preset: str | None = None
    style: Style = "gpt2"
    n_layer: int = Field(default=4, ge=1, le=L.MAX_LAYERS)
    n_head: int = Field(default=4, ge=1, le=L.MAX_HEADS)
    # Grouped-query attention: key/value heads shared by n_head // n_kv_head query heads.
    n_kv_head: int | None = Field(default=None, ge=1, le=L.MAX_HEADS)
    d_model: int = Field(default=128, ge=1, le=L.MAX_D_MODEL)
    # Feed-forward width; None derives it (4·d for GPT-2, ≈ 8/3·d rounded up to 64 for SwiGLU).
    d_ff: int | None = Field(default=None, ge=1, le=L.MAX_D_FF)
    # None: taken from the dataset's tokenizer when training starts.
    vocab_size: int | None = Field(default=None, ge=2, le=L.MAX_VOCAB)
    # Context length (learned-position table size for GPT-2, RoPE cache length for Llama).
    max_seq_len: int = Field(default=256, ge=1, le=L.MAX_SEQ_LEN)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    tie_embeddings: bool = True
    # None: True for GPT-2 (linear and LayerNorm biases), False for Llama.
    bias: bool | None = None
    norm_eps: float = Field(default=1e-5, gt=0.0, le=1.0)
    rope_theta: float = Field(default=10000.0, ge=L.MIN_ROPE_THETA, le=L.MAX_ROPE_THETA)
    init_std: float = Field(default=0.02, gt=0.0, le=L.MAX_INIT_STD)  # std of the normal initialisation

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset"):
            merged = dict(preset_fields(data["preset"]))
            merged.update(data)
            return merged
        return data

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.style in TRANSFORMER_STYLES:
            if self.d_model % self.n_head:
                raise ValueError(
                    f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head})"
                )
            if self.kv_heads < 1 or self.n_head % self.kv_heads:
                raise ValueError(
                    f"n_head ({self.n_head}) must be divisible by n_kv_head ({self.kv_heads})"
                )
            if self.style == "llama" and self.head_dim % 2:
                raise ValueError(f"RoPE needs an even head dimension, got {self.head_dim}")
        return self

    # Derived quantities (computed, never stored, so a preset override stays consistent).
    @property
    def is_transformer(self) -> bool:
        return self.style in TRANSFORMER_STYLES

    @property
    def kv_heads(self) -> int:
        return self.n_kv_head if self.n_kv_head is not None else self.n_head

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def ffn_dim(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        if self.style == "llama":
            return _round_up(int(8 * self.d_model / 3), 64)
        return 4 * self.d_model

    @property
    def use_bias(self) -> bool:
        return self.bias if self.bias is not None else self.style == "gpt2"

    def require_vocab(self) -> int:
        if self.vocab_size is None:
            raise ConfigError("model.vocab_size is not set (it comes from the dataset's tokenizer)")
        return self.vocab_size


def _round_up(x: int, multiple: int) -> int:
    return (x + multiple - 1) // multiple * multiple
