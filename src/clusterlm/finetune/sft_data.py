"""SFT examples: records → token ids with a per-token loss mask, packed into training rows.

A record is `{"prompt", "response"[, "system"]}` or `{"messages": [{"role", "content"}, …]}`
(OpenAI's chat shape). Both are rendered by the one chat template, `clusterlm.data.chat`,
as (text, trained) segments; each segment is encoded on its own and its tokens inherit its
flag, so the mask marks exactly the assistant replies and their end-of-text tokens.

Rows hold `context + 1` tokens (inputs are a row without its last token, targets without
its first). With packing, whole examples are concatenated in a seeded random order until
the next one would not fit; every example ends with end-of-text, and attention runs across
the boundary, as in GPT pretraining and TRL's default packing — our attention has no
per-example mask. Without packing each example is its own (padded) row.

An example longer than a row is refused with its line number (truncating would cut the
reply and its end-of-text), unless `drop_long` is set, in which case it is dropped and counted.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clusterlm.data.chat import chat_segments, render_prompt_response
from clusterlm.errors import DataError
from clusterlm.finetune.jsonl import read_jsonl, require_str


@dataclass(frozen=True)
class Example:
    ids: list[int]
    trained: list[bool]  # per token: a target of the loss (an assistant reply or its end-of-text)


@dataclass
class SFTData:
    examples: list[Example]
    dropped_long: int = 0
    response_tokens: int = 0


def record_segments(path: Path, number: int, obj: dict[str, Any]) -> list[tuple[str, bool]]:
    """The (text, trained) pieces of one record, or a DataError naming its line."""
    if "messages" in obj:
        messages = obj["messages"]
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{path}:{number}: 'messages' must be a non-empty list of {{role, content}}")
        try:
            segments = chat_segments(messages)
        except ValueError as exc:
            raise DataError(f"{path}:{number}: {exc}") from None
        if not any(trained for _, trained in segments):
            raise DataError(f"{path}:{number}: the conversation has no assistant turn to train on")
        return segments
    prompt = require_str(path, number, obj, "prompt")
    response = require_str(path, number, obj, "response")
    system = obj.get("system")
    if system is not None and not isinstance(system, str):
        raise DataError(f"{path}:{number}: field 'system' must be a string")
    prompt_text, response_text = render_prompt_response(prompt, response, system or None)
    return [(prompt_text, False), (response_text, True)]


def encode_segments(tokenizer: Any, segments: Sequence[tuple[str, bool]]) -> Example:
    ids: list[int] = []
    trained: list[bool] = []
    for text, flag in segments:
        piece = tokenizer.encode(text, add_special_tokens=False).ids
        ids += piece
        trained += [flag] * len(piece)
    return Example(ids, trained)


def check_round_trip(tokenizer: Any, path: Path, number: int, segments: Sequence[tuple[str, bool]],
                     example: Example) -> None:
    """The tokenizer must reproduce the text exactly; otherwise it cannot write this language."""
    text = "".join(t for t, _ in segments)
    if tokenizer.decode(example.ids, skip_special_tokens=False) != text:
        raise DataError(
            f"{path}:{number}: the checkpoint's tokenizer cannot encode this text exactly (unknown "
            "characters for its vocabulary); use a checkpoint whose byte-level tokenizer was trained on "
            "text in this language (clusterlm prepare on both sides of the pairs)"
        )


def load_sft_data(path: str | Path, tokenizer: Any, context: int, drop_long: bool = False) -> SFTData:
    """Read, render, encode and check every record of `path` (a row holds `context + 1` tokens)."""
    path = Path(path)
    data = SFTData([])
    for number, obj in read_jsonl(path):
        segments = record_segments(path, number, obj)
        example = encode_segments(tokenizer, segments)
        check_round_trip(tokenizer, path, number, segments, example)
        if len(example.ids) > context + 1:
            if drop_long:
                data.dropped_long += 1
                continue
            raise DataError(
                f"{path}:{number}: the example is {len(example.ids)} tokens, longer than the model's context "
                f"+ 1 ({context + 1}); shorten it, or pass --drop-long to skip such examples (they are counted)"
            )
        data.examples.append(example)
        data.response_tokens += sum(example.trained)
    if not data.examples:
        raise DataError(f"{path}: no example fits the context of {context} tokens")
    return data


def make_rows(examples: Sequence[Example], row_tokens: int, packing: bool, seed: int) -> list[Example]:
    """Rows of at most `row_tokens` tokens: examples in a seeded random order, packed or one per row."""
    order = list(examples)
    random.Random(seed).shuffle(order)
    if not packing:
        return order
    rows: list[Example] = []
    ids: list[int] = []
    trained: list[bool] = []
    for ex in order:
        if ids and len(ids) + len(ex.ids) > row_tokens:
            rows.append(Example(ids, trained))
            ids, trained = [], []
        ids += ex.ids
        trained += ex.trained
    if ids:
        rows.append(Example(ids, trained))
    return rows


def collate(rows: Sequence[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs (B, T), targets (B, T) and loss mask (B, T) of right-padded rows (T = longest row − 1)."""
    T = max(len(r.ids) for r in rows) - 1
    inputs = torch.full((len(rows), T), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.bool)
    for i, r in enumerate(rows):
        n = len(r.ids) - 1
        row = torch.as_tensor(r.ids, dtype=torch.long)
        inputs[i, :n] = row[:-1]
        targets[i, :n] = row[1:]
        mask[i, :n] = torch.as_tensor(r.trained[1:], dtype=torch.bool)  # the flag of the predicted token
    return inputs, targets, mask
