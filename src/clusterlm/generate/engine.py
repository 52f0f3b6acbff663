"""The one decode loop: `clusterlm generate`, the server and evaluation all advance sequences here.

`DecodeEngine` holds up to `max_batch` sequences and produces one new token for each of them per
`step()` (continuous batching: a sequence joins at the next step after `add`, and leaves — its
row freed for the next waiting one — as soon as it finishes or is cancelled). A single caller
is simply a batch of one, so `generate_ids` and a server request alone run the same code.

Layout. Every running sequence owns one row of a shared cache (`kv_cache.KVCache` with R =
`max_batch` rows; a `RecurrentState` with R hidden-state rows for RNN/LSTM/GRU models). Slot p
of a row holds that sequence's token at window position p, so sequences of different lengths
sit in one padded (R, Hkv, S_max, D) buffer per layer, each at its own true position. Running
sequences always occupy rows 0 … n − 1: when one finishes, the last row is copied into its place,
so a step's batch is the contiguous slice [0, n) (a view, never a gather).

One step:

    admit      waiting sequences take free rows (in arrival order)
    slide      a window that is full drops its oldest tokens (kept: the newest half) and refills
    prefill    each row whose cache lags by more than one token (a new prompt, a slid window)
               runs alone over all of them but the last: (1, T) at positions 0 … T − 1
    decode     one batched forward of every row's last token, (n, 1), with a (n,) tensor of
               per-row positions: embeddings/RoPE use each row's own position, its keys are
               written into its own slot, and the attention mask (model/layers.py) hides the
               slots past it — other rows' longer histories, or stale entries
    sample     one token per row from its (V,) logits, with its own settings and its own
               seeded generator; end-of-text or max_new_tokens finishes it

Because every row is computed from its own tokens, positions and cache only (masked slots add
exact zeros), a sequence gets the same tokens whatever else is in the batch: at temperature 0
exactly what it gets alone (the tests check this token for token), and with a seed the same
sample. Recurrent models have no positions; their rows simply carry state.

Without a KV cache (`use_kv_cache=False`, for checking the cache) each row re-runs its whole
window on its own every step; the windows, and so the tokens, are the same.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field

import torch
from torch import nn

from clusterlm.errors import UsageError
from clusterlm.generate.kv_cache import new_cache
from clusterlm.generate.sampling import SamplingSettings, sample_next

SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1  # what torch.Generator.manual_seed accepts


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 128
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    seed: int | None = None  # None: a fresh random seed
    use_kv_cache: bool = True
    eos_id: int | None = None  # stop (without emitting it) when this id is sampled

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise UsageError(f"max-new-tokens must be ≥ 0, got {self.max_new_tokens}")
        if self.seed is not None and not SEED_MIN <= self.seed <= SEED_MAX:
            raise UsageError(f"seed must be a 64-bit integer (in [-2**63, 2**64 - 1]), got {self.seed}")


def context_limit(model: nn.Module) -> int | None:
    """Positions the model can attend to at once (None: unbounded, recurrent)."""
    cfg = model.config
    return cfg.max_seq_len if cfg.is_transformer else None


@dataclass(eq=False)
class Sequence:
    """One sequence being decoded: its tokens so far and where its window and cache stand."""

    tokens: list[int]  # prompt, then every generated token
    settings: GenerationSettings
    generator: torch.Generator
    top_logprobs: int | None  # alternatives to report per token; None: no log-probabilities
    id: int = 0
    start: int = 0  # tokens[start:] is the model's window
    cached: int = 0  # tokens[start : start + cached] are in the cache row, at positions 0 … cached − 1
    row: int = -1  # its row in the batch (-1: waiting or done)
    n_new: int = 0
    finish_reason: str | None = None  # "stop" (end of text) | "length" | "error" | "cancelled"


@dataclass(frozen=True)
class TokenEvent:
    """What one step produced for one sequence."""

    sequence: Sequence | None  # None only for a sequence that could not start (with `error`)
    token_id: int | None  # None: finished without a new token (end of text, error)
    finish_reason: str | None = None  # set on the sequence's last event
    logprob: float | None = None  # log-probability of token_id under the model (temperature 1)
    top_logprobs: list[tuple[int, float]] | None = None  # the most likely alternatives
    error: BaseException | None = None


class DecodeEngine:
    """Advances up to `max_batch` sequences together; not thread-safe (one thread calls it)."""

    def __init__(self, model: nn.Module, max_batch: int = 1, use_kv_cache: bool = True):
        if max_batch < 1:
            raise UsageError(f"max-batch must be ≥ 1, got {max_batch}")
        self.model, self.max_batch, self.use_kv_cache = model, max_batch, use_kv_cache
        self.is_transformer = model.config.is_transformer
        self.limit = context_limit(model)
        self.keep = max(1, self.limit // 2) if self.limit else 0  # tokens kept when a window slides
        self.device = next(model.parameters()).device
        self.state = new_cache(model, n_rows=max_batch)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # running[i].row == i
        self._ids = itertools.count()

    def add(self, prompt_ids: Seq[int], settings: GenerationSettings, top_logprobs: int | None = None) -> Sequence:
        """Queue a sequence; it starts at the next `step()` that has a free row."""
        if len(prompt_ids) == 0:
            raise UsageError("the prompt is empty (it encodes to no tokens)")
        generator = torch.Generator(device=self.device)
        if settings.seed is None:
            generator.seed()
        else:
            generator.manual_seed(settings.seed)
        seq = Sequence(list(prompt_ids), settings, generator, top_logprobs, id=next(self._ids))
        if self.limit:
            seq.start = max(0, len(seq.tokens) - self.limit)  # a long prompt: its last `limit` tokens
        self.waiting.append(seq)
        return seq

    def cancel(self, seq: Sequence) -> None:
        """Drop a sequence (waiting or running) without another event; its row is freed at once."""
        if seq.row >= 0:
            self._remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.finish_reason = seq.finish_reason or "cancelled"

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    @torch.inference_mode()
    def step(self) -> list[TokenEvent]:
        """One new token (or a finish) for every running sequence."""
        events = self._admit()
        if self.running:
            logits = self._forward_cached() if self.use_kv_cache else self._forward_uncached()
            events += self._sample(logits)
            for seq in [s for s in self.running if s.finish_reason]:
                self._remove(seq)
        return events

    def fail_running(self, error: BaseException) -> list[TokenEvent]:
        """End every running sequence with `error` (after a failed forward: their rows are now
        unreliable); waiting ones have not run and stay queued."""
        events = []
        for seq in list(self.running):
            seq.finish_reason = "error"
            self._remove(seq)
            events.append(TokenEvent(seq, None, "error", error=error))
        return events

    def _admit(self) -> list[TokenEvent]:
        events = []
        while self.waiting and len(self.running) < self.max_batch:
            seq = self.waiting.popleft()
            if seq.settings.max_new_tokens == 0:  # nothing to do: finished before it starts
                seq.finish_reason = "length"
                events.append(TokenEvent(seq, None, "length"))
                continue
            seq.row = len(self.running)
            self.state.reset_row(seq.row)
            self.running.append(seq)
        return events

    def _slide(self, seq: Sequence) -> None:
        if self.limit and len(seq.tokens) - seq.start > self.limit:
            seq.start, seq.cached = len(seq.tokens) - self.keep, 0  # the row is refilled from position 0

    def _forward_cached(self) -> torch.Tensor:
        """Next-token logits (n, V) of every running row, through the cache."""
        for seq in self.running:
            self._slide(seq)
            chunk = seq.tokens[seq.start + seq.cached:-1]  # all but the last not-yet-cached token
            if chunk:
                tokens = torch.tensor([chunk], device=self.device)  # (1, T)
                self.model(tokens, kv_cache=self.state.rows(seq.row, 1), start_pos=seq.cached)
                seq.cached += len(chunk)
        n = len(self.running)
        last = torch.tensor([[seq.tokens[-1]] for seq in self.running], device=self.device)  # (n, 1)
        # Recurrent rows have no positions: a fresh row view always continues at 0.
        positions = torch.tensor([seq.cached for seq in self.running], device=self.device) \
            if self.is_transformer else 0  # (n,)
        logits = self.model(last, kv_cache=self.state.rows(0, n), start_pos=positions)[:, -1]  # (n, V)
        for seq in self.running:
            seq.cached += 1
        return logits

    def _forward_uncached(self) -> torch.Tensor:
        rows = []
        for seq in self.running:
            self._slide(seq)
            window = torch.tensor([seq.tokens[seq.start:]], device=self.device)  # (1, T)
            rows.append(self.model(window)[:, -1])  # (1, V)
        return torch.cat(rows)  # (n, V)

    def _sample(self, logits: torch.Tensor) -> list[TokenEvent]:
        greedy_ids = logits.argmax(dim=-1).tolist()  # one pass for every greedy row
        events = []
        for i, seq in enumerate(self.running):
            settings = seq.settings
            try:
                if settings.sampling.greedy:
                    token_id = greedy_ids[i]
                else:
                    token_id = int(sample_next(logits[i:i + 1], settings.sampling, seq.generator)[0])
                logprob, top = _logprobs(logits[i], token_id, seq.top_logprobs)
            except Exception as exc:  # noqa: BLE001 — one bad row must not end the others
                seq.finish_reason = "error"
                events.append(TokenEvent(seq, None, "error", error=exc))
                continue
            if settings.eos_id is not None and token_id == settings.eos_id:
                seq.finish_reason = "stop"
                events.append(TokenEvent(seq, None, "stop"))
                continue
            seq.tokens.append(token_id)
            seq.n_new += 1
            if seq.n_new >= settings.max_new_tokens:
                seq.finish_reason = "length"
            events.append(TokenEvent(seq, token_id, seq.finish_reason, logprob, top))
        return events

    def _remove(self, seq: Sequence) -> None:
        """Free seq's row, moving the last running row into it so rows stay 0 … n − 1."""
        last = self.running[-1]
        if last is not seq:
            with torch.inference_mode():  # the cache holds inference tensors
                self.state.move_row(last.row, seq.row)
            self.running[seq.row], last.row = last, seq.row
        self.running.pop()
        seq.row = -1


def _logprobs(logits: torch.Tensor, token_id: int,
              top: int | None) -> tuple[float | None, list[tuple[int, float]] | None]:
    """log p(token_id) under the model (temperature 1, unfiltered) and the `top` most likely ids."""
    if top is None:
        return None, None
    logp = torch.log_softmax(logits.float(), dim=-1)  # (V,)
    best = torch.topk(logp, min(top, logp.shape[-1])) if top > 0 else None
    alternatives = list(zip(best.indices.tolist(), best.values.tolist())) if best is not None else []
    return float(logp[token_id]), alternatives
