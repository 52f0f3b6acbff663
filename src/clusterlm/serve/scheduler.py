"""The server's decode thread: one `DecodeEngine` stepping every admitted request together.

    event loop (HTTP)                          decode thread
    ─────────────────                          ─────────────
    submit(prompt, settings) ──inbox──▶  engine.add ─┐
    cancel(ticket)           ──inbox──▶  engine.cancel│  loop: drain inbox, engine.step(),
    ticket.deliver(event) ◀──call_soon_threadsafe── ◀─┘        hand each event to its ticket

The engine is not thread-safe, so only this thread touches it; the HTTP side talks to it
through a queue and gets events back through a callback (which, for asyncio, must hop onto
the event loop with `loop.call_soon_threadsafe`). While nothing is running the thread sleeps on
the queue, so an idle server costs nothing and a new request starts without polling delay.

A request's slot is freed by `cancel` (a stop string was found, the client hung up): the next
step no longer computes its row, and a waiting request takes it. If a step itself fails (it
should not; the log has the traceback), every running request ends with an error event and
the thread carries on with the queue: one bad batch never kills the server.

`max_batch=1` is "batching off": requests run one after another in arrival order, through
exactly the same code.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import nn

from clusterlm.generate.engine import DecodeEngine, GenerationSettings, Sequence as DecodeSequence, TokenEvent

log = logging.getLogger("clusterlm.serve")


@dataclass(eq=False)
class Ticket:
    """One submitted sequence, as the HTTP side knows it."""

    prompt_ids: Sequence[int]
    settings: GenerationSettings
    top_logprobs: int | None
    deliver: Callable[[TokenEvent], None]  # called on the decode thread
    sequence: DecodeSequence | None = field(default=None, repr=False)  # set by the decode thread
    cancelled: bool = False


class Scheduler:
    def __init__(self, model: nn.Module, max_batch: int):
        self.engine = DecodeEngine(model, max_batch=max_batch)
        self._inbox: queue.SimpleQueue[tuple[str, Ticket | None]] = queue.SimpleQueue()
        self._tickets: dict[int, Ticket] = {}  # engine sequence id → ticket (decode thread only)
        self._thread: threading.Thread | None = None
        self.peak_batch = 0  # the most rows one step has decoded (for tests and logs)
        self.finished: Counter[str] = Counter()  # sequences ended, by finish reason ("cancelled": freed early)

    # --- the HTTP side -------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="clusterlm-decode", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._thread is not None:
            self._inbox.put(("stop", None))
            self._thread.join(timeout_s)
            self._thread = None

    def submit(self, prompt_ids: Sequence[int], settings: GenerationSettings, top_logprobs: int | None,
               deliver: Callable[[TokenEvent], None]) -> Ticket:
        if self._thread is None:  # an app run without its lifespan (some test clients, some servers)
            self.start()
        ticket = Ticket(prompt_ids, settings, top_logprobs, deliver)
        self._inbox.put(("add", ticket))
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Free the ticket's slot (no more events come); safe to call more than once."""
        if not ticket.cancelled:
            ticket.cancelled = True
            self._inbox.put(("cancel", ticket))

    @property
    def busy_rows(self) -> int:
        """Sequences running or waiting (read from another thread: a snapshot, for tests and logs)."""
        return len(self.engine.running) + len(self.engine.waiting)

    # --- the decode thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            try:
                if not self._drain(block=not self.engine.has_work):
                    return
                if self.engine.has_work:
                    self._step()
            except Exception:  # noqa: BLE001 — the decode thread must outlive any one failure
                log.exception("decode loop error")

    def _drain(self, block: bool) -> bool:
        """Apply queued submissions and cancellations; False when asked to stop."""
        while True:
            try:
                kind, ticket = self._inbox.get(block=block)
            except queue.Empty:
                return True
            block = False
            if kind == "stop":
                return False
            if kind == "add" and not ticket.cancelled:
                try:
                    ticket.sequence = self.engine.add(ticket.prompt_ids, ticket.settings, ticket.top_logprobs)
                except Exception as exc:  # noqa: BLE001 — the request was checked; still, never leave it hanging
                    log.exception("could not start a sequence")
                    ticket.deliver(TokenEvent(None, None, "error", error=exc))
                    continue
                self._tickets[ticket.sequence.id] = ticket
            elif kind == "cancel" and ticket.sequence is not None and ticket.sequence.finish_reason is None:
                self.engine.cancel(ticket.sequence)
                self._tickets.pop(ticket.sequence.id, None)
                self.finished["cancelled"] += 1

    def _step(self) -> None:
        try:
            events = self.engine.step()
        except Exception as exc:  # noqa: BLE001
            log.exception("a decode step failed; ending the requests in it")
            events = self.engine.fail_running(exc)
        self.peak_batch = max(self.peak_batch, len(events))  # one event per row decoded
        for event in events:
            ticket = self._tickets.get(event.sequence.id)
            if event.finish_reason is not None:
                self._tickets.pop(event.sequence.id, None)
                self.finished[event.finish_reason] += 1
            if ticket is not None and not ticket.cancelled:
                try:
                    ticket.deliver(event)
                except RuntimeError:  # its event loop has closed (shutdown): nobody is listening
                    self.cancel(ticket)
