"""Clusters without a database server: a journal file shared by a real Slurm job array, its preemption, the
tool's own heartbeat on a journal, and the journal through the storage contract (bad input, readers)."""
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import optuna
import pytest
from optuna.trial import TrialState

from common.cli import run_command
from conftest import TINY, fingerprint
from commands import export, slurm
from commands import run as search_run
from storage import open_storage
from test_faults import ROOT, running_after_epoch, start_search, trials, wait_for

ARRAY = [*TINY, "--subset", "100", "--batch-size", "50", "--family", "linear", "--baseline-seeds", "0"]


def _slurm():
    if not shutil.which("sbatch") or subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        if os.environ.get("CI"):
            pytest.fail("no Slurm: .ci/services should have started one")
        pytest.skip("no Slurm on this machine (run the suite through .ci/run)")


def _submit(tmp_path, argv, tasks):
    """``shortcut-search slurm``: write and submit the array; its job id."""
    assert run_command(slurm.main, ["--tasks", str(tasks), "--logs", str(tmp_path / "logs"), "--script",
                                    str(tmp_path / "search.sbatch"), "--", *argv]) == 0
    jobs = subprocess.run(["squeue", "-h", "-o", "%A %j"], capture_output=True, text=True).stdout.split("\n")
    return next(line.split()[0] for line in jobs if "search-digits-resnet8" in line)


def _wait_gone(job, timeout=400):
    wait_for(lambda: not subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip(),
             timeout=timeout, step=1)


def _journal(tmp_path):
    return f"journal:///{tmp_path / 'shared' / 'search.journal'}"


