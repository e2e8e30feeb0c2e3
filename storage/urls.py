"""What a storage URL says, and how it may be shown: its database file, its password hidden, the flag to print.

Pure string work (SQLAlchemy's URL parser only): every layer that prints, stores or passes on a URL uses it, so a
password never reaches output, attributes, notes, files or another process's command line.
"""
from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy

DEFAULT_URL = "sqlite:///search.db"
STORAGE_ENV = "SEARCH_STORAGE"  # the storage URL, so that a password need not be typed on a command line


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL, or None for other databases and in-memory SQLite."""
    if not url.startswith("sqlite:"):
        return None
    path = url.split("///", 1)[1] if "///" in url else ""
    return Path(path.split("?", 1)[0]) if path and path != ":memory:" else None


def redacted(url: str) -> str:
    """The URL with its password replaced by ``***``, for anything a person or another process may read."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: hide whatever stands between ':' and '@'
        scheme, _, rest = url.partition("://")
        credentials, at, host = rest.rpartition("@")
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}" if at else url


def storage_flag(url: str) -> str:
    """``--storage URL`` for a command shown to the user; ``--storage "$SEARCH_STORAGE"`` when the URL carries a
    password, which must not be printed or stored."""
    try:
        secret = sqlalchemy.engine.make_url(url).password is not None
    except Exception:
        secret = redacted(url) != url
    return f'--storage "${STORAGE_ENV}"' if secret else f"--storage {url}"


def default_url() -> str:
    """``$SEARCH_STORAGE`` when set, else ``search.db`` in the working folder: every command's ``--storage``."""
    return os.environ.get(STORAGE_ENV, DEFAULT_URL)


def beside_storage(storage_url: str, folder: str | os.PathLike | None, default_name: str) -> Path:
    """``folder`` when given, else ``default_name`` beside a SQLite file, else in the working folder."""
    if folder:
        return Path(folder)
    database = sqlite_path(storage_url)
    return (database.parent if database is not None else Path()) / default_name
