import os

from common.machine import prepare_tensorflow

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
prepare_tensorflow()  # as every command does: oneDNN on x86, quiet start-up; the tests' children inherit it

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """No test reads or writes the user's Keras cache or the working directory's search.db."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.chdir(tmp_path)
