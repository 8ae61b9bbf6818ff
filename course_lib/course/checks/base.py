"""What every checker shares: a time limit and a failure that names the function."""
from __future__ import annotations

import contextlib
import signal
import threading


class CheckTimeout(AssertionError):
    """The learner's function ran longer than the check allows."""


@contextlib.contextmanager
def time_limit(seconds: float, what: str):
    """Raise :class:`CheckTimeout` if the block runs longer than ``seconds`` (Unix main thread;
    elsewhere the block runs without a limit)."""
    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def stop(signum, frame):
        raise CheckTimeout(f"{what} took longer than {seconds:g} s: look for an endless loop "
                           "or work that grows with the dataset instead of the episode")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _fail(name: str, message: str) -> None:
    raise AssertionError(f"{name}: {message}")


def _fail_naming_the_mistake(name: str, matches, mistakes, otherwise: str) -> None:
    """Fail with the hint of the first ``(wrong answer, hint)`` of ``mistakes`` for which ``matches(wrong answer)``
    holds, else with ``otherwise``: how a checker names a typical mistake."""
    for wrong, hint in mistakes:
        if matches(wrong):
            _fail(name, hint)
    _fail(name, otherwise)


class PartialCredit(AssertionError):
    """A check that is partly right: the grader awards ``fraction`` of the check cell's points.

    Raised like any failure (so a self-check cell still shows the message); ``fraction`` is in [0, 1].
    """

    def __init__(self, fraction: float, message: str) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError(f"a partial credit is a fraction in [0, 1], got {fraction}")
        super().__init__(message)
        self.fraction = fraction


def _partial(name: str, fraction: float, message: str) -> None:
    raise PartialCredit(fraction, f"{name}: {message}")