def test_a_job_array_of_two_tasks_searches_one_journal_and_confirms_once(tmp_path, capsys):
    _slurm()
    (tmp_path / "shared").mkdir()
    url = _journal(tmp_path)
    argv = [*ARRAY, "--trials", "6", "--pruner", "none", "--confirm-top", "1", "--confirm-seeds", "2",
            "--storage", url]
    job = _submit(tmp_path, argv, tasks=2)
    _wait_gone(job)
    logs = "\n".join(path.read_text() for path in (tmp_path / "logs").iterdir())
    assert "Traceback" not in logs and logs.count("next: shortcut-search export") == 1, logs[-3000:]
    study = optuna.load_study(study_name="digits-resnet8", storage=open_storage(url, create=False))
    runs = study.get_trials()
    finished = [t for t in runs if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert 6 <= len(finished) <= 7 and not [t for t in runs if t.state == TrialState.RUNNING]
    first_tries = [t for t in runs if "retry_of" not in t.user_attrs]
    references = [t.user_attrs["preset"] for t in first_tries if "preset" in t.user_attrs]
    assert len(references) == len(set(references)) == 5  # each reference queued once, by one of the two
    points = [(json.dumps(t.params, sort_keys=True), t.user_attrs.get("seed"), t.user_attrs.get("preset"))
              for t in first_tries]
    assert len(points) == len(set(points))  # no two trials of the same parameters and seed
    confirm = optuna.load_study(study_name="digits-resnet8.confirm", storage=open_storage(url, create=False))
    done = [(t.user_attrs["arm"], t.user_attrs["seed"]) for t in confirm.trials if t.state == TrialState.COMPLETE]
    assert len(done) == len(set(done)) == 6  # the race's (1 + 2) x 2 runs, each once by one of the two tasks
    assert study.user_attrs["confirmation"]["race"]["spent"] == 6  # one plan, shared through the journal
    assert study.user_attrs["confirmation"]["verdict"]["outcome"]
    assert len({line.split()[1] for line in logs.splitlines() if line.startswith("confirm ")}) >= 1


def test_a_preempted_task_resumes_its_trial_when_requeued(tmp_path):
    _slurm()
    (tmp_path / "shared").mkdir()
    url = _journal(tmp_path)
    argv = [*ARRAY, "--epochs", "30", "--trials", "1", "--pruner", "none", "--storage", url]
    job = _submit(tmp_path, argv, tasks=1)
    wait_for(lambda: running_after_epoch(url, 2) is not None, timeout=300)
    cut = running_after_epoch(url, 2)
    # a real preemption: a job of a higher-tier partition needs every CPU of the node; Slurm signals the task
    # (SIGTERM, SIGKILL after KillWait) and requeues it (PreemptMode=REQUEUE), and it starts again afterwards
    cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.split()[0]
    subprocess.run(["sbatch", "--partition=high", f"--cpus-per-task={cpus}", "--job-name=urgent",
                    "--output=/dev/null", "--wrap=sleep 2"], check=True, capture_output=True)
    wait_for(lambda: trials(url)[cut.number].state == TrialState.FAIL, timeout=120)
    assert trials(url)[cut.number].user_attrs["fail_reason"] == "interrupted"
    wait_for(lambda: any(t.user_attrs.get("retry_of") == cut.number and t.state == TrialState.COMPLETE
                         for t in trials(url)), timeout=400, step=1)
    retry = next(t for t in trials(url) if t.user_attrs.get("retry_of") == cut.number)
    assert retry.user_attrs["resumed_from_epoch"] >= 2  # nothing lost: it went on from the saved epoch
    _wait_gone(job, timeout=120)
    log = "".join(path.read_text() for path in (tmp_path / "logs").iterdir())
    assert "DUE TO PREEMPTION" in log and "resuming study" in log


def test_a_killed_worker_of_another_host_is_failed_by_its_heartbeat_on_a_journal(tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        if os.environ.get("CI"):
            pytest.fail("needs root and unshare")
        pytest.skip("needs root and unshare")
    (tmp_path / "shared").mkdir()
    url = _journal(tmp_path)
    argv = [*ARRAY, "--epochs", "30", "--trials", "2", "--pruner", "none", "--heartbeat", "2", "--storage", url,
            "--checkpoint-dir", str(tmp_path / "shared" / "c")]
    # a worker on "another host": its own UTS namespace with another hostname, killed with SIGKILL mid-trial
    other = subprocess.Popen(["unshare", "--uts", "--fork", "--kill-child", "sh", "-c", "hostname node-b && exec \"$@\"", "sh",
                              sys.executable, "-m", "commands.run", *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    wait_for(lambda: running_after_epoch(url, 1) is not None)
    victim = running_after_epoch(url, 1)
    assert victim.user_attrs["host"] == "node-b" and victim.user_attrs.get("heartbeat")
    other.kill()
    other.wait()
    started = time.monotonic()
    here = start_search(argv)  # this host: not its process to judge; two heartbeats (4 s) later it is silent
    _, err = here.communicate(timeout=600)
    assert here.returncode == 0, err[-3000:]
    after = trials(url)
    assert "heartbeat stopped" in after[victim.number].user_attrs["fail_reason"]
    retry = next(t for t in after if t.user_attrs.get("retry_of") == victim.number)
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from_epoch"] >= 1
    assert time.monotonic() - started >= 4 and not [t for t in after if t.state == TrialState.RUNNING]


@pytest.fixture
def journal_study(one_trial_study, tmp_path):
    """The one-trial study, copied into a journal file."""
    url = f"journal:///{tmp_path / 'search.journal'}"
    optuna.copy_study(from_study_name="digits-resnet8", from_storage=f"sqlite:///{one_trial_study}",
                      to_storage=open_storage(url))
    return url


@pytest.mark.parametrize("extra, message", [
    (["--epochs", "2"], "epochs"),
    (["--seed", "-1"], "seed"),
    (["--study", "digits-resnet8.confirm"], "confirm stages"),
    (["--storage", "journal:///{tmp}/no-folder/x.journal"], "does not exist"),
])
def test_bad_input_leaves_a_journal_unchanged(journal_study, tmp_path, capsys, extra, message):
    path = tmp_path / "search.journal"
    before = fingerprint(path)
    argv = [*TINY, "--trials", "2", "--storage", journal_study, *[a.replace("{tmp}", str(tmp_path)) for a in extra]]
    capsys.readouterr()
    assert run_command(search_run.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert fingerprint(path) == before and not (tmp_path / "no-folder").exists()


def test_export_never_waits_for_a_writer_holding_the_journals_lock(journal_study, tmp_path, capsys):
    path = tmp_path / "search.journal"
    before = fingerprint(path)
    (tmp_path / "search.journal.lock").touch()  # what a writer stopped in the middle of an append holds
    started = time.monotonic()
    assert run_command(export.main, ["--storage", journal_study, "--output", str(tmp_path / "best.json")]) == 2
    assert "no completed schedule" in capsys.readouterr().err  # the one trial is the baseline: read, refused
    assert time.monotonic() - started < 10 and (tmp_path / "search.journal.lock").exists()
    assert fingerprint(path) == before


@pytest.mark.parametrize("content", [b"SQLite format 3\x00" + bytes(100), b"garbage\n", b"nonewline", b"{}\n",
                                     b'{"op_code": 0, "worker_id": "w"}\n'])
def test_a_file_that_is_not_a_journal_is_refused_and_left_as_it_was(tmp_path, capsys, content):
    path = tmp_path / "other.file"
    path.write_bytes(content)
    url = f"journal:///{path}"
    for command, argv in ((export.main, ["--storage", url, "--output", str(tmp_path / "best.json")]),
                          (search_run.main, [*ARRAY, "--trials", "1", "--storage", url])):
        capsys.readouterr()
        assert run_command(command, argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: storage:") and "Traceback" not in err[0], err
        assert path.read_bytes() == content and not (tmp_path / "best.json").exists()


def test_a_torn_last_record_is_cut_by_the_next_writer_and_never_read(journal_study, tmp_path, capsys):
    path = tmp_path / "search.journal"
    whole = path.read_bytes()
    count = len(optuna.load_study(study_name="digits-resnet8", storage=open_storage(journal_study)).trials)
    path.write_bytes(whole + b'{"op_code":4,"worker_id":"cut-off')  # a writer killed, or a disk full, mid-append
    reader = open_storage(journal_study, create=False, reader=True)  # a reader skips it and changes nothing
    assert len(optuna.load_study(study_name="digits-resnet8", storage=reader).trials) == count
    assert path.read_bytes().endswith(b"cut-off")
    writer = open_storage(journal_study)
    assert path.read_bytes() == whole and "torn last record" in capsys.readouterr().err
    optuna.load_study(study_name="digits-resnet8", storage=writer).add_trial(optuna.trial.create_trial(value=0.5))
    assert len(optuna.load_study(study_name="digits-resnet8", storage=reader).trials) == count + 1


def test_a_dashboard_refresh_on_a_journal_is_one_append(journal_study):
    """A reader sees a figure's 2 kB pieces all replaced or none: they are written in one append (one write of
    the file), not one by one."""
    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects

    from dashboards.live import FIGURE_ID, publish

    storage = open_storage(journal_study)
    optuna.load_study(study_name="digits-resnet8", storage=storage).add_trial(optuna.trial.create_trial(
        value=0.9, user_attrs={"schedule": {"family": "linear", "params": {"start": 1.4, "end": 0.6}}}))  # a new best
    appends, append = [], storage._backend.append_logs
    storage._backend.append_logs = lambda logs: (appends.append(logs), append(logs))[1]  # watch, pass through
    publish(storage, "digits-resnet8", journal_study)
    pieces = [batch for batch in appends if any(str(key).startswith("dashboard:") for entry in batch
                                                for key in entry.get("system_attr", {}))]
    assert len(pieces) == 1 and len(pieces[0]) > 2
    reader = open_storage(journal_study, reader=True)
    attrs = reader.get_study_system_attrs(reader.get_study_id_from_name("digits-resnet8"))
    assert json.loads(get_plotly_graph_objects(attrs)[FIGURE_ID])["data"]
    appends.clear()
    publish(storage, "digits-resnet8", journal_study)  # the same figure again: its pieces are not written again
    assert sum(len(batch) for batch in appends) < len(pieces[0])


def test_silence_is_judged_by_the_writers_interval_and_the_trials_own_clock(tmp_path, monkeypatch):
    from search import liveness
    from search.records import TrialKey

    monkeypatch.setenv("TZ", "America/New_York")  # west of UTC: a journal replays start times as local time
    time.tzset()
    try:
        storage = open_storage(f"journal:///{tmp_path / 's.journal'}")
        study = optuna.create_study(study_name="s", storage=storage)
        study.ask()  # started now, no beat yet: not silent (read as UTC, its start once looked hours old)
        slow, silent = study.ask(), study.ask()
        now = time.time()
        slow.set_user_attr(TrialKey.HEARTBEAT_SECONDS, 60)
        slow.set_user_attr(TrialKey.HEARTBEAT, now - 90)  # within two of its writer's 60 s intervals
        silent.set_user_attr(TrialKey.HEARTBEAT_SECONDS, 60)
        silent.set_user_attr(TrialKey.HEARTBEAT, now - 130)
        assert liveness.fail_silent_trials(storage, study, interval=1) == [silent.number]
        assert "heartbeat stopped (130 s ago)" in study.trials[silent.number].user_attrs["fail_reason"]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_process_held_up_by_a_stale_lock_judges_nobody_meanwhile(tmp_path):
    from storage.journal import WatchedLock

    lock = WatchedLock(str(tmp_path / "j"), grace_seconds=3)
    (tmp_path / "j.lock").touch()  # a writer killed while it held the lock
    taken = threading.Thread(target=lock.acquire)
    taken.start()
    wait_for(lambda: lock.stalled_within(0), timeout=5, step=0.1)  # waiting past a second: stalled now
    taken.join(timeout=10)
    assert not taken.is_alive() and lock.stalled_within(5)  # broken after the grace; the stall is recent
    lock.release()
    time.sleep(1.1)
    assert not lock.stalled_within(1)


@pytest.mark.parametrize("argv, message", [
    (["--", *TINY, "--stor", "postgresql+psycopg://u:S3cret@127.0.0.1/db"], "unrecognized"),
    (["--", *TINY, "--storage", "postgresql+psycopg://u:S3cret@127.0.0.1/db"], "SEARCH_STORAGE"),
    (["--", *TINY, "--storage", "sqlite://"], "SQLite"),
    (["--", *TINY, "--storage", "mysql://h/db"], "not a database"),
    (["--partition", "nosuch", "--", *TINY, "--storage", "journal:///{tmp}/s.journal"], "Invalid partition"),
    (["--partition", "a\nrm -rf ~", "--", *TINY, "--storage", "journal:///{tmp}/s.journal"], "partition"),
    (["--logs", "{tmp}/my logs", "--", *TINY, "--storage", "journal:///{tmp}/s.journal"], "whitespace"),
    (["--script", "{tmp}", "--", *TINY, "--storage", "journal:///{tmp}/s.journal"], "is a folder"),
])
def test_the_slurm_command_refuses_bad_input_before_writing_or_submitting(tmp_path, capsys, argv, message):
    if "Invalid partition" == message:
        _slurm()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    argv = [*(["--script", str(tmp_path / "s.sbatch")] if "--script" not in argv else []),
            *(["--logs", str(tmp_path / "logs")] if "--logs" not in argv else []), *argv]
    capsys.readouterr()
    assert run_command(slurm.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "S3cret" not in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == []
