"""SFT's loss mask: replies (and their end-of-text) are trained, prompts contribute exactly nothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clusterlm.data.chat import END_OF_TURN
from clusterlm.finetune.body import hidden_states
from clusterlm.finetune.sft_data import collate, encode_segments, record_segments
from clusterlm.finetune.sft_train import masked_lm_loss, sft_loss
from clusterlm.finetune.store import load_base


def _trained_text(tokenizer, example) -> str:
    return tokenizer.decode([i for i, t in zip(example.ids, example.trained) if t], skip_special_tokens=False)


def test_mask_marks_exactly_the_response_and_its_end_of_text(tokenizer, tmp_path):
    segments = record_segments(tmp_path, 1, {"prompt": "say hello", "response": "hello world", "system": "be brief"})
    example = encode_segments(tokenizer, segments)
    assert _trained_text(tokenizer, example) == "hello world" + END_OF_TURN
    assert example.trained[-1] and not example.trained[0]
    # Everything before the reply is context: the mask is one contiguous run at the end.
    first = example.trained.index(True)
    assert all(example.trained[first:]) and not any(example.trained[:first])


def test_mask_of_a_conversation_covers_every_assistant_turn(tokenizer, tmp_path):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "more"}, {"role": "assistant", "content": "the fox"}]
    example = encode_segments(tokenizer, record_segments(tmp_path, 1, {"messages": messages}))
    assert _trained_text(tokenizer, example) == f"hello{END_OF_TURN}the fox{END_OF_TURN}"


def test_prompt_positions_get_exactly_zero_gradient():
    torch.manual_seed(0)
    B, T, C, V = 2, 7, 8, 11
    hidden = torch.randn(B, T, C, requires_grad=True)
    weight = torch.randn(V, C, requires_grad=True)
    targets = torch.randint(0, V, (B, T))
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[0, 4:] = True
    mask[1, 2:5] = True
    loss = masked_lm_loss(hidden, weight, targets, mask)
    loss.backward()
    assert torch.all(hidden.grad[~mask] == 0)  # exactly zero, not merely small
    assert torch.all(hidden.grad[mask].abs().sum(-1) > 0)
    # Same value and gradients as the textbook form: full logits, ignore_index on prompt targets.
    h2, w2 = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    reference = F.cross_entropy((h2 @ w2.t()).flatten(0, 1), targets.masked_fill(~mask, -100).flatten(),
                                ignore_index=-100)
    reference.backward()
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(hidden.grad, h2.grad)
    torch.testing.assert_close(weight.grad, w2.grad)


def test_prompt_targets_cannot_change_the_loss_or_any_gradient(base_ckpt, tokenizer, tmp_path):
    lm = load_base(base_ckpt).model
    example = encode_segments(tokenizer, record_segments(tmp_path, 1, {"prompt": "the quick", "response": "fox"}))
    inputs, targets, mask = collate([example], pad_id=1)
    grads = []
    for scrambled in (False, True):
        t = targets.clone()
        if scrambled:  # replace every prompt target with another token id
            t[~mask] = (t[~mask] + 7) % lm.config.vocab_size
        lm.zero_grad()
        loss = sft_loss(lm, inputs, t, mask)
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in lm.parameters()]))
    assert torch.equal(grads[0][0], grads[1][0])
    assert all(torch.equal(a, b) for a, b in zip(grads[0][1], grads[1][1]))


def test_hidden_states_leave_the_model_unchanged(base_ckpt):
    lm = load_base(base_ckpt).model
    before = dict(lm.state_dict())
    head = lm.output
    tokens = torch.tensor([[5, 6, 7, 8]])
    h = hidden_states(lm, tokens)  # (1, 4, C)
    assert h.shape == (1, 4, lm.config.d_model)
    assert lm.output is head and lm.output.weight is lm.tok_embeddings.weight  # still tied
    torch.testing.assert_close(lm.output(h), lm(tokens))
    assert list(lm.state_dict()) == list(before)
