"""What survives which fault, with real processes: PID namespaces, a stopped worker, a kill between a result and
its cleanup, two keepers at once, a stopped publisher, and the password in every URL form."""
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from conftest import TINY
from queue_worker import keep_one_model
from search import objective as objective_module
from commands import run as search_run
from search import run_folders
from search.liveness import ProcessIdentity, clear_zombies
from storage.artifacts import kept_model
from storage import open_storage
from test_faults import ROOT, running_mid_epoch, start_search, started_together, trials, wait_for

LONG = [*TINY, "--epochs", "40", "--pruner", "none", "--family", "linear", "--baseline-seeds", "0"]


def _root():
    if os.geteuid() != 0 or not shutil.which("unshare"):
        if os.environ.get("CI"):
            pytest.fail("the PID-namespace test needs root and unshare (CI runs as root)")
        pytest.skip("needs root and unshare")


def test_a_live_trial_in_another_pid_namespace_is_never_cleared(tmp_path):
    _root()
    url = f"sqlite:///{tmp_path / 'search.db'}"
    # the worker runs in a PID namespace of its own, on this host: same hostname, pids of another numbering
    worker = subprocess.Popen(["unshare", "--pid", "--fork", sys.executable, "-m", "commands.run", *LONG, "--trials",
                               "1", "--storage", url], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    try:
        wait_for(lambda: running_mid_epoch(url))
        live = next(t for t in trials(url) if t.state == TrialState.RUNNING)
        there, here = ProcessIdentity.of(live), ProcessIdentity.current()
        assert there.host == here.host and there.pid_namespace != here.pid_namespace
        study = optuna.load_study(study_name="digits-resnet8", storage=url)
        assert clear_zombies(open_storage(url), study) == []  # from this namespace
        look = ("from search.liveness import clear_zombies; from storage import open_storage; import optuna; "
                f"s = open_storage({url!r}); print(len(clear_zombies(s, optuna.load_study(study_name="
                "'digits-resnet8', storage=s))))")
        other = subprocess.run(["unshare", "--pid", "--fork", sys.executable, "-c", look], cwd=ROOT,
                               capture_output=True, text=True, timeout=120)
        assert other.returncode == 0 and other.stdout.strip() == "0", other.stderr[-2000:]  # from a third one
        assert trials(url)[live.number].state == TrialState.RUNNING
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=120)


def test_an_interrupt_stops_the_worker_even_when_another_process_failed_its_trial(tmp_path):
    from models.schedules import preset
    from training.config import TrainConfig
    from training.data import load_dataset

    from search.interrupts import tracked
    from search.run_queue import run_claimed, run_next

    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    data = load_dataset("digits", subset=100)

    def objective(trial):
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("s"), trial.number)

        def taken_over_then_interrupted(epoch, accuracy):
            storage.set_trial_state_values(trial_id, TrialState.FAIL)  # another process judged it dead meanwhile
            raise KeyboardInterrupt  # then Ctrl-C: Optuna's tell of the failed trial must not swallow it

        return objective_module.train_trial(trial, TrainConfig(depth=8, epochs=2, batch_size=50,
                                                               precision="float32"), preset("baseline"), data,
                                            taken_over_then_interrupted)

    with tracked(), pytest.raises(KeyboardInterrupt):  # as the notebook API runs the loop, without our handler
        run_next(storage, study, objective, [])
    study.enqueue_trial({})
    (waiting,) = study.get_trials(states=(TrialState.WAITING,))
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name("s"), waiting.number)
    storage.set_trial_state_values(trial_id, TrialState.RUNNING)  # a retry this worker claimed
    with tracked(), pytest.raises(KeyboardInterrupt):
        run_claimed(storage, study, trial_id, objective, [])


