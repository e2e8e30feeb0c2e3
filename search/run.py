"""``python -m search.run``: an alias of ``shortcut-search run``, the name the design card and older notes use.

The command lives in ``commands/run.py``; this file only hands its arguments to the one CLI. It is the one module
under ``search/`` that imports ``commands`` (the architecture test names it), and it is never imported.
"""
import sys

from commands import main

if __name__ == "__main__":
    sys.exit(main(["run", *sys.argv[1:]]))
