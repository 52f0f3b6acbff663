"""LoRA: starts equal to the base, trains only adapters, and merges into identical logits."""

from __future__ import annotations

import pytest
import torch

from clusterlm.errors import UsageError
from clusterlm.finetune.lora import LoRALinear, apply_lora, merge_lora
from clusterlm.model.build import build_model
from clusterlm.config.model import ModelConfig

TOKENS = torch.tensor([[3, 1, 4, 1, 5, 9, 2, 6], [5, 3, 5, 8, 9, 7, 9, 3]])


def _model(style: str):
    kw = dict(n_kv_head=1) if style == "llama" else {}
    return build_model(ModelConfig(style=style, n_layer=2, n_head=2, d_model=32, vocab_size=40, max_seq_len=16, **kw))


@pytest.mark.parametrize("style", ["gpt2", "llama"])
def test_merged_model_gives_the_adapter_models_logits(style):
    model = _model(style).eval()
    wrapped = apply_lora(model, rank=4, alpha=8.0)
    assert wrapped == 2 * (7 if style == "llama" else 6)  # wq wk wv wo + w1 w2 (+ w3) per layer
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.lora_b.normal_(std=0.5)  # a trained-looking, non-zero update
        adapter_logits = model(TOKENS)
    assert merge_lora(model) == wrapped
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    with torch.no_grad():
        merged_logits = model(TOKENS)
    torch.testing.assert_close(merged_logits, adapter_logits, rtol=1e-5, atol=1e-5)
    # The merged model has exactly the plain model's parameter names: it loads as an ordinary checkpoint.
    assert list(model.state_dict()) == list(_model(style).state_dict())


def test_adapters_start_at_zero_and_are_the_only_trainable_parameters():
    base = _model("gpt2").eval()
    model = _model("gpt2").eval()
    apply_lora(model, rank=2, alpha=4.0)
    with torch.no_grad():
        assert torch.equal(model(TOKENS), base(TOKENS))
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.endswith(("lora_a", "lora_b")) for name in trainable)
    model(TOKENS).sum().backward()
    assert all(p.grad is None for name, p in model.named_parameters() if name not in trainable)


def test_lora_refuses_a_model_without_transformer_linear_layers():
    model = build_model(ModelConfig(style="lstm", n_layer=1, d_model=16, vocab_size=30, max_seq_len=8))
    with pytest.raises(UsageError, match="LoRA needs a Transformer"):
        apply_lora(model, rank=2, alpha=4.0)
    with pytest.raises(UsageError, match="--lora-rank"):
        apply_lora(_model("gpt2"), rank=0, alpha=4.0)
