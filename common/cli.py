"""What every ``shortcut-search`` command shares: TensorFlow's settings, exit codes, argparse helpers with ``-q`` /
``-v`` (``common.log`` says what they change)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import traceback
import warnings
from typing import Callable, Sequence

from common.errors import UsageError
from common.log import VERBOSITY_ENV, scrub_handlers, verbosity_in, without_passwords
from common.machine import prepare_tensorflow

EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting, so errors stay one line."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # --stor would pass a check meant for --storage
        super().__init__(*args, **kwargs)
        talk = self.add_mutually_exclusive_group()
        talk.add_argument("-v", "--verbose", action="count", default=0,
                          help="say more: Optuna's own log, TensorFlow's start-up messages, tracebacks (-vv: more)")
        talk.add_argument("-q", "--quiet", action="store_true",
                          help="say less: no progress bar or per-trial lines; results, warnings and errors only")

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        raise UsageError(without_passwords(message))


def run_command(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a command's ``main`` and map UsageError to one line on stderr and exit code 2.

    TensorFlow's settings and the verbosity (-q / -v) are made first, so they hold wherever the command imports
    TensorFlow, and in its worker processes.
    """
    level = verbosity_in(sys.argv[1:] if argv is None else argv)
    os.environ[VERBOSITY_ENV] = str(level)
    logging.basicConfig(level=logging.DEBUG if level > 1 else logging.INFO if level > 0 else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    scrub_handlers(logging.getLogger())
    prepare_tensorflow(verbose=level > 0)
    previous, warnings.showwarning = warnings.showwarning, _scrubbed_warning
    previous_thread_hook, threading.excepthook = threading.excepthook, _scrubbed_thread_exception
    try:
        return main(argv)
    except UsageError as error:
        message = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        print(f"error: {without_passwords(message)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:  # a failure of the run, not of the input: its traceback, which may quote a
        # storage URL (a driver's message, a repr), scrubbed as every other line
        sys.stderr.write(without_passwords("".join(traceback.format_exception(error))))
        return 1
    finally:
        warnings.showwarning, threading.excepthook = previous, previous_thread_hook


def _scrubbed_thread_exception(hook_args) -> None:
    """``threading.excepthook`` (a heartbeat thread's error) with every password taken out of its traceback."""
    if hook_args.exc_type is SystemExit:
        return
    text = "".join(traceback.format_exception(hook_args.exc_type, hook_args.exc_value, hook_args.exc_traceback))
    name = hook_args.thread.name if hook_args.thread is not None else "a thread"
    sys.stderr.write(without_passwords(f"Exception in thread {name}:\n{text}"))


def _scrubbed_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` with every password taken out of the line."""
    text = warnings.formatwarning(message, category, filename, lineno, line)
    try:
        (file or sys.stderr).write(without_passwords(text))
    except OSError:
        pass


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value