def test_a_stopped_worker_whose_trial_was_failed_meanwhile_logs_it_and_goes_on(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    worker = start_search([*LONG, "--epochs", "6", "--trials", "1", "--heartbeat", "1", "--storage", url])
    wait_for(lambda: running_mid_epoch(url))
    victim = next(t for t in trials(url) if t.state == TrialState.RUNNING)
    worker.send_signal(signal.SIGSTOP)  # Ctrl-Z, or a machine that slept: no heartbeat for longer than the grace
    time.sleep(3)
    from search.liveness import recover

    storage = open_storage(url, 1)
    recover(storage, optuna.load_study(study_name="digits-resnet8", storage=storage), 1)  # another worker's step
    (queued,) = [t for t in trials(url) if t.state == TrialState.WAITING and "retry_of" in t.user_attrs]
    assert not {"host", "pid", "process", "fail_reason"} & set(queued.user_attrs)  # nothing of the stopped one
    assert not [key for key in queued.system_attrs if key.startswith("artifacts:")]
    worker.send_signal(signal.SIGCONT)
    _, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err[-3000:]
    assert f"trial {victim.number} was failed by another process" in err and "Traceback" not in err
    after = trials(url)
    assert after[victim.number].state == TrialState.FAIL
    retries = [t for t in after if t.user_attrs.get("retry_of") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].user_attrs["resumed_from_epoch"] >= 1  # from the stopped worker's checkpoint


def test_a_checkpoint_outlives_its_run_until_the_result_is_recorded(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    argv = [*TINY, "--epochs", "2", "--trials", "2", "--baseline-seeds", "0", "--storage", url]
    root = tmp_path / "search-checkpoints"
    present_when_done, train = [], objective_module.train_trial

    def spy(trial, *args, **kwargs):  # the run is over, the study does not have its result yet
        result = train(trial, *args, **kwargs)
        present_when_done.append((run_folders.run_folder(root, "digits-resnet8", trial.number) / "state.npz").is_file())
        return result

    monkeypatch.setattr(objective_module, "train_trial", spy)
    monkeypatch.setattr(run_folders, "remove", lambda folder: None)  # as if killed right after each result
    assert search_run.main(argv) == 0
    assert present_when_done == [True, True] and len(list(root.rglob("state.npz"))) == 2
    monkeypatch.undo()
    count = len(trials(url))
    assert search_run.main(argv) == 0  # the next run of the study sweeps them, and trains nothing again
    assert not list(root.rglob("state.npz")) and len(trials(url)) == count
    assert [t.state for t in trials(url)[:2]] == [TrialState.COMPLETE] * 2
    assert all("resumed_from_epoch" not in t.user_attrs for t in trials(url))


def test_two_keepers_at_once_keep_exactly_the_best_model_and_no_dangling_record(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    optuna.create_study(study_name="keep", storage=open_storage(url), direction="maximize")
    started_together(keep_one_model, url, 2)  # K = 1: each offers its model, then records its result
    study = optuna.load_study(study_name="keep", storage=url)
    holders = [t for t in study.trials if kept_model(t) is not None]
    files = list((tmp_path / "search-artifacts").iterdir())
    assert len(holders) == 1 and len(files) == 1 and files[0].name == kept_model(holders[0])
    assert holders[0].value == max(t.value for t in study.trials)


def test_export_and_report_finish_while_a_publishing_worker_is_stopped_holding_its_locks(tmp_path):
    db = tmp_path / "search.db"
    url = f"sqlite:///{db}"
    from search.config import SearchConfig
    from search.study import open_study

    study = open_study(open_storage(url), SearchConfig(dataset="digits", depth=8, epochs=1, storage=url), epochs=1)
    study.add_trial(create_trial(value=0.5, user_attrs={"preset": "baseline", "schedule": {
        "family": "constant", "params": {"value": 1.0}}}))
    study.add_trial(create_trial(value=0.6, user_attrs={"schedule": {"family": "linear", "params": {
        "start": 1.2, "end": 0.9}}}))
    publisher = ("import os, signal; from storage import open_storage; from storage.attributes import "
                 "held_back_study_attrs; from optuna_dashboard import save_note\n"
                 f"s = open_storage({url!r})\n"
                 "with held_back_study_attrs(s, 'digits-resnet8') as study:\n"
                 "    save_note(study, 'being written')\n"
                 "    with s.engine.begin() as c:\n"
                 "        c.exec_driver_sql('UPDATE studies SET study_name = study_name')\n"
                 "        print('holding', flush=True); os.kill(os.getpid(), signal.SIGSTOP)\n")
    holder = subprocess.Popen([sys.executable, "-c", publisher], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"  # the folder lock and SQLite's write lock
        for command in (["commands.export", "--output", str(tmp_path / "best.json")],
                        ["commands.report", "--output", str(tmp_path / "report.html")]):
            started = time.monotonic()
            done = subprocess.run([sys.executable, "-m", *command, "--storage", url], cwd=ROOT,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr[-2000:]
            assert time.monotonic() - started < 40 and "not attached" in done.stderr  # it waited 5 s, no more
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / "best.json").is_file() and (tmp_path / "report.html").is_file()


def test_a_password_in_the_query_string_or_escaped_never_shows(secret_role, tmp_path, monkeypatch, capsys):
    from optuna_dashboard import get_note

    from commands import report
    from commands import export
    from search.config import SearchConfig

    password, address, database = secret_role
    escaped = urllib.parse.quote(password, safe="")
    forms = [f"postgresql+psycopg://search_secret@{address}/{database}?password={escaped}",
             f"postgresql+psycopg://search_secret:{escaped}@{address}/{database}"]
    # each form reaches the server (the password is really needed) and shows nowhere: the first runs the search,
    # the second opens it again (its target met: it says so, with the URL), then exports and reports through it
    for form in forms:
        monkeypatch.setenv("SEARCH_STORAGE", form)
        assert search_run.main([*TINY, "--trials", "2", "--baseline-seeds", "0", "--family", "linear",
                                "--checkpoint-dir", str(tmp_path / "c"), "--artifact-dir", str(tmp_path / "a")]) == 0
        assert export.main(["--output", str(tmp_path / "best.json")]) == 0
        assert report.main(["--output", str(tmp_path / "report.html")]) == 0
        study = optuna.load_study(study_name="digits-resnet8", storage=form)
        shown = [capsys.readouterr(), get_note(study), study.user_attrs,
                 study._storage.get_study_system_attrs(study._study_id),
                 [(t.user_attrs, t.system_attrs) for t in study.trials],
                 repr(SearchConfig(storage=form)), (tmp_path / "best.json").read_text(),
                 (tmp_path / "report.html").read_text(), Path("/proc/self/cmdline").read_bytes()]
        text = repr(shown)
        assert password not in text and escaped not in text and "w/rd" not in text


def test_optunas_experimental_warnings_never_reach_the_user(tmp_path):
    """Naming the metric and the stale-trial check are "experimental" in Optuna, which says so on every call."""
    import warnings

    from search import records
    from search.liveness import fail_dead

    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_seconds=5)
    study = optuna.create_study(study_name="s", storage=storage)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # what a user's warnings filter may be
        records.name_metric(study)
        fail_dead(storage, study, 5)
    assert not [w for w in caught if issubclass(w.category, optuna.exceptions.ExperimentalWarning)], caught
