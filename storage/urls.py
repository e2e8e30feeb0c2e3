"""What a storage URL says, and how it may be shown: its database file, its password hidden, the flag to print.

Pure string work (SQLAlchemy's URL parser only): every layer that prints, stores or passes on a URL uses it, so a
password never reaches output, attributes, notes, files or another process's command line. A password may sit in
the URL's user part (``user:secret@host``, ``%40`` for an ``@`` in it) or, as libpq also reads it, in its query
string (``?password=secret``); both are hidden. An ``@`` left unescaped in a password makes the URL ambiguous
(SQLAlchemy would read part of the password as the host, and name it in its errors): refused, with the fix.
"""
from __future__ import annotations

import os
import re
import urllib.parse
from pathlib import Path

import sqlalchemy

from common.errors import UsageError
from common.log import HIDDEN, SECRET_PARAMETERS, without_passwords

DEFAULT_URL = "sqlite:///search.db"
STORAGE_ENV = "SEARCH_STORAGE"  # the storage URL, so that a password need not be typed on a command line
SCHEMES = ("sqlite", "postgresql")  # SQLAlchemy dialects the tool supports (any PostgreSQL driver)
# SECRET_PARAMETERS, HIDDEN and without_passwords (free text) are common.log's: one list for URLs and free text


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL, or None for other databases and in-memory SQLite."""
    if not url.startswith("sqlite:"):
        return None
    path = url.split("///", 1)[1] if "///" in url else ""
    return Path(path.split("?", 1)[0]) if path and path != ":memory:" else None


_ADDRESS = re.compile(r"^(?P<scheme>[\w+.-]+)://(?:(?P<user>.*)@)?(?P<rest>[^@]*)$", re.DOTALL)


def journal_path(url: str) -> Path | None:
    """The log file of a ``journal:///PATH`` URL (``journal:////abs/path`` for an absolute one), or None."""
    if not url.startswith("journal:"):
        return None
    path = url.split("///", 1)[1] if "///" in url else ""
    if not path:
        raise UsageError(f"storage: {url} names no file; use journal:///FILE (journal:////abs/FILE)")
    return Path(path)


def _split(url: str) -> tuple[str, str, str, str]:
    """``(scheme, user part, host and path, query)`` of ``scheme://user:secret@host/db?query``. The user part ends
    at the *last* ``@``, so a password holding an unescaped ``@`` (or ``?``, ``/``) stays in it, never in the host.
    A SQLite URL has no user part (its path may hold an ``@``)."""
    if url.startswith("sqlite"):
        scheme, _, rest = url.partition("://")
        rest, _, query = rest.partition("?")
        return scheme, "", rest, query
    match = _ADDRESS.match(url)
    if not match:
        return "", "", url, ""
    rest, _, query = match["rest"].partition("?")
    return match["scheme"], match["user"] or "", rest, query


def _hide_query(query: str) -> str:
    parts = []
    for item in query.split("&") if query else []:
        name, equals, _ = item.partition("=")
        secret = urllib.parse.unquote_plus(name).lower() in SECRET_PARAMETERS  # ?%70assword= is a password too
        parts.append(f"{name}={HIDDEN}" if equals and secret else item)
    return "&".join(parts)


def redacted(url: str) -> str:
    """The URL with every password replaced by ``***`` (the user part's and the query string's), for anything
    a person or another process may read."""
    scheme, user, rest, query = _split(url)
    if not scheme:
        return url
    if "/" in user or "?" in user:  # an '@' after the host (``?password=p@ss``): which part is the secret is
        return f"{scheme}://{HIDDEN}"  # unclear, so nothing after the scheme is shown
    if ":" in user:
        user = user.split(":", 1)[0] + ":" + HIDDEN
    shown = f"{scheme}://{user + '@' if user else ''}{rest}"
    return shown + (f"?{_hide_query(query)}" if query else "")


def has_secret(url: str) -> bool:
    return redacted(url) != url


def storage_flag(url: str) -> str:
    """``--storage URL`` for a command shown to the user; ``--storage "$SEARCH_STORAGE"`` when the URL carries a
    password, which must not be printed or stored."""
    return f'--storage "${STORAGE_ENV}"' if has_secret(url) else f"--storage {url}"


def engine_url(url: str) -> str:
    """The URL SQLAlchemy is given: checked (a supported database, no ambiguous ``@``), with a query-string
    password moved into the URL's password, where SQLAlchemy hides it in every repr and message. UsageError for a
    URL it cannot be; its messages show the URL redacted."""
    scheme, user, _, query = _split(url)
    if scheme == "sqlite":
        return url
    if scheme.split("+")[0] not in SCHEMES:
        raise UsageError(f"storage: {redacted(url)} is not a database this tool supports; use sqlite:///FILE "
                         f"(one machine), postgresql+psycopg://USER@HOST/DB (several) or journal:///FILE (a shared "
                         f"file system)")
    if "@" in user:
        raise UsageError(f"storage: the password in {redacted(url)} holds an '@': write it as %40 (and ':' as "
                         f"%3A, '/' as %2F)")
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:
        raise UsageError(f"storage: {redacted(url)} is not a URL SQLAlchemy can read") from None
    secrets = {name: value for name, value in parsed.query.items() if name.lower() == "password"}
    if secrets:
        value = list(secrets.values())[-1]  # ?Password= or ?%70assword= too: make_url unquoted the names
        value = value if isinstance(value, str) else value[-1]
        parsed = parsed.difference_update_query(list(secrets)).set(password=value)  # make_url unquoted it
    return parsed.render_as_string(hide_password=False)


def default_url() -> str:
    """``$SEARCH_STORAGE`` when set, else ``search.db`` in the working folder: every command's ``--storage``."""
    return os.environ.get(STORAGE_ENV, DEFAULT_URL)


def beside_storage(storage_url: str, folder: str | os.PathLike | None, default_name: str) -> Path:
    """``folder`` when given, else ``default_name`` beside a SQLite or journal file, else in the working folder."""
    if folder:
        return Path(folder)
    database = sqlite_path(storage_url) or journal_path(storage_url)
    return (database.parent if database is not None else Path()) / default_name


def scrub(text: str, url: str) -> str:
    """``text`` (a driver's error message) with the URL's password, in any spelling, taken out."""
    _, user, _, query = _split(url)
    secrets = [user.split(":", 1)[1]] if ":" in user else []
    secrets += [item.partition("=")[2] for item in query.split("&")
                if urllib.parse.unquote_plus(item.partition("=")[0]).lower() in SECRET_PARAMETERS]
    for secret in filter(None, secrets):
        for spelling in {secret, urllib.parse.unquote(secret)}:
            text = text.replace(spelling, HIDDEN)
    return without_passwords(text)
