"""Ctrl-C and SIGTERM during a search or a confirm stage: the running trial is marked failed, the worker exits.

Python runs a signal handler between bytecodes of whatever code is running, and an exception raised inside a
``__del__`` method or a weakref callback (garbage collection during training) is printed as "Exception ignored"
and lost. So the handler also records the signal, and ``raise_if_interrupted``, called after every epoch, raises it
again: an interrupt is never swallowed, at worst it lands one epoch late.
"""
from __future__ import annotations

import contextlib
import signal
import traceback

from common.log import log, verbosity

EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}
_received: list[int] = []


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: Optuna marks the running trial failed (``fail_reason`` interrupted) and re-raises."""

    def __init__(self, number: int):
        super().__init__(signal.Signals(number).name)
        self.signal = number


def _raise_interrupted(number, frame):
    first = not _received
    _received.append(number)
    if first:  # a second signal (Slurm signals a preempted task's every process, srun forwards it too) is only
        raise Interrupted(number)  # recorded: raised, it would cut short the handling of the first one


def remember(interrupt: KeyboardInterrupt) -> None:
    """Record an interrupt that may be lost on its way up (after another process failed the trial, Optuna's
    ``tell`` raises in its place), so that ``raise_if_interrupted`` raises it again; a plain Ctrl-C too, where no
    handler of ours records it (the notebook API)."""
    if not _received:
        _received.append(getattr(interrupt, "signal", signal.SIGINT))


@contextlib.contextmanager
def tracked():
    """While inside, interrupts that ``remember`` records are raised again; none is left for later calls."""
    _received.clear()
    try:
        yield
    finally:
        _received.clear()


def raise_if_interrupted() -> None:
    """Raise the interrupt whose first raise was swallowed; nothing when no signal came."""
    if _received:
        raise Interrupted(_received[-1])


@contextlib.contextmanager
def signals_as_interrupt():
    """While inside, Ctrl-C and SIGTERM raise ``Interrupted`` (and are remembered for ``raise_if_interrupted``)."""
    _received.clear()
    previous = {number: signal.signal(number, _raise_interrupted) for number in EXIT_SIGNAL}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        _received.clear()


def interruptible(command, *args) -> int:
    """``command(*args)``'s exit code, with Ctrl-C and SIGTERM from its first line on recorded and resumable: the
    interrupt's line and exit code (``interrupted_exit``) when one comes."""
    try:
        with signals_as_interrupt():
            return command(*args)
    except KeyboardInterrupt as interrupt:
        return interrupted_exit(interrupt)


def interrupted_exit(interrupt: KeyboardInterrupt) -> int:
    """Say what an interrupt left behind; the exit code 130 (Ctrl-C) or 143 (SIGTERM)."""
    number = getattr(interrupt, "signal", signal.SIGINT)
    if verbosity() > 0:  # where it was interrupted, for -v; by default the line below says all a user needs
        traceback.print_exception(interrupt)
    log.warning(f"interrupted ({signal.Signals(number).name}): the running trials are marked failed; run the same "
          f"command to resume")
    return EXIT_SIGNAL.get(number, 130)
