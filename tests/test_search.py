"""The search service end to end, on real (tiny) training runs and real SQLite files."""
import hashlib
import json
import shutil
import sqlite3

import optuna
import pytest
from optuna.trial import TrialState, create_trial
from optuna.distributions import FloatDistribution

from common.cli import run_command
from search import evaluate, export
from search import run as search_run
from search.config import SearchConfig
from search.study import open_study
from storage.rdb import open_storage

TINY = ["--depth", "8", "--dataset", "digits", "--subset", "200", "--epochs", "1", "--batch-size", "64",
        "--precision", "float32", "--heartbeat", "5"]
PRESETS_IN_ORDER = ["baseline", "paper-c10-r32", "paper-c10-r56", "paper-c100-r32", "paper-c100-r56"]


def load(url, name="digits-resnet8"):
    return optuna.load_study(study_name=name, storage=url)


def test_search_persists_resumes_to_the_target_and_never_repeats(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    # interrupted early: the timeout lets the first trial finish, then stops
    assert search_run.main([*TINY, "--trials", "6", "--storage", url, "--timeout", "0.1"]) == 0
    first = load(url).get_trials()
    done_first = [t for t in first if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert 1 <= len(done_first) < 6
    # the same command resumes to the target
    assert search_run.main([*TINY, "--trials", "6", "--storage", url]) == 0
    study = load(url)
    trials = study.get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 6
    assert [t.number for t in trials] == list(range(len(trials)))
    for before in done_first:  # finished trials are untouched
        after = trials[before.number]
        assert (after.state, after.value, after.params) == (before.state, before.value, before.params)
    # warm start: baseline, this dataset's paper schedule, the other three, each exactly once, in that order
    presets = [t.user_attrs.get("preset") for t in trials if "preset" in t.user_attrs]
    assert presets == PRESETS_IN_ORDER
    baseline = trials[0]
    assert baseline.state == TrialState.COMPLETE and baseline.user_attrs["values"] == [1.0, 1.0, 1.0]
    for trial in finished:
        assert len(trial.user_attrs["values"]) == 3 and trial.user_attrs["x"] == [1.0, 8.0, 15.0]
        assert {"family", "schedule", "seed", "epochs_run", "wall_seconds", "images_per_second"} <= set(
            trial.user_attrs)
    assert study.user_attrs["settings"]["depth"] == 8 and "optuna" in study.user_attrs["versions"]
    # a third run of the same command has nothing left to do
    assert search_run.main([*TINY, "--trials", "6", "--storage", url]) == 0
    assert len(load(url).get_trials()) == len(trials)
    err = capsys.readouterr().err
    assert "trial    0 baseline = constant(value=1)" in err and "best" in err and "search.export" in err


def test_clearly_worse_trials_are_pruned_but_never_the_baseline(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    argv = [*TINY, "--epochs", "2", "--pruner", "median", "--family", "linear", "--trials", "9", "--storage", url]
    config = search_run.config_from_args(argv)
    study = open_study(open_storage(url), config, epochs=2)
    # five reference curves that no real run on 200 images reaches: anything real is clearly worse
    for value in (0.97, 0.98, 0.99, 0.985, 0.975):
        study.add_trial(create_trial(
            params={"linear_start": 1.0, "linear_end": 1.0},
            distributions={"linear_start": FloatDistribution(0.5, 1.5), "linear_end": FloatDistribution(0.5, 1.5)},
            value=value, intermediate_values={1: value, 2: value}, user_attrs={"reference": True}))
    assert search_run.main(argv) == 0
    trials = load(url).get_trials()
    real = [t for t in trials if not t.user_attrs.get("reference")]
    baseline = next(t for t in real if t.user_attrs.get("preset") == "baseline")
    assert baseline.state == TrialState.COMPLETE and baseline.user_attrs["epochs_run"] == 2
    pruned = [t for t in real if t.state == TrialState.PRUNED]
    assert pruned, [(t.number, t.state, t.intermediate_values) for t in real]
    for trial in pruned:
        assert trial.user_attrs["pruned_at_epoch"] == 1 and list(trial.intermediate_values) == [1]
        assert trial.intermediate_values[1] < 0.97


def test_export_and_evaluate(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    assert search_run.main([*TINY, "--trials", "3", "--storage", url, "--pruner", "none"]) == 0
    out = tmp_path / "best.json"
    assert export.main(["--storage", url, "--study", "digits-resnet8", "--output", str(out)]) == 0
    document = json.loads(out.read_text())
    study = load(url)
    assert document["format"] == "resnet-shortcut-schedule" and document["depth"] == 8
    assert len(document["values"]) == len(document["x"]) == 3
    assert document["provenance"]["trial"] == study.best_trial.number
    assert document["evidence"]["val_accuracy"] == study.best_value
    assert document["evidence"]["val_accuracy_gain"] == pytest.approx(
        study.best_value - study.trials[0].value)
    assert export.main(["--storage", url, "--depth", "20", "--output", str(tmp_path / "d20.json")]) == 0
    assert len(json.loads((tmp_path / "d20.json").read_text())["values"]) == 9

    report = tmp_path / "evaluation.json"
    assert evaluate.main(["--schedule", str(out), "--depth", "8", "--dataset", "digits", "--epochs", "1",
                          "--batch-size", "64", "--precision", "float32", "--seeds", "2", "--output", str(report),
                          "--storage", url, "--study", "digits-resnet8"]) == 0
    record = json.loads(report.read_text())
    assert len(record["baseline_test_accuracy"]) == len(record["schedule_test_accuracy"]) == 2
    assert record["seeds_used"] == [0, 1] and len(record["difference_ci95"]) == 2
    assert 0 <= record["p_value"] <= 1
    differences = [s - b for s, b in zip(record["schedule_test_accuracy"], record["baseline_test_accuracy"])]
    assert record["difference_mean"] == pytest.approx(sum(differences) / 2)
    assert "95 % CI" in capsys.readouterr().err
    # export now carries the evaluation
    assert export.main(["--storage", url, "--output", str(out)]) == 0
    assert json.loads(out.read_text())["evaluation"]["seeds"] == 2


@pytest.fixture(scope="module")
def one_trial_study(tmp_path_factory):
    """A study file after a real one-trial search, copied by each test that needs an existing study."""
    db = tmp_path_factory.mktemp("existing") / "search.db"
    assert search_run.main([*TINY, "--trials", "1", "--storage", f"sqlite:///{db}"]) == 0
    with sqlite3.connect(db) as connection:  # fold the WAL journal into the file, so one file is the study
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db


def _fingerprint(path):
    """The database file and its WAL journal, byte for byte (None when absent)."""
    if not path.exists():
        return None
    wal = path.with_name(path.name + "-wal")
    return hashlib.sha256(path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")).hexdigest()


def _contents(url):
    return [(study.study_name, study.user_attrs, [(t.number, t.state, t.params, t.user_attrs) for t in study.trials])
            for study in (optuna.load_study(study_name=name, storage=url) for name in optuna.get_all_study_names(url))]


@pytest.mark.parametrize("extra, message", [
    (["--depth", "31"], "depth"),
    (["--dataset", "mnist"], "dataset"),
    (["--family", "zigzag"], "family"),
    (["--sampler", "bayes"], "sampler"),
    (["--pruner", "asha"], "pruner"),
    (["--trials", "0"], "trials"),
    (["--trials", "-3"], "trials"),
    (["--scale-range", "1.5", "0.5"], "scale-range"),
    (["--scale-range", "0", "1.5"], "scale-range"),
    (["--dataset", "cifar10", "--data-dir", "."], "cifar-10-python.tar.gz"),
    (["--epochs", "2"], "epochs"),  # the existing study was made with --epochs 1
    (["--family", "linear"], "family"),
    (["--storage", "sqlite:///{tmp}/missing-folder/x.db"], "does not exist"),
    (["--storage", "sqlite:///{tmp}/garbage.db"], "not a readable SQLite"),
    (["--storage", "nosuchdb://x"], "storage"),
    (["--storage", "postgresql+psycopg://nobody@127.0.0.1:9/none"], "cannot open"),
    (["--dataset", "cifar10", "--data-dir", "{tmp}/corrupt"], "not a readable tar.gz"),
])
def test_bad_input_exits_2_with_one_line_and_leaves_the_storage_unchanged(one_trial_study, tmp_path, capsys,
                                                                           extra, message):
    db = tmp_path / "search.db"
    url = f"sqlite:///{db}"
    shutil.copy(one_trial_study, db)
    (tmp_path / "garbage.db").write_bytes(b"this is not a database" * 100)
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    before = _fingerprint(db), _fingerprint(tmp_path / "garbage.db")
    stored = _contents(url)
    assert stored and stored[0][2]
    capsys.readouterr()
    argv = [*TINY, "--trials", "2", "--storage", url, *[a.replace("{tmp}", str(tmp_path)) for a in extra]]
    assert run_command(search_run.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert (_fingerprint(db), _fingerprint(tmp_path / "garbage.db")) == before
    assert _contents(url) == stored
    assert not (tmp_path / "missing-folder").exists()


@pytest.mark.parametrize("argv, message", [
    (["--study", "nope"], "no study named 'nope'"),
    (["--storage", "sqlite:///{tmp}/absent.db"], "does not exist"),
    (["--depth", "33"], "depth"),
])
def test_export_bad_input(tmp_path, capsys, argv, message):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    open_study(open_storage(url), SearchConfig(dataset="digits", depth=8, epochs=1), epochs=1)  # no trial ran
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert run_command(export.main, ["--storage", url, *argv, "--output", str(tmp_path / "b.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "b.json").exists()
    assert run_command(export.main, ["--storage", url, "--output", str(tmp_path / "b.json")]) == 2
    assert "no completed trial" in capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ("{broken", "not valid JSON"),
    ('{"format": "other", "version": 1}', "format"),
    ('{"format": "resnet-shortcut-schedule", "version": 9, "family": "constant", "params": {"value": 1}}', "version"),
    ('{"format": "resnet-shortcut-schedule", "version": 1, "family": "constant", "params": {"value": NaN}}', "NaN"),
    ('{"format": "resnet-shortcut-schedule", "version": 1, "family": "constant", "params": {"value": -2}}', "> 0"),
])
def test_evaluate_refuses_bad_schedule_files(tmp_path, capsys, content, message):
    path = tmp_path / "s.json"
    path.write_text(content)
    argv = ["--schedule", str(path), "--depth", "8", "--dataset", "digits", "--output", str(tmp_path / "e.json")]
    assert run_command(evaluate.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "e.json").exists()
