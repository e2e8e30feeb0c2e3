"""Faults from outside the code (issue 27): a damaged file in the artifact store is never handed over, a
password never reaches output whatever the path, bad input is refused before any work, and the exported network
loads without the project."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import warnings

import numpy as np
import optuna
import pytest

import commands as cli
from commands import export
from commands import run as search_run
from common.cli import ArgumentParser, run_command
from common.log import SECRET_PARAMETERS, log
from conftest import TINY
from storage.artifacts import CHECKSUM_PREFIX, kept_model
from storage.urls import redacted, scrub


@pytest.fixture(scope="module")
def kept_study(tmp_path_factory):
    """A study folder (search.db and search-artifacts/) after a two-trial search that kept one model: the
    baseline and the first paper schedule, which holds it."""
    folder = tmp_path_factory.mktemp("kept")
    url = f"sqlite:///{folder / 'search.db'}"
    assert search_run.main([*TINY, "--trials", "2", "--baseline-seeds", "0", "--keep-models", "1", "--pruner",
                            "none", "--checkpoint-dir", "none", "--storage", url]) == 0
    with sqlite3.connect(folder / "search.db") as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return folder


def _copy(kept_study, tmp_path):
    folder = tmp_path / "study"
    shutil.copytree(kept_study, folder)
    url = f"sqlite:///{folder / 'search.db'}"
    study = optuna.load_study(study_name="digits-resnet8", storage=url)
    artifact = next(kept_model(t) for t in study.trials if kept_model(t))
    return folder, url, artifact


def _export(url, folder, name="best"):
    return run_command(export.main, ["--storage", url, "--output", str(folder / f"{name}.json"), "--model",
                                     str(folder / f"{name}.keras")])


def test_a_truncated_model_in_the_artifact_store_is_refused_by_export(kept_study, tmp_path, capsys):
    folder, url, artifact = _copy(kept_study, tmp_path)
    stored = folder / "search-artifacts" / artifact
    stored.write_bytes(stored.read_bytes()[:100])
    before = sorted(path.name for path in folder.iterdir())
    capsys.readouterr()
    assert _export(url, folder) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: model:") and "damaged" in err[0], err
    assert sorted(path.name for path in folder.iterdir()) == before  # no best.json, best.keras or temporary file


def test_a_model_kept_without_a_checksum_is_checked_by_reading_it(kept_study, tmp_path, capsys):
    folder, url, artifact = _copy(kept_study, tmp_path)
    with sqlite3.connect(folder / "search.db") as connection:  # as an earlier version kept it
        assert connection.execute("DELETE FROM trial_system_attributes WHERE key = ?",
                                  (CHECKSUM_PREFIX + artifact,)).rowcount == 1
    assert _export(url, folder) == 0
    assert "earlier version" in capsys.readouterr().err and (folder / "best.keras").is_file()
    stored = folder / "search-artifacts" / artifact
    stored.write_bytes(stored.read_bytes()[:-200])  # the zip's directory cut off
    assert _export(url, folder, "again") == 2
    assert "without a checksum" in capsys.readouterr().err and not (folder / "again.json").exists()
    assert not (folder / "again.keras").exists()


LOAD_WITHOUT_THE_PROJECT = """
import json, sys
import keras, numpy as np
model = keras.saving.load_model(sys.argv[1])
images = np.random.default_rng(0).integers(0, 256, (4, *model.input_shape[1:]), dtype=np.uint8)
project = sorted(m for m in sys.modules if m.split(".")[0] in ("common", "models", "training", "storage", "search"))
print(json.dumps({"logits": model.predict(images, verbose=0).tolist(), "project": project}))
"""


def test_the_exported_model_loads_and_predicts_without_the_project(kept_study, tmp_path):
    import keras

    import training.loop  # noqa: F401 - registers the project's layers, for the training model below

    folder, url, artifact = _copy(kept_study, tmp_path)
    assert _export(url, folder) == 0
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-I", "-c", LOAD_WITHOUT_THE_PROJECT, str(folder / "best.keras")],
                          cwd=outside, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["project"] == []
    shutil.copy(folder / "search-artifacts" / artifact, tmp_path / "training.keras")
    training_model = keras.saving.load_model(tmp_path / "training.keras")  # optimizer state and all
    assert training_model.optimizer is not None and training_model.get_layer("augment") is not None
    images = np.random.default_rng(0).integers(0, 256, (4, *training_model.input_shape[1:]), dtype=np.uint8)
    expected = np.asarray(training_model(images, training=False))
    np.testing.assert_allclose(np.asarray(loaded["logits"]), expected, rtol=1e-5, atol=1e-5)


SPELLINGS = [*SECRET_PARAMETERS, "%70assword", "PassWord", "p%61sswd", "PWD"]


@pytest.mark.parametrize("name", SPELLINGS)
def test_a_password_in_a_mistyped_flag_never_shows(name, capsys):
    url = f"postgresql+psycopg://u@h/db?{name}=SECRET&sslmode=require"
    assert cli.main(["export", "--storge", url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unrecognized arguments") and "SECRET" not in err and "***" in err
    assert "SECRET" not in redacted(url) and "SECRET" not in scrub(f"failed: {url}", url)
    # the flag and its value in one word (--storge=URL), first in the query, through the dispatcher too
    for argv in (["export", f"--storge={url}"], [f"--storage={url}"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert "SECRET" not in err and "***" in err, err


def test_a_password_never_shows_in_warnings_log_lines_or_tracebacks(capfd):
    import threading

    from common.log import quiet_optuna

    url = "postgresql://me:hunter2@db.example/search?%70assword=SECRET"

    def fail():
        raise RuntimeError(f"a heartbeat thread quotes {url}")

    def main(argv):
        ArgumentParser().parse_args(argv)
        quiet_optuna()
        log.warning(f"warning: {url}")
        warnings.warn(f"a library's warning about {url}")
        optuna.logging.get_logger("optuna.storages").error(f"Optuna's own log line about {url}")
        thread = threading.Thread(target=fail)
        thread.start()
        thread.join()
        raise RuntimeError(f"the driver quotes {url}")

    import logging

    handler = logging.StreamHandler(sys.stderr)  # Optuna's own handler, bound to this test's stderr
    logging.getLogger("optuna").addHandler(handler)
    try:
        assert run_command(main, ["-v"]) == 1
    finally:
        logging.getLogger("optuna").removeHandler(handler)
    err = capfd.readouterr().err
    for said in ("warning: postgresql", "a library's warning", "Optuna's own log line", "a heartbeat thread quotes",
                 "Traceback", "RuntimeError: the driver quotes"):
        assert said in err, said
    assert err.count("***") >= 10 and "hunter2" not in err and "SECRET" not in err


def test_the_command_without_arguments_prints_one_usage_line(capsys):
    assert cli.main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("usage: shortcut-search {run,")


def test_serve_never_hands_over_a_damaged_artifact(kept_study, tmp_path, capsys):
    from common.errors import UsageError
    from storage import open_storage
    from storage.artifacts import VerifyingStore

    folder, url, artifact = _copy(kept_study, tmp_path)
    store = VerifyingStore(folder / "search-artifacts", open_storage(url, reader=True))
    intact = (folder / "search-artifacts" / artifact).read_bytes()
    with store.open_reader(artifact) as reader:
        assert reader.read() == intact
    (folder / "search-artifacts" / artifact).write_bytes(intact[:100])
    with pytest.raises(UsageError, match="damaged"):
        store.open_reader(artifact)
    assert capsys.readouterr().err.startswith("error: artifact ")


def test_workers_finishing_together_each_print_their_own_count():
    from search.progress import finished_ordinal

    study = optuna.create_study()
    first, second = study.ask(), study.ask()  # two workers' trials, running at once
    study.tell(first, 0.5)
    study.tell(second, 0.6)
    counts = [finished_ordinal(study, trial) for trial in study.trials]  # both read after both finished
    assert counts == [1, 2]


def test_a_warning_during_a_progress_bar_stands_on_its_own_line(capsys):
    import re

    from tqdm import tqdm

    bar = tqdm(total=2, file=sys.stderr)  # as the search's bar, on the stderr of the moment
    bar.update(1)
    log.warning("warning: discarded the checkpoint state.npz: it cannot be read; the run starts over")
    bar.close()
    lines = re.split(r"[\r\n]", capsys.readouterr().err)
    assert any(line.startswith("warning: discarded the checkpoint") for line in lines), lines


def test_the_api_refuses_a_zero_length_database_file_untouched(tmp_path):
    from commands import api
    from common.errors import UsageError
    from search.config import SearchConfig

    (tmp_path / "empty.db").touch()
    with pytest.raises(UsageError, match="is an empty file"):
        api.search(SearchConfig(dataset="digits", depth=8, epochs=1, trials=1,
                                storage=f"sqlite:///{tmp_path}/empty.db"))
    assert (tmp_path / "empty.db").stat().st_size == 0 and sorted(p.name for p in tmp_path.iterdir()) == ["empty.db"]
