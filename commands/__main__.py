"""``python -m commands``: the same as ``shortcut-search``."""
import sys

from commands import main

sys.exit(main())
