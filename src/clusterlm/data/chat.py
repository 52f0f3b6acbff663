"""The chat template: how a conversation becomes the text a language model reads.

One definition, used by `finetune sft` (training on conversations) and by the server's
`/v1/chat/completions` (prompting with them), so a fine-tuned model sees at serving time
exactly the layout it was trained on.

The markers are plain text, not new special tokens: every byte-level BPE tokenizer already
encodes them, so the template works with any checkpoint and never changes a vocabulary
(adding tokens would change the embedding matrix of a trained model). An assistant turn
ends with the tokenizer's end-of-text token, which is also what stops generation.

    <|system|>
    You are terse.
    <|user|>
    What does os.path.join do?
    <|assistant|>
    Join one or more path segments intelligently.<|endoftext|>

A prompt for generation is the conversation so far followed by the assistant header
(`add_generation_prompt=True`); the model writes the reply and ends it with end-of-text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

ROLES = ("system", "user", "assistant")
ROLE_ALIASES = {"developer": "system"}  # OpenAI's newer name for the system role
END_OF_TURN = "<|endoftext|>"  # the tokenizer's EOS token (clusterlm.data.tokenizer.EOS_TOKEN)


def role_header(role: str) -> str:
    """The line that opens a turn of `role`."""
    return f"<|{role}|>\n"


# A reply never contains a role marker. The server ends a reply at any of them as well as at
# end-of-text: a model that was not fine-tuned to end its turns would otherwise go on to write
# the next user turn itself.
REPLY_STOPS = tuple(f"<|{role}|>" for role in ROLES)


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"unknown chat role {self.role!r}; expected one of {', '.join(ROLES)}")


def as_messages(items: Sequence[Mapping[str, str] | Message]) -> list[Message]:
    """OpenAI-shaped dicts (`{"role", "content"}`) or `Message`s → validated `Message`s."""
    out = []
    for i, item in enumerate(items):
        if isinstance(item, Message):
            out.append(item)
            continue
        if not isinstance(item, Mapping) or not isinstance(item.get("role"), str) \
                or not isinstance(item.get("content"), str):
            raise ValueError(f"message {i} must have string 'role' and 'content'")
        out.append(Message(ROLE_ALIASES.get(item["role"], item["role"]), item["content"]))
    return out


def render_turn(message: Message) -> str:
    """One complete turn: header, content, then end-of-text (assistant) or a newline (others)."""
    return "".join(text for text, _ in turn_segments(message))


def turn_segments(message: Message) -> list[tuple[str, bool]]:
    """A turn as (text, trained) pieces: only an assistant's content and its end-of-text are
    trained on (what SFT's loss mask keeps); headers and other roles' turns are context."""
    if message.role == "assistant":
        return [(role_header("assistant"), False), (message.content + END_OF_TURN, True)]
    return [(role_header(message.role) + message.content + "\n", False)]


def chat_segments(messages: Sequence[Mapping[str, str] | Message]) -> list[tuple[str, bool]]:
    """A whole conversation as (text, trained) pieces; their texts concatenate to `render_chat(...,
    add_generation_prompt=False)`."""
    return [seg for m in as_messages(messages) for seg in turn_segments(m)]


def render_chat(messages: Sequence[Mapping[str, str] | Message], add_generation_prompt: bool = True) -> str:
    """The text of a conversation; with `add_generation_prompt`, ready for the assistant's reply."""
    msgs = as_messages(messages)
    if not msgs:
        raise ValueError("a chat needs at least one message")
    text = "".join(render_turn(m) for m in msgs)
    if add_generation_prompt:
        text += role_header("assistant")
    return text


def render_prompt_response(prompt: str, response: str, system: str | None = None) -> tuple[str, str]:
    """(prompt part, response part) of a single-turn pair; loss is taken on the response part only.

    prompt part = [system turn] + user turn + assistant header; response part = reply + end-of-text.
    Their concatenation equals `render_chat` of the same conversation without a generation prompt.
    """
    turns = ([Message("system", system)] if system else []) + [Message("user", prompt)]
    return render_chat(turns, add_generation_prompt=True), response + END_OF_TURN
