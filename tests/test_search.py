"""The search service end to end, on real (tiny) training runs and real SQLite files."""
import dataclasses
import importlib.util
import json
import shutil
import sqlite3
import subprocess
import sys

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState, create_trial
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta
from optuna.distributions import FloatDistribution

from common.cli import run_command
from common.errors import UsageError
from conftest import TINY, fingerprint
from commands import evaluate, export
from commands import run as search_run
from search.config import SAMPLERS, SearchConfig
from search.evidence.stats import holm, paired_statistics
from search.progress import next_commands
from search.records import record_evaluation
from search.samplers import check_installed, make_sampler, seed_of
from search.space import suggest_schedule
from search.study import open_study
from storage.artifacts import kept_model
from storage import open_storage

# the warm start: baseline, this data set's paper schedule, the baseline's 3 replicas, the paper's other three
PRESETS_IN_ORDER = ["baseline", "paper-c10-r32", "baseline", "baseline", "baseline", "paper-c10-r56",
                    "paper-c100-r32", "paper-c100-r56", "learned", "skipinit"]


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
    # warm start: each exactly once, in that order; the replicas on seeds of their own
    presets = [t.user_attrs.get("preset") for t in trials if "preset" in t.user_attrs]
    assert presets == PRESETS_IN_ORDER
    assert [t.user_attrs["seed"] for t in trials if t.user_attrs.get("replica")] == [1000, 1001, 1002]
    baseline = trials[0]
    assert baseline.state == TrialState.COMPLETE and baseline.user_attrs["values"] == [1.0, 1.0, 1.0]
    for trial in finished:
        assert len(trial.user_attrs["values"]) == 3 and trial.user_attrs["x"] == [1.0, 8.0, 15.0]
        assert {"family", "schedule", "seed", "sampler_seed", "epochs_run", "wall_seconds",
                "images_per_second"} <= set(trial.user_attrs)
        assert len(trial.user_attrs["train_loss"]) == len(trial.user_attrs["train_accuracy"]) == len(
            trial.intermediate_values)  # the training curves beside the validation curve
    assert study.user_attrs["settings"]["depth"] == 8 and "optuna" in study.user_attrs["versions"]
    # a third run of the same command has nothing left to do
    assert search_run.main([*TINY, "--trials", "6", "--storage", url]) == 0
    assert len(load(url).get_trials()) == len(trials)
    err = capsys.readouterr().err
    assert "trial    0 baseline = constant(value=1)" in err and "best" in err and "shortcut-search export" in err
    assert "cost: 5 trials left: about" in err  # after the first trial of the first run


def test_remaining_cost_extrapolates_the_epoch_time_and_the_pruners_savings(tmp_path):
    from search.progress import remaining_cost

    url = f"sqlite:///{tmp_path / 'search.db'}"
    config = search_run.config_from_args([*TINY, "--epochs", "10", "--trials", "12", "--storage", url])
    study = open_study(open_storage(url), config, epochs=10)
    assert remaining_cost(study, 12) is None  # nothing measured yet
    study.add_trial(create_trial(value=0.9, user_attrs={"preset": "baseline", "epochs_run": 10, "wall_seconds": 20}))
    cost = remaining_cost(study, 12)
    assert cost.startswith("11 trials left: about 4 min at 2.0 s an epoch if none is pruned") and "will cut" in cost
    study.add_trial(create_trial(state=TrialState.PRUNED, user_attrs={"epochs_run": 1, "wall_seconds": 2}))
    study.add_trial(create_trial(value=0.8, user_attrs={"epochs_run": 10, "wall_seconds": 20}))
    # 9 left x 10 epochs x 2 s = 3 min; the searched trials trained 11 of 20 epochs: 99 s, about 2 min
    assert remaining_cost(study, 12, workers=1) == (
        "9 trials left: about 3 min at 2.0 s an epoch if none is pruned, about 2 min if the pruner keeps stopping "
        "trials as so far (55 % of the epochs trained, 2 searched trials)")
    assert "over 3 workers" in remaining_cost(study, 12, workers=3) and remaining_cost(study, 3) is None
    # then 21 confirm runs of 10 epochs at 2 s: 7 min
    assert remaining_cost(study, 12, confirm_runs=21).endswith("; then the confirm stage, up to 21 search trials' worth: about 7 min")


