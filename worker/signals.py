"""SIGTERM and SIGINT: a clean stop at any moment.

The handler is installed before anything slow happens (worker/entry.py, the
console script's entry point), so a signal during start-up, the embedded
server's start or a migration is never the default "die at once". What a
signal does depends on what the process is doing:

- by default it is only recorded, and the code stops at its next safe point
  (``stop_requested()``): a step that must not be cut in the middle (an
  initdb, a migration, writing an outcome to MLflow) finishes first;
- inside ``raising(SomeException)`` (a wait, a training) it raises that
  exception at once, so the caller unwinds and cleans up.
"""

from __future__ import annotations

import contextlib
import signal

_received: str | None = None
_raising: type[BaseException] | None = None


class Stop(BaseException):
    """Raised where the process may stop at once (a BaseException, so that
    no ``except Exception`` on the way swallows it)."""


def install() -> None:
    signal.signal(signal.SIGTERM, _handle)
    signal.signal(signal.SIGINT, _handle)


def _handle(signum, frame) -> None:
    global _received
    first = _received is None
    _received = signal.Signals(signum).name
    if first:
        import logging

        logging.getLogger("worker").info("received %s: stopping", _received)
    if _raising is not None:
        raise _raising()


def stop_requested() -> str | None:
    """The signal received, if any (e.g. "SIGTERM")."""
    return _received


@contextlib.contextmanager
def raising(exception: type[BaseException] = Stop):
    """Within this block a signal (or one received before it) raises
    ``exception``."""
    global _raising
    previous = _raising
    _raising = exception
    try:
        if _received is not None:
            raise exception()
        yield
    finally:
        _raising = previous


@contextlib.contextmanager
def deferred():
    """Within this block a signal is only recorded: the step finishes."""
    global _raising
    previous = _raising
    _raising = None
    try:
        yield
    finally:
        _raising = previous


def reset() -> None:
    """Forget a received signal (tests that run the worker in-process)."""
    global _received, _raising
    _received = None
    _raising = None
