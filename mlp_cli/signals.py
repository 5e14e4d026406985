"""Ctrl-C and SIGTERM as requests to stop at the next safe point, instead of killing a run mid-write."""

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class StopRequest:
    """Set by a signal handler; the training loop looks at it after every batch."""

    signal_number: int | None = None  # the signal this process received
    shared_signal: int | None = None  # under torchrun: a signal another process received, which all obey

    @property
    def is_requested(self) -> bool:
        return self.signal_number is not None or self.shared_signal is not None

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + (self.signal_number or self.shared_signal or 0)


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Turn SIGINT and SIGTERM into a StopRequest for the duration of the block; a second signal kills."""
    request = StopRequest()
    previous = {number: signal.getsignal(number) for number in STOP_SIGNALS}

    def handle(number: int, frame: FrameType | None) -> None:
        if request.signal_number is not None:  # asked twice: the user wants out now
            signal.signal(number, signal.SIG_DFL)
            signal.raise_signal(number)
        request.signal_number = number

    for number in STOP_SIGNALS:
        signal.signal(number, handle)
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def wait_for_a_stop_signal(poll_seconds: float = 0.2) -> None:
    """Block until SIGINT or SIGTERM arrives (a server's main thread), whatever the signals' state was: a
    process started in the background by a shell, as test runners and CI jobs are, inherits SIGINT ignored,
    and Python then never raises KeyboardInterrupt."""
    with stop_on_signals() as stop:
        while not stop.is_requested:
            time.sleep(poll_seconds)
