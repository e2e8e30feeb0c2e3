"""Start optuna-dashboard on 127.0.0.1 for a study storage (the default search.db in this folder).

    shortcut-search serve [--storage sqlite:///search.db] [--port 8080]

The same as `optuna-dashboard sqlite:///search.db --artifact-dir search-artifacts`, bound to loopback; the study's
schedules figure and note appear on its page while a search runs. Reading a SQLite study while workers write is safe
(WAL journal); a journal file (``journal:///FILE``) is replayed without its lock, and anything the dashboard writes
(a note from its page) takes the workers' lock (``storage.journal``), which plain ``optuna-dashboard FILE`` does not.
A file of the artifact store that is not the one the study recorded (its size and SHA-256) is not served: the
download fails and one ``error:`` line names it.
"""
from __future__ import annotations

import argparse
import socket
import sys
from typing import Sequence

from optuna_dashboard import run_server

from commands.flags import add_artifact_dir_argument, add_storage_argument
from common.cli import ArgumentParser, positive_int, run_command
from common.errors import UsageError
from common.log import result
from storage.artifacts import ARTIFACT_FOLDER, VerifyingStore
from storage import open_storage
from storage.urls import beside_storage, redacted


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shortcut-search serve", description=__doc__.split("\n\n")[0])
    add_storage_argument(parser)
    parser.add_argument("--port", type=port, default=8080, help="port on 127.0.0.1, 1-65535 (default 8080)")
    add_artifact_dir_argument(parser)
    return parser


def port(text: str) -> int:
    number = positive_int(text)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {number}")
    return number


def check_free(number: int) -> None:
    """UsageError when 127.0.0.1:``number`` is taken, before the dashboard starts and fails with a traceback."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", number))
        except OSError as error:
            raise UsageError(f"port: 127.0.0.1:{number} is not free ({error.strerror}); choose another --port") \
                from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_free(args.port)
    storage = open_storage(args.storage, heartbeat_seconds=None, create=False, reader=True)
    folder = beside_storage(args.storage, args.artifact_dir, ARTIFACT_FOLDER)
    store = VerifyingStore(folder, storage) if folder.is_dir() else None  # a damaged file is never served
    result(f"optuna-dashboard for {redacted(args.storage)} at http://127.0.0.1:{args.port}/ (Ctrl-C stops it)")
    try:
        run_server(storage, host="127.0.0.1", port=args.port, artifact_store=store)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
