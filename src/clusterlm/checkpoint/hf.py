"""Hugging Face `transformers` interchange: the HF dir format, export to it, `to_transformers`.

An HF dir is `config.json` + `model.safetensors` (what `from_pretrained` loads offline):
GPT-2 style ↔ `GPT2LMHeadModel`, Llama style ↔ `LlamaForCausalLM`. Both directions are
pure tensor renaming over safetensors, so neither needs `transformers` installed; the
parity tests load our exports with `transformers` itself and compare logits.

Layout differences handled here:
- GPT-2 keeps its projections in `Conv1D` modules, whose weights are stored (in, out) — the
  transpose of `nn.Linear` — and fuses q, k, v into one `c_attn` matrix.
- Llama needs no permutation: our RoPE uses the same half-split pairing as HF Llama.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors_bytes
from tokenizers import Tokenizer
from torch import nn

from clusterlm.checkpoint.formats import ModelSource
from clusterlm.checkpoint.layout import TOKENIZER_FILE, WEIGHTS_FILE
from clusterlm.checkpoint.state import full_model_state, load_full_state
from clusterlm.config.base import validate
from clusterlm.config.model import ModelConfig
from clusterlm.errors import CheckpointError, ConfigError, UsageError
from clusterlm.fsio import atomic_write_bytes, atomic_write_json

INDEX_FILE = "model.safetensors.index.json"
# Activations that equal our fused tanh-approximate GELU.
_TANH_GELU = ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")


# --- configs -------------------------------------------------------------------------------------

def hf_config(cfg: ModelConfig, eos_id: int | None = None, bos_id: int | None = None) -> dict[str, Any]:
    """The `config.json` of the HF model equivalent to `cfg` (UsageError if it has none)."""
    V = cfg.require_vocab()
    tokens = {"bos_token_id": bos_id if bos_id is not None else eos_id, "eos_token_id": eos_id}
    if cfg.style == "gpt2":
        if not cfg.use_bias:
            raise UsageError("GPT2LMHeadModel always has biases; a gpt2-style model with bias=false has no HF form")
        if cfg.kv_heads != cfg.n_head:
            raise UsageError("GPT2LMHeadModel has no grouped-query attention (n_kv_head must equal n_head)")
        return {
            "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "vocab_size": V, "n_positions": cfg.max_seq_len, "n_embd": cfg.d_model,
            "n_layer": cfg.n_layer, "n_head": cfg.n_head, "n_inner": cfg.ffn_dim,
            "activation_function": "gelu_new", "layer_norm_epsilon": cfg.norm_eps,
            "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout, "attn_pdrop": cfg.dropout,
            "initializer_range": cfg.init_std, "tie_word_embeddings": cfg.tie_embeddings,
            "scale_attn_weights": True, "torch_dtype": "float32", **tokens,
        }
    if cfg.style == "llama":
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "vocab_size": V, "hidden_size": cfg.d_model, "intermediate_size": cfg.ffn_dim,
            "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
            "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.head_dim,
            "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.norm_eps,
            # transformers ≥ 5 reads rope_parameters, 4.x reads rope_theta.
            "rope_theta": cfg.rope_theta, "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "hidden_act": "silu", "attention_bias": cfg.use_bias, "mlp_bias": cfg.use_bias,
            "attention_dropout": cfg.dropout, "initializer_range": cfg.init_std,
            "tie_word_embeddings": cfg.tie_embeddings, "torch_dtype": "float32", **tokens,
        }
    raise UsageError(f"HF export supports the gpt2 and llama styles, not {cfg.style}")


def config_from_hf(hf: dict[str, Any], where: Path) -> ModelConfig:
    """Our `ModelConfig` for an HF `config.json` (CheckpointError for what we cannot represent)."""
    kind = hf.get("model_type")

    def need(key: str) -> Any:
        if key not in hf:
            raise CheckpointError(f"{where}: config.json lacks '{key}'")
        return hf[key]

    if kind == "gpt2":
        act = hf.get("activation_function", "gelu_new")
        if act not in _TANH_GELU:
            raise CheckpointError(f"{where}: activation_function '{act}' is not supported (tanh GELU only)")
        if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("reorder_and_upcast_attn") \
                or hf.get("scale_attn_weights") is False or hf.get("add_cross_attention"):
            raise CheckpointError(f"{where}: GPT-2 attention variants are not supported")
        fields = dict(style="gpt2", n_layer=need("n_layer"), n_head=need("n_head"), d_model=need("n_embd"),
                      d_ff=hf.get("n_inner") or 4 * need("n_embd"), vocab_size=need("vocab_size"),
                      max_seq_len=need("n_positions"), norm_eps=hf.get("layer_norm_epsilon", 1e-5),
                      dropout=hf.get("resid_pdrop", 0.0), bias=True,
                      tie_embeddings=hf.get("tie_word_embeddings", True))
    elif kind == "llama":
        if hf.get("hidden_act", "silu") != "silu":
            raise CheckpointError(f"{where}: hidden_act '{hf['hidden_act']}' is not supported (silu only)")
        rope = hf.get("rope_parameters") or {}
        rope_type = rope.get("rope_type", "default")
        if rope_type != "default" or hf.get("rope_scaling"):
            raise CheckpointError(f"{where}: RoPE scaling ('{rope_type}') is not supported")
        d, heads = need("hidden_size"), need("num_attention_heads")
        if hf.get("head_dim") not in (None, d // heads):
            raise CheckpointError(f"{where}: head_dim {hf['head_dim']} ≠ hidden_size / heads is not supported")
        attention_bias, mlp_bias = bool(hf.get("attention_bias", False)), bool(hf.get("mlp_bias", False))
        if attention_bias != mlp_bias:
            raise CheckpointError(f"{where}: attention_bias ≠ mlp_bias is not supported")
        fields = dict(style="llama", n_layer=need("num_hidden_layers"), n_head=heads,
                      n_kv_head=hf.get("num_key_value_heads") or heads, d_model=d,
                      d_ff=need("intermediate_size"), vocab_size=need("vocab_size"),
                      max_seq_len=need("max_position_embeddings"), norm_eps=hf.get("rms_norm_eps", 1e-6),
                      rope_theta=rope.get("rope_theta", hf.get("rope_theta", 10000.0)),
                      dropout=hf.get("attention_dropout", 0.0), bias=attention_bias,
                      tie_embeddings=hf.get("tie_word_embeddings", False))
    else:
        raise CheckpointError(f"{where}: model_type '{kind}' is not supported (gpt2 or llama)")
    try:
        return validate(ModelConfig, fields, prefix="model")
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from None


# --- weight names --------------------------------------------------------------------------------

Transform = Callable[[torch.Tensor], torch.Tensor]


def _t(w: torch.Tensor) -> torch.Tensor:
    return w.t().contiguous()


def _names(cfg: ModelConfig) -> list[tuple[str, str, bool]]:
    """(our name, HF name, transpose?) for every tensor that maps one to one."""
    pairs: list[tuple[str, str, bool]] = []
    if cfg.style == "gpt2":
        pairs += [("tok_embeddings.weight", "transformer.wte.weight", False),
                  ("pos_embeddings.weight", "transformer.wpe.weight", False),
                  ("norm.weight", "transformer.ln_f.weight", False),
                  ("norm.bias", "transformer.ln_f.bias", False)]
        for i in range(cfg.n_layer):
            ours, theirs = f"layers.{i}.", f"transformer.h.{i}."
            for a, b in (("attention_norm", "ln_1"), ("ffn_norm", "ln_2")):
                pairs += [(f"{ours}{a}.weight", f"{theirs}{b}.weight", False),
                          (f"{ours}{a}.bias", f"{theirs}{b}.bias", False)]
            for a, b in (("attention.wo", "attn.c_proj"), ("feed_forward.w1", "mlp.c_fc"),
                         ("feed_forward.w2", "mlp.c_proj")):
                pairs += [(f"{ours}{a}.weight", f"{theirs}{b}.weight", True),  # Conv1D stores (in, out)
                          (f"{ours}{a}.bias", f"{theirs}{b}.bias", False)]
    else:
        pairs += [("tok_embeddings.weight", "model.embed_tokens.weight", False),
                  ("norm.weight", "model.norm.weight", False)]
        for i in range(cfg.n_layer):
            ours, theirs = f"layers.{i}.", f"model.layers.{i}."
            pairs += [(f"{ours}attention_norm.weight", f"{theirs}input_layernorm.weight", False),
                      (f"{ours}ffn_norm.weight", f"{theirs}post_attention_layernorm.weight", False)]
            linears = [("attention.wq", "self_attn.q_proj"), ("attention.wk", "self_attn.k_proj"),
                       ("attention.wv", "self_attn.v_proj"), ("attention.wo", "self_attn.o_proj"),
                       ("feed_forward.w1", "mlp.gate_proj"), ("feed_forward.w3", "mlp.up_proj"),
                       ("feed_forward.w2", "mlp.down_proj")]
            for a, b in linears:
                pairs.append((f"{ours}{a}.weight", f"{theirs}{b}.weight", False))
                if cfg.use_bias:
                    pairs.append((f"{ours}{a}.bias", f"{theirs}{b}.bias", False))
    if not cfg.tie_embeddings:
        pairs.append(("output.weight", "lm_head.weight", False))
    return pairs


def to_hf_state(model: nn.Module, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """Our state dict renamed (and for GPT-2 transposed / fused) to the HF layout."""
    ours = {k: v.detach().to("cpu", torch.float32) for k, v in full_model_state(model).items()}
    out = {theirs: (_t(ours[name]) if transpose else ours[name].contiguous())
           for name, theirs, transpose in _names(cfg)}
    if cfg.style == "gpt2":
        for i in range(cfg.n_layer):
            p = f"layers.{i}.attention."
            qkv = [ours[p + w + ".weight"] for w in ("wq", "wk", "wv")]
            out[f"transformer.h.{i}.attn.c_attn.weight"] = torch.cat(qkv, dim=0).t().contiguous()  # (C, 3C)
            out[f"transformer.h.{i}.attn.c_attn.bias"] = torch.cat([ours[p + w + ".bias"] for w in ("wq", "wk", "wv")])
    return out


def from_hf_state(hf: dict[str, torch.Tensor], cfg: ModelConfig, where: Path) -> dict[str, torch.Tensor]:
    """An HF state dict renamed to ours; CheckpointError naming the first missing tensor."""

    def get(name: str) -> torch.Tensor:
        if name not in hf:
            raise CheckpointError(f"{where} lacks tensor '{name}' (weights do not match config.json)")
        return hf[name]

    out = {name: (_t(get(theirs)) if transpose else get(theirs)) for name, theirs, transpose in _names(cfg)}
    if cfg.style == "gpt2":
        d = cfg.d_model
        for i in range(cfg.n_layer):
            w = get(f"transformer.h.{i}.attn.c_attn.weight").t()  # (3C, C)
            b = get(f"transformer.h.{i}.attn.c_attn.bias")
            if w.shape[0] != 3 * d:
                raise CheckpointError(f"{where}: c_attn of layer {i} has shape {tuple(w.shape)}, expected ({3 * d}, {d})")
            for j, name in enumerate(("wq", "wk", "wv")):
                out[f"layers.{i}.attention.{name}.weight"] = w[j * d:(j + 1) * d].contiguous()
                out[f"layers.{i}.attention.{name}.bias"] = b[j * d:(j + 1) * d].contiguous()
    if cfg.tie_embeddings:
        out["output.weight"] = out["tok_embeddings.weight"]
    return out


def to_transformers(model: nn.Module, cfg: ModelConfig, attn_implementation: str = "sdpa") -> nn.Module:
    """The equivalent `transformers` model (GPT2LMHeadModel / LlamaForCausalLM) with the same weights,
    in memory; needs `transformers` installed (the `hf` extra)."""
    import transformers  # an optional dependency (the `hf` extra), heavy to import

    fields = {k: v for k, v in hf_config(cfg).items() if k not in ("architectures", "model_type", "torch_dtype")}
    if cfg.style == "gpt2":
        hf_model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**fields, attn_implementation=attn_implementation))
    else:
        hf_model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**fields, attn_implementation=attn_implementation))
    missing, unexpected = hf_model.load_state_dict(to_hf_state(model, cfg), strict=False)
    if unexpected or any(k != "lm_head.weight" or not cfg.tie_embeddings for k in missing):
        raise RuntimeError(f"HF layout mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return hf_model


# --- directories ---------------------------------------------------------------------------------

def save_hf_dir(out: Path, model: nn.Module, cfg: ModelConfig, tokenizer_path: Path | None = None,
                eos_id: int | None = None) -> list[Path]:
    """Write an HF model dir into `out` (caller makes it atomic): config.json, model.safetensors, tokenizer."""
    config = hf_config(cfg, eos_id=eos_id)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # transformers refuses safetensors files without format metadata.
    atomic_write_bytes(out / WEIGHTS_FILE, save_safetensors_bytes(to_hf_state(model, cfg), metadata={"format": "pt"}))
    atomic_write_json(out / "config.json", config)
    written = [out / "config.json", out / WEIGHTS_FILE]
    if tokenizer_path is not None:
        atomic_write_bytes(out / "tokenizer.json", Path(tokenizer_path).read_bytes())
        tok_cfg: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast",
                                   "model_max_length": cfg.max_seq_len}
        eos = _eos_token(tokenizer_path, eos_id)
        if eos is not None:
            tok_cfg["eos_token"] = eos
        atomic_write_json(out / "tokenizer_config.json", tok_cfg)
        written += [out / "tokenizer.json", out / "tokenizer_config.json"]
    return written


def _eos_token(tokenizer_path: Path, eos_id: int | None) -> str | None:
    if eos_id is None:
        return None
    return Tokenizer.from_file(str(tokenizer_path)).id_to_token(eos_id)


def read_hf_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of an HF dir's safetensors (single file or sharded with an index)."""
    if (path / WEIGHTS_FILE).is_file():
        files = [path / WEIGHTS_FILE]
    elif (path / INDEX_FILE).is_file():
        try:
            index = json.loads((path / INDEX_FILE).read_text(encoding="utf-8"))
            files = [path / f for f in sorted(set(index["weight_map"].values()))]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            raise CheckpointError(f"{path / INDEX_FILE} is corrupted") from None
    else:
        bins = " (pickled .bin weights are not loaded: they can run code)" if any(path.glob("*.bin")) else ""
        raise CheckpointError(f"{path} has no {WEIGHTS_FILE}{bins}")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            tensors.update(load_file(str(f)))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{f} is corrupted or unreadable ({exc})") from None
    return tensors


class HFDir:
    """A Hugging Face model dir (config.json + safetensors weights) of a GPT-2 or Llama model."""

    name = "hf"

    def matches(self, path: Path) -> bool:
        return path.is_dir() and (path / "config.json").is_file()

    def open(self, path: Path) -> ModelSource:
        try:
            hf = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"{path} has no config.json (not an HF model dir)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{path / 'config.json'} is corrupted (not valid JSON)") from None
        if not isinstance(hf, dict):
            raise CheckpointError(f"{path / 'config.json'} is not a JSON object")
        tokenizer = path / TOKENIZER_FILE
        return ModelSource(path, config_from_hf(hf, path), self, {}, tokenizer if tokenizer.is_file() else None)

    def load_weights(self, source: ModelSource, model: nn.Module, verify: bool = True) -> None:
        load_full_state(model, from_hf_state(read_hf_weights(source.path), source.config, source.path), source.path)
