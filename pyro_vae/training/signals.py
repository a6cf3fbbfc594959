"""Stopping training cleanly on SIGINT or SIGTERM.

Inside :class:`SignalStop`, the first SIGINT or SIGTERM only records itself; the training
loop reads :attr:`SignalStop.signum` after each step, writes a checkpoint and stops with
:class:`~pyro_vae.errors.TrainingInterrupted`. A second signal stops at once
(:class:`KeyboardInterrupt`). The previous handlers come back on exit.
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Dict, Optional

#: The signals that stop training cleanly, with a checkpoint.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SignalStop:
    """A context manager that turns the first stop signal into a request (:attr:`signum`).

    Signal handlers exist only in the main thread; in another, nothing is installed and
    :attr:`signum` changes only through :meth:`SignalStop.request` (which distributed runs use to stop
    every process when one was signalled)."""

    def __init__(self) -> None:
        #: The signal that asked training to stop, or None.
        self.signum: Optional[int] = None
        self._previous: Dict[int, Any] = {}

    def request(self, signum: int) -> None:
        """Ask training to stop after the current step, as signal ``signum`` would."""
        self.signum = signum

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "SignalStop":
        self.signum = None
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._previous.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._previous = {}
        self.signum = None
