"""One worker process of ``search.run --workers K`` (started by it; not meant to be run by hand).

    python -m search.worker RANK < CONFIG_JSON

The configuration comes on standard input, not on the command line: it holds the storage URL, password included.
"""
from __future__ import annotations

import json
import sys

from search.config import SearchConfig
from search.run import search_worker


def main(argv: list[str]) -> int:
    rank, payload = int(argv[0]), json.loads(sys.stdin.read())
    epochs = payload.pop("epochs_resolved")
    payload["scale_range"] = tuple(payload["scale_range"])
    return search_worker(SearchConfig(**payload), epochs, rank=rank)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
