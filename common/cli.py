"""What every ``python -m ...`` command shares: TensorFlow's settings, exit codes, argparse helpers."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from common.errors import UsageError
from common.machine import prepare_tensorflow

EXIT_USAGE = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting, so errors stay one line."""

    invoked_as: str | None = None  # set by ``shortcut-search``: its subcommand replaces "python -m ..." in usage

    def __init__(self, *args, **kwargs):
        if ArgumentParser.invoked_as:
            kwargs["prog"] = ArgumentParser.invoked_as
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        raise UsageError(message)


def run_command(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> int:
    """Run a command's ``main`` and map UsageError to one line on stderr and exit code 2.

    TensorFlow's settings are made first, so they hold wherever the command imports it (and in its children).
    """
    prepare_tensorflow()
    try:
        return main(argv)
    except UsageError as error:
        message = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value
