"""Answer prompts with a fine-tuned model: the chat template, then greedy decoding to end-of-text.

The prompt is rendered exactly as SFT rendered it for training (`clusterlm.data.chat`), and
the reply is decoded by the project's one decode loop (`generate_ids`, KV cache) at
temperature 0, so an evaluation is deterministic and matches what `serve` would answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterlm.data.chat import as_messages, render_chat, render_prompt_response
from clusterlm.errors import DataError
from clusterlm.finetune.jsonl import read_jsonl, require_str
from clusterlm.generate.generator import GenerationSettings, generate_ids
from clusterlm.generate.loading import eos_id
from clusterlm.generate.sampling import SamplingSettings


@dataclass(frozen=True)
class EvalItem:
    prompt_text: str  # the rendered prompt, ending with the assistant header
    source: str  # the user's text (for baselines that work on it)
    reference: str
    extra: dict[str, Any]


def read_eval_items(path: str | Path, limit: int | None = None) -> list[EvalItem]:
    """Records with a reference reply: `{prompt, response[, system]}`, or `{messages}` whose last
    turn is the assistant's reference. With `limit`, that many records spread evenly over the
    file (files are often grouped by source, so the first N would be one source only)."""
    path = Path(path)
    items = []
    for number, obj in read_jsonl(path):
        if "messages" in obj:
            try:
                messages = as_messages(obj["messages"] if isinstance(obj["messages"], list) else [None])
            except ValueError as exc:
                raise DataError(f"{path}:{number}: {exc}") from None
            if len(messages) < 2 or messages[-1].role != "assistant":
                raise DataError(f"{path}:{number}: the last message must be the assistant's reference reply")
            users = [m.content for m in messages if m.role == "user"]
            items.append(EvalItem(render_chat(messages[:-1]), users[-1] if users else "", messages[-1].content, {}))
        else:
            prompt = require_str(path, number, obj, "prompt")
            reference = require_str(path, number, obj, "response")
            system = obj.get("system") if isinstance(obj.get("system"), str) else None
            extra = {k: v for k, v in obj.items() if k not in ("prompt", "response", "system")}
            items.append(EvalItem(render_prompt_response(prompt, "", system)[0], prompt, reference, extra))
    if limit is not None and limit < len(items):
        items = [items[i * len(items) // limit] for i in range(limit)]
    return items


def generate_replies(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int,
                     progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Greedy reply to each rendered prompt, up to end-of-text or `max_new_tokens`."""
    settings = GenerationSettings(max_new_tokens=max_new_tokens, sampling=SamplingSettings(temperature=0.0),
                                  seed=0, eos_id=eos_id(tokenizer))
    model.eval()
    replies = []
    for i, prompt in enumerate(prompts):
        ids = tokenizer.encode(prompt, add_special_tokens=False).ids
        new = list(generate_ids(model, ids, settings))
        replies.append(tokenizer.decode(new, skip_special_tokens=False).strip())
        if progress is not None:
            progress(i + 1, len(prompts))
    return replies
