"""SIGINT and SIGTERM (Ctrl-C, `kill`, a scheduler's preemption notice) stop the run cleanly.

The first signal asks the trainer to finish the current step, validate and checkpoint, then
return "interrupted"; a second Ctrl-C raises KeyboardInterrupt at once (the checkpointing
callback then saves the state from the start of the step). Handlers can only be installed from
the main thread; elsewhere (a server, a test thread) the callback does nothing.
"""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING, Any

from clusterlm.train.callbacks.base import Callback

if TYPE_CHECKING:
    from clusterlm.train.trainer import Trainer

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalCallback(Callback):
    def __init__(self, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> None:
        self.signals = signals
        self._previous: dict[int, Any] = {}

    def on_run_start(self, trainer: Trainer) -> None:
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum: int, frame: Any) -> None:
            if signum == signal.SIGINT and trainer.stop_requested:
                raise KeyboardInterrupt  # second Ctrl-C: stop now (state rewound and saved)
            trainer.request_stop("interrupted")
            trainer.say(f"signal {signal.Signals(signum).name}: stopping after this step "
                        "(checkpoint, then exit; Ctrl-C again to stop immediately)")

        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, handler)

    def on_close(self, trainer: Trainer) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old)
        self._previous = {}
