"""What the tool says, through the ``logging`` module, and how much (``-q`` / ``-v``).

Levels: progress (a study opened, one line per run, the next command to type) is INFO; results (what was written,
the best trial, a table) are RESULT, between INFO and WARNING; warnings and errors are what they are. ``-q``
shows RESULT and up, the default INFO and up, ``-v`` also Optuna's own INFO lines, TensorFlow's start-up messages
and tracebacks, ``-vv`` DEBUG. Messages go to the stderr of the moment they are written (a progress bar's, a
test's capture), unformatted: they read as the tool's own lines. The level travels to worker processes in
``$SHORTCUT_SEARCH_VERBOSITY``.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import urllib.parse
import warnings
from typing import Sequence

from tqdm import tqdm

VERBOSITY_ENV = "SHORTCUT_SEARCH_VERBOSITY"  # -1 (-q), 0, 1.. (-v): set by common.cli for a command and its workers
RESULT = 25
# every spelling of a password a storage URL may carry in its query string (libpq's, SQLAlchemy's, drivers');
# ``storage.urls`` hides the same ones, so free text and URLs are scrubbed alike
SECRET_PARAMETERS = ("password", "passwd", "pwd", "sslpassword", "pgpassword", "secret", "token", "key")
HIDDEN = "***"
logging.addLevelName(RESULT, "RESULT")
log = logging.getLogger("shortcut_search")


def verbosity() -> int:
    """-1 with -q, 0 by default, 1 or more with -v (as the running command, or the command that started this
    worker process, was given)."""
    try:
        return int(os.environ.get(VERBOSITY_ENV, "0"))
    except ValueError:
        return 0


def verbosity_in(argv: Sequence[str]) -> int:
    """-v / -vv / --verbose and -q / --quiet among a command's arguments, read before anything is imported."""
    level = 0
    for arg in argv:
        if arg == "--":
            break
        if arg in ("-q", "--quiet"):
            level = -1
        elif arg == "--verbose" or (arg.startswith("-v") and set(arg[1:]) == {"v"}):
            level = max(level, 0) + (1 if arg == "--verbose" else len(arg) - 1)
    return level


def threshold() -> int:
    """The lowest level shown at the current verbosity."""
    level = verbosity()
    return RESULT if level < 0 else logging.DEBUG if level > 1 else logging.INFO


_USER_PART = re.compile(r"(://[^\s:/@]*:)\S*@")  # ://user:SECRET@ (up to the last @ of the word)
_NAME = re.compile(r"(?P<name>[\w%+.-]+)=")  # every name= in the text, wherever it stands (--storage=URL?password=)
_VALUE = re.compile(r"'[^']*'|\"[^\"]*\"|['\"]?[^&\s'\"]*")  # to the next parameter or space; quoted, whole


def without_passwords(text: str) -> str:
    """``text`` with what looks like a URL's password replaced by ``***``: the user part's (``://user:SECRET@``)
    and a query parameter named as any of ``SECRET_PARAMETERS``, in any case or percent-escaped
    (``?%70assword=``, ``&PWD=``). For free text: argparse's errors (which repeat a refused argument), log lines,
    warnings and tracebacks."""
    text = _USER_PART.sub(rf"\1{HIDDEN}@", text)

    secrets = []  # (start, end) of every secret parameter's value
    for name in _NAME.finditer(text):
        for start in range(name.start("name"), name.end("name")):  # --storage=...&password=: the name's tail too
            if urllib.parse.unquote_plus(text[start:name.end("name")]).lower() in SECRET_PARAMETERS \
                    and (start == 0 or not text[start - 1].isalnum()):
                secrets.append((name.end(), _VALUE.match(text, name.end()).end()))
                break
    for start, end in reversed(secrets):
        text = text[:start] + HIDDEN + text[end:]
    return text


class Scrub(logging.Filter):
    """A handler's filter that takes every password out of a record's message (and its traceback) before it is
    written: for the handlers of other libraries' loggers (Optuna's, the root logger's), which the tool's own
    handler does not see."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = without_passwords(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = without_passwords(logging.Formatter().formatException(record.exc_info))
        return True


def scrub_handlers(logger: logging.Logger) -> None:
    """Put ``Scrub`` on every handler of ``logger`` (once)."""
    for handler in logger.handlers:
        if not any(isinstance(f, Scrub) for f in handler.filters):
            handler.addFilter(Scrub())


def result(message: str) -> None:
    """A result line: shown even with -q."""
    log.log(RESULT, message)


def duration(seconds: float) -> str:
    """``42 s``, ``17 min``, ``3.4 h``, ``2.1 days``: a time a person reads."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 172800 else f"{seconds / 86400:.1f} days"


def quiet_optuna() -> None:
    """Optuna's own logging: INFO with -v; otherwise ERROR, since the tool reports each trial itself (a failed
    trial's warning would repeat its line, with a traceback on top)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if verbosity() > 0 else optuna.logging.ERROR)
    scrub_handlers(logging.getLogger("optuna"))


@contextlib.contextmanager
def without_experimental_warnings():
    """Optuna's "experimental" warnings silenced while inside: said to every user on every call, about APIs the
    tool uses on purpose (metric names, the stale-trial check)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


class _CurrentStderr(logging.Handler):
    """Writes to whatever ``sys.stderr`` is when a message comes, at the verbosity of that moment."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < threshold():
            return
        try:
            stream = sys.stderr
            with tqdm.external_write_mode(file=stream):  # a progress bar on screen steps aside for the line
                stream.write(without_passwords(self.format(record)) + "\n")
                stream.flush()
        except Exception:
            self.handleError(record)


if not log.handlers:
    log.addHandler(_CurrentStderr())
    log.setLevel(logging.DEBUG)  # the handler decides
    log.propagate = False
