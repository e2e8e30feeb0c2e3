"""Writing result files so that a crash or Ctrl-C never leaves half of one behind."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_json_atomic(path: str | os.PathLike, document: Any) -> Path:
    """Write ``document`` as indented JSON to a temporary file beside ``path``, then rename it into place."""
    text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(text)
    os.replace(handle.name, path)
    return path