def test_trials_are_pruned_only_at_the_rungs_and_never_the_presets(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    # 3 epochs: the default pruner decides at epoch 2 only (55 % of the run, after the learning-rate drop)
    argv = [*TINY, "--epochs", "3", "--family", "linear", "--trials", "12", "--baseline-seeds", "0", "--storage", url]
    config = search_run.config_from_args(argv)
    assert config.pruner == "rungs"
    study = open_study(open_storage(url), config, epochs=3)
    # five reference curves that no real run on 200 images reaches: every real trial is below their top third
    for value in (0.97, 0.98, 0.99, 0.985, 0.975):
        study.add_trial(create_trial(
            params={"linear_start": 1.0, "linear_end": 1.0},
            distributions={"linear_start": FloatDistribution(0.5, 1.5), "linear_end": FloatDistribution(0.5, 1.5)},
            value=value, intermediate_values={1: value, 2: value, 3: value}, user_attrs={"reference": True}))
    assert search_run.main(argv) == 0
    real = [t for t in load(url).get_trials() if not t.user_attrs.get("reference")]
    presets = [t for t in real if "preset" in t.user_attrs]
    assert len(presets) >= 4 and all(t.state == TrialState.COMPLETE and t.user_attrs["epochs_run"] == 3
                                     for t in presets)
    assert {"learned", "skipinit"} <= {t.user_attrs["preset"] for t in presets}  # never pruned either
    searched = [t for t in real if "preset" not in t.user_attrs]
    assert searched and all(t.state == TrialState.PRUNED for t in searched), [(t.number, t.state) for t in real]
    for trial in searched:  # nothing is decided on the noisy epochs before the first rung
        assert trial.user_attrs["pruned_at_epoch"] == 2 and list(trial.intermediate_values) == [1, 2]


def test_rung_pruner_keeps_the_top_third_at_its_rungs_only():
    from search.pruning import RungPruner, rung_epochs

    assert rung_epochs(182) == [101, 146] and rung_epochs(10) == [6, 8] and rung_epochs(3) == [2]
    assert rung_epochs(2) == rung_epochs(1) == []
    study = optuna.create_study(direction="maximize", pruner=RungPruner([6, 8]))
    for final in (0.50, 0.60, 0.70, 0.80, 0.90):
        study.add_trial(create_trial(value=final, intermediate_values={e: final for e in range(1, 11)}))

    def run_curve(curve):  # epoch -> accuracy; returns the epoch it was stopped at, or None
        trial = study.ask()
        for epoch, value in curve.items():
            trial.report(value, epoch)
            if trial.should_prune():
                study.tell(trial, state=TrialState.PRUNED)
                return epoch
        study.tell(trial, curve[max(curve)])
        return None

    # worst of all before the rung: no decision; at epoch 6, 0.75 is outside the top third (0.90, 0.80)
    assert run_curve({1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 0.0, 6: 0.75}) == 6
    # top third at the first rung, outside it at the second
    assert run_curve({e: 0.85 for e in range(1, 8)} | {8: 0.55, 9: 0.99, 10: 0.99}) == 8
    assert run_curve({e: 0.95 for e in range(1, 11)}) is None


LOAD_AND_VALIDATE = """
import sys, keras
import training.loop  # registers the project's layers with Keras
from training.data import load_dataset
from training.pipeline import batches
data = load_dataset("digits", subset=200)
for path in sys.argv[1:]:
    model = keras.saving.load_model(path)
    print(model.evaluate(batches(data.x_val, data.y_val, 500), verbose=0, return_dict=True)["accuracy"])
"""


def test_export_and_evaluate(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    assert search_run.main([*TINY, "--trials", "4", "--baseline-seeds", "0", "--storage", url, "--pruner", "none",
                            "--keep-models", "2", "--tensorboard", str(tmp_path / "board")]) == 0
    runs = sorted(path.relative_to(tmp_path / "board") for path in (tmp_path / "board").glob("*/*/*"))
    assert [str(run).split("/", 1)[1] for run in runs] == [f"search/trial-0000{i}" for i in range(4)]  # one each
    # the two best candidates keep their trained models as artifacts (the baseline, a reference, never takes a
    # slot); each loads in a fresh process and gives its trial's validation accuracy again
    study = load(url)
    assert kept_model(study.trials[0]) is None and study.trials[0].user_attrs["preset"] == "baseline"
    complete = sorted((t for t in study.get_trials(states=(TrialState.COMPLETE,)) if t.number),
                      key=lambda t: (-t.value, t.number))
    assert len(complete) == 3 and [kept_model(t) is not None for t in complete] == [True, True, False]
    store = FileSystemArtifactStore(str(tmp_path / "search-artifacts"))
    assert len(list((tmp_path / "search-artifacts").iterdir())) == 2
    models = [tmp_path / f"kept-{t.number}.keras" for t in complete[:2]]
    for trial, path in zip(complete, models):
        download_artifact(artifact_store=store, file_path=str(path), artifact_id=kept_model(trial))
    loaded = subprocess.run([sys.executable, "-c", LOAD_AND_VALIDATE, *map(str, models)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert [float(v) for v in loaded.stdout.split()] == pytest.approx([t.value for t in complete[:2]], abs=1e-6)

    out = tmp_path / "best.json"
    assert export.main(["--storage", url, "--study", "digits-resnet8", "--output", str(out), "--model",
                        str(tmp_path / "best.keras")]) == 0
    # the best trial's own network, as its inference network (no augmentation, no optimizer): the same logits
    import keras
    import numpy as np

    deployable, kept = keras.saving.load_model(tmp_path / "best.keras"), keras.saving.load_model(models[0])
    images = np.random.default_rng(0).integers(0, 256, (4, *kept.input_shape[1:]), dtype="uint8")
    np.testing.assert_allclose(deployable.predict(images, verbose=0), kept(images, training=False), atol=1e-5)
    assert "trained model of trial" in capsys.readouterr().err
    elsewhere = ["--storage", url, "--output", str(tmp_path / "none.json"), "--model", str(tmp_path / "none.keras"),
                 "--artifact-dir", str(tmp_path / "another-store")]
    assert run_command(export.main, elsewhere) == 2  # refused before anything is written
    assert "not in this artifact store" in capsys.readouterr().err and not (tmp_path / "none.json").exists()
    assert [meta.filename for meta in get_all_artifact_meta(load(url))] == ["best.json"]  # attached to the study
    document = json.loads(out.read_text())
    assert document["format"] == "resnet-shortcut-schedule" and document["depth"] == 8
    assert len(document["values"]) == len(document["x"]) == 3
    assert document["provenance"]["trial"] == complete[0].number and document["verdict"]["outcome"] == "not_confirmed"
    assert document["evidence"]["val_accuracy"] == complete[0].value
    assert document["evidence"]["val_accuracy_gain"] == pytest.approx(complete[0].value - study.trials[0].value)
    assert export.main(["--storage", url, "--depth", "20", "--output", str(tmp_path / "d20.json")]) == 0
    assert len(json.loads((tmp_path / "d20.json").read_text())["values"]) == 9

    export_command, evaluate_command = next_commands(study, url)
    assert "--epochs 1 --subset 200 --batch-size 64" in evaluate_command  # the searched budget, exactly
    report = tmp_path / "evaluation.json"
    budget = ["--depth", "8", "--dataset", "digits", "--epochs", "1", "--subset", "200", "--batch-size", "64",
              "--precision", "float32"]
    # the search trained with seed 0: testing with it would test on the weights the schedule was selected on
    assert run_command(evaluate.main, ["--schedule", str(out), *budget, "--seed", "0", "--storage", url,
                                       "--study", "digits-resnet8"]) == 2
    assert "seed(s) 0" in capsys.readouterr().err
    assert evaluate.main(["--schedule", str(out), *budget, "--seeds", "2", "--output", str(report),
                          "--storage", url, "--study", "digits-resnet8"]) == 0
    record = json.loads(report.read_text())
    assert len(record["baseline_test_accuracy"]) == len(record["schedule_test_accuracy"]) == 2
    assert record["seeds_used"] == [10000, 10001] and len(record["difference_ci95"]) == 2
    assert 0 <= record["p_value"] <= 1 and record["diverged"] == {"baseline": 0, "schedule": 0}
    differences = [s - b for s, b in zip(record["schedule_test_accuracy"], record["baseline_test_accuracy"])]
    assert record["difference_mean"] == pytest.approx(sum(differences) / 2)
    assert "95 % CI" in capsys.readouterr().err
    # an evaluation on another budget, recorded later, is never attached to this study's export
    record_evaluation(load(url), {**record, "epochs": 30, "finished_at": "9999-01-01T00:00:00+00:00"})
    assert export.main(["--storage", url, "--output", str(out)]) == 0
    attached = json.loads(out.read_text())["evaluation"]
    assert attached["seeds"] == 2 and attached["epochs"] == 1


def test_evaluate_compares_several_arms_with_the_baseline_and_corrects_their_p_values(tmp_path, capsys):
    report = tmp_path / "arms.json"
    argv = ["--schedule", "paper-c10-r32", "--schedule", "learned", "--schedule", "skipinit", "--depth", "8",
            "--dataset", "digits", "--subset", "200", "--epochs", "1", "--batch-size", "50", "--precision",
            "float32", "--seeds", "2", "--output", str(report)]
    assert evaluate.main(argv) == 0
    record = json.loads(report.read_text())
    assert [arm["name"] for arm in record["arms"]] == ["paper-c10-r32", "learned", "skipinit"]
    for arm in record["arms"]:
        assert len(arm["test_accuracy"]) == 2 and arm["diverged"] == 0 and len(arm["difference_ci95"]) == 2
        assert arm["p_value"] <= arm["p_holm"] <= 1
        paired = [a - b for a, b in zip(arm["test_accuracy"], record["baseline_test_accuracy"])]
        assert arm["difference_mean"] == pytest.approx(sum(paired) / 2)
    first = record["arms"][0]  # the first arm keeps the top-level keys existing readers use
    assert record["schedule"] == first["schedule"] and record["p_value"] == first["p_value"]
    assert [len(values) for values in record["arms"][1]["learned_values"]] == [3, 3]
    table = capsys.readouterr().err.splitlines()
    assert any(line.startswith("skipinit ") and "[" in line for line in table)  # one row per arm, with its CI
    assert run_command(evaluate.main, [*argv, "--schedule", "learned"]) == 2  # an arm given twice


def test_a_confirm_stage_at_a_target_budget_killed_midway_resumes_and_exports_its_verdict(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from commands import confirm

    url = f"sqlite:///{tmp_path / 'search.db'}"
    # 3 epochs a run: a confirm run outlasts the poll below, so the signal lands during the stage
    assert search_run.main([*TINY, "--epochs", "3", "--trials", "4", "--baseline-seeds", "1", "--storage", url]) == 0
    # searched at ResNet-8 for 3 epochs, confirmed at ResNet-14 for 2: a cheap proxy, the target where it matters
    target = ["--target-depth", "14", "--target-epochs", "2"]
    argv = ["--storage", url, "--study", "digits-resnet8", "--top", "2", "--seeds", "2", "--budget", "fixed", *target]
    stage = subprocess.Popen([sys.executable, "-m", "commands.confirm", *argv], cwd=Path(__file__).parents[1],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and stage.poll() is None:
        names = optuna.get_all_study_names(url)
        if "digits-resnet8.confirm" in names and load(url, "digits-resnet8.confirm").get_trials(
                states=(TrialState.COMPLETE,)):
            break
        time.sleep(0.2)
    stage.send_signal(signal.SIGTERM)  # kill it after its first run, most likely during the second
    assert stage.wait(timeout=60) == 143, stage.stderr.read()
    before = {t.number: t.user_attrs for t in load(url, "digits-resnet8.confirm").get_trials(
        states=(TrialState.COMPLETE,))}
    assert 1 <= len(before) < 6
    assert run_command(confirm.main, argv) == 0  # the same command resumes
    confirm_study = load(url, "digits-resnet8.confirm")
    runs = confirm_study.get_trials()
    complete = [t for t in runs if t.state == TrialState.COMPLETE]
    pairs = [(t.user_attrs["label"], t.user_attrs["seed"]) for t in complete]
    assert all(t.user_attrs["budget"] == {"depth": 14, "epochs": 2, "subset": 200} and t.user_attrs["epochs_run"] == 2
               for t in complete)  # trained at the target
    candidates = [t for t in load(url).get_trials(states=(TrialState.COMPLETE,))
                  if t.user_attrs.get("preset") != "baseline"]
    top = max(candidates, key=lambda t: (t.value, -t.number))  # the best candidate (never a baseline run)
    labels = sorted({label for label, _ in pairs})  # the baseline, the paper's and the top two (one is the paper's)
    assert len(labels) == 3 and "baseline" in labels and any(label.startswith(f"#{top.number}") for label in labels)
    assert sorted(pairs) == sorted((label, seed) for label in labels for seed in (2000, 2001))  # each once
    assert all(runs[number].user_attrs == attrs for number, attrs in before.items())  # finished runs untouched
    assert all(t.user_attrs.get("fail_reason") == "interrupted" for t in runs if t.state == TrialState.FAIL)
    search_study = load(url)
    summary = search_study.user_attrs["confirmation"]
    assert summary["seeds"] == [2000, 2001] and summary["candidates"] == 2 and top.number in summary["candidate_trials"]
    assert summary["verdict"]["comparisons"] == 2 and summary["budget"] == {"depth": 14, "epochs": 2, "subset": 200}
    assert summary["search_budget"] == {"depth": 8, "epochs": 3, "subset": 200}
    assert summary["proxy_agreement"]["arms"] == 3 and "search_at_target_seconds" in summary["cost"]
    assert set(search_study.user_attrs["confirm_seeds"]) == {2000, 2001}
    assert run_command(search_run.main, [*TINY, "--epochs", "3", "--trials", "4", "--baseline-seeds", "1",
                                         "--confirm-top", "2", "--confirm-seeds", "2", *target, "--storage", url]) == 0
    # nothing to re-plan or re-run: under the default (a race) a current fixed stage's verdict stands
    assert len(load(url, "digits-resnet8.confirm").get_trials()) == len(runs)
    assert "race" not in load(url).user_attrs["confirmation"]
    out = tmp_path / "best.json"
    assert export.main(["--storage", url, "--output", str(out)]) == 0
    document = json.loads(out.read_text())
    verdict, block = document["verdict"], document["confirmation"]
    assert verdict["outcome"] in ("beats_baseline", "no_candidate_beats_baseline", "worse_than_baseline")
    assert verdict["current"] and verdict["seeds"] == [2000, 2001] and verdict["budget"]["epochs"] == 2
    provenance = document["provenance"]
    assert provenance["ranked_on"]["depth"] == 8 and provenance["verdict_on"] == {"depth": 14, "epochs": 2,
                                                                                 "subset": 200}
    assert document["depth"] == 14 and len(document["values"]) == 6  # realised at the target's depth
    assert document["proxy_agreement"]["arms"] == 3
    assert verdict["recommendation"] == ("baseline" if verdict["winner"] is None else verdict["winner"])
    assert block["rank_in_search"] in (1, 2) and provenance["trial"] in summary["candidate_trials"]
    assert len(block["baseline_val_accuracy"]) == len(block["schedule_val_accuracy"]) == 2
    assert {"difference_mean", "bounds_raw", "bounds_adjusted", "p_better", "pairs", "diverged"} <= set(block)
    evidence = document["evidence"]
    assert evidence["selected_from"] == 2 and evidence["searched"] == 0 and evidence["sigma_d"] > 0
    assert evidence["chance_best_p95"] >= evidence["chance_best_mean"] >= 0


def test_a_search_with_nothing_to_confirm_says_so_and_exits_0(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    # constant schedules only: no paper schedule fits, so the two trials are the baseline and its replica
    argv = [*TINY, "--family", "constant", "--trials", "2", "--baseline-seeds", "1", "--confirm-top", "1",
            "--storage", url]
    assert search_run.main(argv) == 0
    err = capsys.readouterr().err
    assert "--trials 2 leaves no trial to search: the study's 4 references" in err
    assert "searched 0 schedules" in err and "nothing to confirm" in err
    assert "confirmation" not in load(url).user_attrs


def test_a_storage_password_never_reaches_messages_commands_or_the_note(tmp_path, monkeypatch, capsys):
    from dashboards.live import study_note
    from commands.flags import add_storage_argument
    from storage.urls import engine_url, redacted, storage_flag

    secret = "postgresql+psycopg://alice:s3cr3t-pw@127.0.0.1:9/search"
    assert redacted(secret) == "postgresql+psycopg://alice:***@127.0.0.1:9/search"
    assert storage_flag(secret) == '--storage "$SEARCH_STORAGE"' and "s3cr3t" not in storage_flag(secret)
    for query in ("password", "%70assword", "PASSWORD", "Password"):  # the query string's, however spelled
        other = f"postgresql+psycopg://alice@db.example/search?sslmode=require&{query}=s3cr3t-pw"
        assert "s3cr3t" not in redacted(other) + storage_flag(other) + str(sqlalchemy.engine.make_url(engine_url(other)))
        assert sqlalchemy.engine.make_url(engine_url(other)).password == "s3cr3t-pw"  # and it is the password
    with_at = "postgresql+psycopg://alice@db.example:5432/search?password=s3cr@t-pw"  # an '@' after the host
    assert "s3cr" not in redacted(with_at) + storage_flag(with_at) and "t-pw" not in redacted(with_at)
    url = f"sqlite:///{tmp_path / 'search.db'}"
    assert storage_flag(url) == f"--storage {url}"
    study = open_study(open_storage(url), SearchConfig(dataset="digits", depth=8, epochs=1), epochs=1)
    study.add_trial(create_trial(value=0.5, user_attrs={"preset": "baseline", "schedule": {
        "family": "constant", "params": {"value": 1.0}}}))
    assert not any("s3cr3t" in command for command in next_commands(study, secret))
    assert "s3cr3t" not in study_note(study, secret, target=10)
    # the URL may come from $SEARCH_STORAGE, and --help never shows it
    monkeypatch.setenv("SEARCH_STORAGE", secret)
    parser = __import__("common.cli", fromlist=["ArgumentParser"]).ArgumentParser(prog="x")
    add_storage_argument(parser)
    assert parser.parse_args([]).storage == secret and "s3cr3t" not in parser.format_help()
    # an unreachable server's error names the host, not the password
    assert run_command(export.main, ["--study", "x", "--output", str(tmp_path / "b.json")]) == 2
    assert "s3cr3t" not in capsys.readouterr().err


def test_export_reads_while_a_worker_holds_the_write_lock(tmp_path):
    import time

    db = tmp_path / "search.db"
    study = open_study(open_storage(f"sqlite:///{db}"), SearchConfig(dataset="digits", depth=8, epochs=1), epochs=1)
    study.add_trial(create_trial(value=0.5, user_attrs={"preset": "baseline", "schedule": {
        "family": "constant", "params": {"value": 1.0}}}))
    study.add_trial(create_trial(value=0.6, user_attrs={"schedule": {"family": "linear", "params": {
        "start": 1.2, "end": 0.9}}}))
    worker = sqlite3.connect(db, isolation_level=None)
    worker.execute("BEGIN IMMEDIATE")  # what a worker's transaction holds while it claims or reports a trial
    started = time.monotonic()
    try:
        assert export.main(["--storage", f"sqlite:///{db}", "--output", str(tmp_path / "best.json")]) == 0
    finally:
        worker.execute("ROLLBACK")
        worker.close()
    assert time.monotonic() - started < 30  # a reader that asked for the write lock would wait out the 120 s
    # (the export is written; attaching it to the study waited 5 s for the lock, then gave up with a warning)


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_the_command_offers_samples_past_its_start_up_trials(name):
    """Each --sampler's model is installed with the tool (CmaEsSampler needs the cmaes package): 12 schedules,
    past every sampler's random start-up trials, each within the factors' bounds."""
    config = SearchConfig(dataset="digits", depth=8, sampler=name, family="linear")
    if name == "gp" and importlib.util.find_spec("torch") is None:  # not a dependency: refused up front
        with pytest.raises(UsageError, match="gp needs PyTorch"):
            check_installed(name)
        return
    check_installed(name)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(config, 0))
    for step in range(12):
        trial = study.ask()
        factors = suggest_schedule(trial, config.family, config.scale_range).values(8)
        assert all(0.5 <= factor <= 1.5 for factor in factors)
        study.tell(trial, -sum((factor - 0.8) ** 2 for factor in factors))


def test_only_the_process_that_created_a_study_samples_from_the_bare_seed(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    config = SearchConfig(dataset="digits", depth=8, epochs=1, storage=url, seed=7)
    # the first opener created it: reproducible from --seed; everyone after it (workers, machines, a resumed
    # search) gets a stream of its own, so two machines started together never propose the same points
    seeds = [seed_of(open_study(open_storage(url), config, epochs=1).sampler) for _ in range(3)]
    assert seeds[0] == 7 and len(set(seeds)) == 3
    assert seed_of(open_study(open_storage(url), config, epochs=1, worker=1).sampler) not in seeds


def test_paired_statistics_leave_diverged_pairs_out_and_a_constant_gain_is_certain():
    summary = paired_statistics([0.5, 0.6, None, 0.7], [0.6, None, 0.9, 0.8])
    assert summary["pairs"] == 2 and summary["diverged"] == {"baseline": 1, "schedule": 1}
    assert summary["difference_mean"] == pytest.approx(0.1) and summary["p_value"] == 0.0  # +0.1 every seed
    assert paired_statistics([0.5, 0.6], [0.5, 0.6])["p_value"] == 1.0
    assert holm([0.01, 0.04, None, 0.03]) == [pytest.approx(0.03), pytest.approx(0.06), None, pytest.approx(0.06)]


def test_a_diverged_evaluation_run_is_counted_and_left_out_never_scored_zero(tmp_path, capsys):
    from models.schedules import Schedule, save_schedule

    absurd = save_schedule(Schedule("constant", {"value": 1e30}), tmp_path / "absurd.json", depth=8)
    report = tmp_path / "evaluation.json"
    assert evaluate.main(["--schedule", str(absurd), "--depth", "8", "--dataset", "digits", "--epochs", "1",
                          "--subset", "200", "--batch-size", "64", "--precision", "float32", "--seeds", "2",
                          "--output", str(report)]) == 0
    record = json.loads(report.read_text())
    assert record["schedule_test_accuracy"] == [None, None] and record["diverged"] == {"baseline": 0, "schedule": 2}
    assert record["pairs"] == 0 and record["difference_mean"] is None and record["p_value"] is None
    assert "nothing to compare" in capsys.readouterr().err


def _contents(url):
    return [(study.study_name, study.user_attrs, [(t.number, t.state, t.params, t.user_attrs) for t in study.trials])
            for study in (optuna.load_study(study_name=name, storage=url) for name in optuna.get_all_study_names(url))]


@pytest.mark.parametrize("extra, message", [
    (["--depth", "31"], "depth"),
    (["--dataset", "mnist"], "dataset"),
    (["--family", "zigzag"], "family"),
    (["--sampler", "bayes"], "sampler"),
    (["--pruner", "asha"], "pruner"),
    (["--sampler", "gp"], "--family any changes them from trial to trial"),  # never random search in disguise
    (["--sampler", "cmaes", "--family", "spline"], "sampled at random"),
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
    (["--checkpoint-dir", "{tmp}/garbage.db/checkpoints"], "checkpoint-dir: cannot create"),
    (["--confirm-seeds", "1"], "confirm-seeds"),  # one seed would be another single-run best of K
    (["--confirm-budget", "5"], "confirm-budget"),  # the race's final test alone needs 6 runs
    (["--min-effect", "0"], "min-effect"),
    (["--fuse", "0"], "fuse"),
    (["--fuse", "auto2"], "fuse"),
])
def test_bad_input_exits_2_with_one_line_and_leaves_the_storage_unchanged(one_trial_study, tmp_path, capsys,
                                                                           extra, message):
    db = tmp_path / "search.db"
    url = f"sqlite:///{db}"
    shutil.copy(one_trial_study, db)
    (tmp_path / "garbage.db").write_bytes(b"this is not a database" * 100)
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b not really gzip")
    before = fingerprint(db), fingerprint(tmp_path / "garbage.db")
    stored = _contents(url)
    assert stored and stored[0][2]
    capsys.readouterr()
    argv = [*TINY, "--trials", "2", "--storage", url, *[a.replace("{tmp}", str(tmp_path)) for a in extra]]
    assert run_command(search_run.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert (fingerprint(db), fingerprint(tmp_path / "garbage.db")) == before
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
    assert "no completed schedule" in capsys.readouterr().err


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


def test_the_notebook_api_searches_in_process_and_returns_the_study(tmp_path):
    import signal

    from commands import api

    handler = signal.getsignal(signal.SIGINT)
    config = SearchConfig(dataset="digits", depth=8, epochs=1, subset=100, batch_size=50, precision="float32",
                          trials=2, confirm_top=0, baseline_seeds=0, keep_models=0,
                          storage=f"sqlite:///{tmp_path / 'notebook.db'}")
    study = api.search(config)
    assert isinstance(study, optuna.Study) and signal.getsignal(signal.SIGINT) is handler  # no handlers left
    assert len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 2
    document = api.export(study)
    assert document["format"] == "resnet-shortcut-schedule" and document["provenance"]["trial"] in (0, 1)
    with pytest.raises(ValueError, match="workers"):
        api.search(dataclasses.replace(config, workers=2))


def test_a_study_of_schema_1_is_migrated_in_one_step_when_a_search_opens_it(tmp_path):
    from search import records

    url = f"sqlite:///{tmp_path / 'search.db'}"
    config = SearchConfig(dataset="digits", depth=8, epochs=1, storage=url, checkpoint_dir="none", keep_models=0)
    study = open_study(open_storage(url), config, epochs=1)
    assert records.schema(study) == records.SCHEMA_VERSION  # a new study is written at the current schema
    # what an earlier version left: no schema version, a summary without a verdict, a running trial that recorded
    # only host and pid, and a waiting retry that Optuna's callback queued (failed_trial, no retry_of)
    study.set_user_attr("schema_version", 1)
    study.set_user_attr("confirmation", {"arms": []})
    running = study.ask()
    running.set_user_attr("host", "h")
    running.set_user_attr("pid", 12345)
    study.add_trial(create_trial(state=TrialState.WAITING, system_attrs={"failed_trial": 3}))
    study = open_study(open_storage(url), config, epochs=1)
    assert records.schema(study) == records.SCHEMA_VERSION
    assert records.confirmation(study) is None and study.user_attrs["confirmation"] is None
    trials = {t.number: t for t in study.get_trials()}
    assert trials[running.number].user_attrs["process"] == {"host": "h", "pid": 12345}
    waiting = [t for t in trials.values() if t.state == TrialState.WAITING and "failed_trial" in t.system_attrs]
    assert [t.user_attrs["retry_of"] for t in waiting] == [3]
    # its confirm study too, which holds no settings of its own
    from search.confirm_loop import open_confirm_study

    confirm = open_confirm_study(open_storage(url), study)
    assert records.schema(confirm) == records.SCHEMA_VERSION
    confirm.set_user_attr("schema_version", 1)
    confirm.add_trial(create_trial(state=TrialState.WAITING, system_attrs={"failed_trial": 0}))
    confirm = open_confirm_study(open_storage(url), study)
    assert records.schema(confirm) == records.SCHEMA_VERSION
    assert [t.user_attrs.get("retry_of") for t in confirm.get_trials(states=(TrialState.WAITING,))] == [0]


def test_python_m_search_run_is_an_alias_of_the_run_command():
    done = subprocess.run([sys.executable, "-m", "search.run", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "usage: shortcut-search run" in done.stdout and "--trials" in done.stdout
