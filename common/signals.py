"""How a job ends when it is told to stop: SIGTERM (SLURM preemption, ``kill``, a CI timeout) or SIGINT (Ctrl-C).

Inside ``trainer.fit`` / ``trainer.test`` Lightning handles both: SIGTERM sets a flag and raises
``SIGTERMException`` at the next batch boundary (a ``SystemExit`` with code 0, so left alone a killed run
would exit as a success); Ctrl-C raises ``KeyboardInterrupt``, which Lightning turns into ``sys.exit(1)``.
Outside the trainer (reading data, loading models) Python's default SIGTERM ends the process with no cleanup,
leaving the MLflow run RUNNING for ever. :func:`stopping` installs a handler that raises :class:`Stopped`
there and defers to Lightning while Lightning's own handler is installed (Lightning calls the handler it
found as part of its own). :func:`stop_signal` names the signal behind any of these exceptions, so the job
wrapper can end the run KILLED and exit ``128 + signal``, as a shell reports a process killed by it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Stopped(BaseException):  # like KeyboardInterrupt: an ``except Exception`` does not swallow it
    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _raise_stopped(signum: int, _frame) -> None:
    if signal.getsignal(signal.SIGTERM) is not _raise_stopped:
        return  # called by Lightning's handler, which stops the loop at the next batch boundary
    raise Stopped(signum)


@contextmanager
def stopping() -> Iterator[None]:
    """SIGTERM raises :class:`Stopped` for the duration, unless the process already has a SIGTERM handler
    of its own (submitit's, which lets SLURM requeue the job: left as it is)."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_signal(error: BaseException) -> signal.Signals | None:
    """The signal that ``error`` stands for, or None when it is an ordinary error."""
    if isinstance(error, Stopped):
        return signal.Signals(error.signum)
    if any(c.__name__ == "SIGTERMException" for c in type(error).__mro__):  # Lightning's (no import needed)
        return signal.SIGTERM
    if isinstance(error, KeyboardInterrupt) or (
        isinstance(error, SystemExit) and isinstance(error.__context__, KeyboardInterrupt)  # Lightning's sys.exit(1)
    ):
        return signal.SIGINT
    return None
