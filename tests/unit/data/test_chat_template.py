"""The one chat template shared by SFT and the server."""

import pytest

from clusterlm.data.chat import (
    END_OF_TURN,
    chat_segments,
    render_chat,
    render_prompt_response,
)


def test_generation_prompt_ends_with_the_assistant_header():
    text = render_chat([{"role": "user", "content": "hi"}])
    assert text == "<|user|>\nhi\n<|assistant|>\n"


def test_assistant_turns_end_with_end_of_text():
    text = render_chat([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                       add_generation_prompt=False)
    assert text.endswith("a" + END_OF_TURN)


def test_prompt_response_pair_equals_the_rendered_conversation():
    prompt, response = render_prompt_response("q", "a", system="be brief")
    conversation = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"}]
    assert prompt + response == render_chat(conversation, add_generation_prompt=False)


def test_only_assistant_content_is_trained():
    conversation = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a1"},
                    {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    segments = chat_segments(conversation)
    assert "".join(t for t, _ in segments) == render_chat(conversation, add_generation_prompt=False)
    assert [t for t, trained in segments if trained] == ["a1" + END_OF_TURN, "a2" + END_OF_TURN]


@pytest.mark.parametrize("bad", [[], [{"role": "robot", "content": "x"}], [{"role": "user"}]])
def test_malformed_conversations_are_refused(bad):
    with pytest.raises(ValueError):
        render_chat(bad)
