"""shortcut-search: every command of the tool under one name, e.g. ``shortcut-search run --depth 32``.

The tool's entry point (``[project.scripts]`` in pyproject.toml). Each subcommand is its module's own command
(same flags, same help, same exit codes): ``shortcut-search run`` is ``python -m commands.run``;
``python -m search.run`` stays an alias of it. The modules are imported by name when their command runs, so
``--help`` of one command loads nothing of the others.
"""
from __future__ import annotations

import importlib
import sys
from typing import Sequence

from common.cli import EXIT_USAGE, run_command
from common.log import without_passwords

__all__ = ["COMMANDS", "main", "usage"]

COMMANDS = {
    "run": "commands.run",
    "slurm": "commands.slurm",
    "confirm": "commands.confirm",
    "export": "commands.export",
    "evaluate": "commands.evaluate",
    "train": "commands.train",
    "report": "commands.report",
    "serve": "commands.serve",
}


def usage() -> str:
    """The top-level help: one line per subcommand, the first line of its module's description."""
    lines = ["usage: shortcut-search COMMAND [ARGS ...]   (shortcut-search COMMAND --help for its flags)", "",
             __doc__.split("\n\n")[0], "", "commands:"]
    for name, module in COMMANDS.items():
        summary = (importlib.import_module(module).__doc__ or "").strip().splitlines()[0]
        lines.append(f"  {name:<9} {summary}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:  # one line, not the whole help
        print(f"usage: shortcut-search {{{','.join(COMMANDS)}}} [ARGS ...]   (shortcut-search --help says what "
              f"each does)", file=sys.stderr)
        return EXIT_USAGE
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(without_passwords(f"error: unknown command {name!r}; choose one of {', '.join(COMMANDS)}"),
              file=sys.stderr)
        return EXIT_USAGE
    return run_command(importlib.import_module(COMMANDS[name]).main, rest)  # its parser is "shortcut-search NAME"


if __name__ == "__main__":
    sys.exit(main())
