"""``--fuse K``: the search trains K trials at once as one fused network, and every trial's record is the one it
gets trained alone; a batch killed mid-run loses nothing (each trial resumes alone from its own checkpoint)."""
import shutil
import sqlite3
import subprocess
import sys

import optuna
import pytest
from optuna.trial import TrialState

from commands import run as search_run
from common.cli import run_command
from common.errors import UsageError
from search.config import SearchConfig
from search.fused_batch import fuse_width, run_batch
from search.liveness import recover
from search.objective import Objective
from storage import open_storage
from training.data import load_dataset
from test_faults import ROOT, TINY, start_search, trials, wait_for

# the linear family within 0.5-1.2: 3 references (the baseline, the learned arms), then the random sampler's
ARGV = [*TINY, "--scale-range", "0.5", "1.2", "--sampler", "random", "--pruner", "none", "--seed", "3"]
RECORD = ("seed", "values", "epochs_run", "train_loss", "train_accuracy", "learned_values")


def _record(trial):
    return (trial.params, trial.state, trial.value, trial.intermediate_values,
            {key: trial.user_attrs.get(key) for key in RECORD})


def test_fused_trials_record_exactly_what_they_record_alone(tmp_path):
    alone, fused = (f"sqlite:///{tmp_path / name}.db" for name in ("alone", "fused"))
    assert search_run.main([*ARGV, "--trials", "6", "--storage", alone]) == 0
    assert search_run.main([*ARGV, "--trials", "6", "--storage", fused, "--fuse", "3",
                            "--tensorboard", str(tmp_path / "board")]) == 0
    a, b = trials(alone), trials(fused)
    assert len(a) == len(b) == 6
    assert [_record(t) for t in a] == [_record(t) for t in b]  # the references' batch mixes learned arms in
    assert [t.user_attrs["fused_with"] for t in b] == [[0, 1, 2]] * 3 + [[3, 4, 5]] * 3
    assert "fused_with" not in a[0].user_attrs
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = sorted((tmp_path / "board").glob("*/search/trial-*"))
    assert [folder.name for folder in logs] == [f"trial-{number:05d}" for number in range(6)]
    for folder in logs:  # each trial's own log, as its run alone writes it: one epoch
        for split, tags in (("train", {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"}),
                            ("validation", {"epoch_accuracy"})):
            events = EventAccumulator(str(folder / split), size_guidance={"tensors": 0})
            events.Reload()
            assert {tag: len(events.Tensors(tag)) for tag in tags} == dict.fromkeys(tags, 1)


def test_a_fused_batch_killed_mid_run_resumes_each_trial_alone_from_its_epoch(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    argv = [*ARGV, "--epochs", "6", "--storage", url, "--checkpoint-dir", str(tmp_path / "c"), "--fuse", "3",
            "--trials", "2"]
    first = start_search(argv)
    wait_for(lambda: sum(t.state == TrialState.RUNNING and len(t.intermediate_values) >= 2
                         for t in trials(url)) == 2)
    first.kill()
    first.wait()
    killed = [t for t in trials(url) if t.state != TrialState.WAITING]  # (the warm start's third waits)
    assert [t.user_attrs["fused_with"] for t in killed] == [[0, 1], [0, 1]]  # no wider than the target
    # the next batch Optuna's queue hands: the third reference, then the two retries (as when another worker
    # queues them after this one claimed the retries): each runs alone, the retries from their checkpoints
    config = search_run.config_from_args(argv)
    storage = open_storage(url, config.heartbeat)
    study = optuna.load_study(study_name=config.study, storage=storage)
    recover(storage, study, config.heartbeat)
    run_batch(storage, study, Objective(config, load_dataset("digits", subset=100)), [], 3)
    retries = [t for t in trials(url) if t.user_attrs.get("retry_of") is not None]
    assert sorted(t.user_attrs["retry_of"] for t in retries) == [0, 1]
    for retry in retries:  # alone, from the epoch the batch had saved for it
        before = killed[retry.user_attrs["retry_of"]]
        assert retry.state == TrialState.COMPLETE and "fused_with" not in retry.user_attrs
        assert retry.user_attrs["resumed_from_epoch"] >= 2
        assert [retry.intermediate_values[e] for e in before.intermediate_values] == \
            list(before.intermediate_values.values())
    assert trials(url)[2].state == TrialState.COMPLETE and "fused_with" not in trials(url)[2].user_attrs
    done = subprocess.run([sys.executable, "-m", "commands.run", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list((tmp_path / "c").rglob("state.npz"))


def test_fuse_auto_is_one_on_a_cpu_and_refuses_what_fusion_cannot_do():
    config = SearchConfig(dataset="digits", depth=8)
    assert config.fuse is None and fuse_width(config, None) == 1  # no GPU here: no probe
    probed = fuse_width(config, None, measure=lambda train, data: (4, {2: 1.4, 4: 1.8}))
    assert probed == 4  # on a GPU, what the probe measured
    with pytest.raises(UsageError, match="mixed_float16"):
        SearchConfig(dataset="digits", depth=8, fuse=2, precision="mixed_float16")
    with pytest.raises(UsageError, match="1 to 16"):
        SearchConfig(dataset="digits", depth=8, fuse=17)


def test_a_fused_confirm_stage_reaches_the_verdict_its_runs_alone_reach(tmp_path):
    from commands import confirm

    searched = tmp_path / "searched.db"
    # 3 epochs on 300 images: runs that learn (1 epoch ends at chance level, "collapsed", with no value)
    assert search_run.main([*ARGV, "--trials", "4", "--epochs", "3", "--subset", "300",
                            "--storage", f"sqlite:///{searched}"]) == 0
    with sqlite3.connect(searched) as connection:  # fold the WAL journal into the file, so one file is the study
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    stages = []
    for fuse in ("1", "3"):
        db = tmp_path / f"fuse{fuse}.db"
        shutil.copy(searched, db)
        url = f"sqlite:///{db}"
        argv = ["--storage", url, "--study", "digits-resnet8", "--top", "1", "--seeds", "2", "--budget", "fixed",
                "--fuse", fuse]
        assert run_command(confirm.main, argv) == 0
        runs = trials(url, "digits-resnet8.confirm")
        stages.append(({(t.user_attrs["arm"], t.user_attrs["seed"]): t.value for t in runs},
                       [t.user_attrs.get("fused_with") for t in runs],
                       optuna.load_study(study_name="digits-resnet8", storage=url).user_attrs["confirmation"]))
    (alone, unfused, verdict_alone), (fused, batches, verdict_fused) = stages
    assert len(alone) == 6 and alone == fused and None not in alone.values()  # 3 arms x 2 seeds, the same values
    assert unfused == [None] * 6 and batches == [[0, 1, 2]] * 3 + [[3, 4, 5]] * 3
    assert {key: verdict_fused[key] for key in ("arms", "verdict")} == \
        {key: verdict_alone[key] for key in ("arms", "verdict")}
