"""A sequence classifier on a pretrained LM: pooled final hidden states → one linear layer.

    tokens (B, T) ─▶ LM body ─▶ hidden (B, T, C) ─▶ pool (last | mean) ─▶ (B, C) ─▶ head ─▶ logits (B, K)

On disk a classifier is an ordinary LM checkpoint (its body, fine-tuned or not, with the
vocabulary projection kept so the file stays a valid language model) plus two files:

    CKPT/classifier.safetensors   head.weight (K, C), head.bias (K,)
    CKPT/classifier.json          {"format": "clusterlm-classifier", "version": 1, "labels", "pooling",
                                   "max_tokens", ...}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors
from torch import nn

from clusterlm.errors import CheckpointError
from clusterlm.finetune.body import Pooling, hidden_states, pad_batch, pad_id_of, pool
from clusterlm.finetune.store import LoadedModel, load_base
from clusterlm.fsio import atomic_write_bytes, atomic_write_json

HEAD_FILE = "classifier.safetensors"
HEAD_META = "classifier.json"
FORMAT = "clusterlm-classifier"
VERSION = 1


class SequenceClassifier(nn.Module):
    def __init__(self, lm: nn.Module, n_classes: int, pooling: Pooling) -> None:
        super().__init__()
        self.lm = lm
        self.pooling = pooling
        self.head = nn.Linear(lm.config.d_model, n_classes)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def features(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return pool(hidden_states(self.lm, tokens), lengths, self.pooling)  # (B, C)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(tokens, lengths))  # (B, K)


@dataclass
class LoadedClassifier:
    model: SequenceClassifier
    labels: list[str]
    tokenizer: Any
    max_tokens: int
    pad_id: int
    path: Path

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Class probabilities (N, K) of `texts` (each cut to its first `max_tokens` tokens)."""
        ids = [(self.tokenizer.encode(t, add_special_tokens=False).ids or [self.pad_id])[: self.max_tokens]
               for t in texts]
        return self.predict_ids(ids, batch_size)

    @torch.no_grad()
    def predict_ids(self, ids: Sequence[list[int]], batch_size: int = 32) -> torch.Tensor:
        """Class probabilities (N, K) of already encoded, already cut token lists."""
        self.model.eval()
        device = self.model.head.weight.device
        out = []
        for i in range(0, len(ids), batch_size):
            tokens, lengths = pad_batch(ids[i:i + batch_size], self.pad_id, device)
            out.append(torch.softmax(self.model(tokens, lengths).float(), dim=-1).cpu())
        return torch.cat(out)


def save_head(ckpt_dir: Path, model: SequenceClassifier, info: dict[str, Any]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    atomic_write_bytes(ckpt_dir / HEAD_FILE, save_safetensors(tensors))
    atomic_write_json(ckpt_dir / HEAD_META, {"format": FORMAT, "version": VERSION, **info})


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> LoadedClassifier:
    """A classifier checkpoint (or run dir); CheckpointError when it has no classification head."""
    loaded: LoadedModel = load_base(path, device=device)
    info = _read_info(loaded.path)
    labels = info.get("labels")
    if not isinstance(labels, list) or len(labels) < 2 or info.get("pooling") not in ("last", "mean"):
        raise CheckpointError(f"{loaded.path / HEAD_META} is malformed (labels or pooling)")
    model = SequenceClassifier(loaded.model, len(labels), info["pooling"]).to(device)
    _load_head(model, loaded.path / HEAD_FILE)
    model.eval()
    return LoadedClassifier(model, [str(x) for x in labels], loaded.tokenizer, int(info.get("max_tokens", 128)),
                            pad_id_of(loaded.tokenizer), loaded.path)


def _read_info(ckpt: Path) -> dict[str, Any]:
    path = ckpt / HEAD_META
    if not path.is_file():
        raise CheckpointError(f"{ckpt} is a language model without a classification head; "
                              "train one with 'clusterlm finetune classify'")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{path} is corrupted (not valid JSON)") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("version") != VERSION:
        raise CheckpointError(f"{path} is not a clusterlm classifier head (format/version)")
    return info


def _load_head(model: SequenceClassifier, path: Path) -> None:
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is missing or corrupted ({exc})") from None
    expected = model.head.state_dict()
    if set(tensors) != set(expected) or any(tensors[k].shape != expected[k].shape for k in expected):
        raise CheckpointError(f"{path} does not match the labels and model width in {HEAD_META}")
    model.head.load_state_dict(tensors)
