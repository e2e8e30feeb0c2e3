"""Crashes, interruptions, failing trials, many workers, PostgreSQL, and reproducibility: real processes."""
import datetime
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from queue_worker import claim_and_finish, open_new_study, open_storage_at, publish_and_read
from search import objective as objective_module
from commands import run as search_run
from search import workers
from storage.journal import open_journal
from storage.urls import journal_path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--depth", "8", "--dataset", "digits", "--subset", "100", "--epochs", "1", "--batch-size", "50",
        "--precision", "float32", "--family", "linear", "--confirm-top", "0", "--baseline-seeds", "0"]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def start_search(argv, **kwargs):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "commands.run", *argv], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def wait_for(condition, timeout=180, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    raise AssertionError("timed out waiting")


def trials(url, name="digits-resnet8"):
    """The study's trials so far ([] before it exists); ``url`` names any storage, a journal included."""
    storage = url
    if journal_path(url) is not None:
        if not journal_path(url).is_file():
            return []
        storage = open_journal(journal_path(url), reader=True)
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return []


def running_mid_epoch(url):
    """A trial is running and has reported at least one epoch: the worker is inside a training run."""
    return any(t.state == TrialState.RUNNING and t.intermediate_values for t in trials(url))


def running_after_epoch(url, epochs=2):
    """A trial is running and has finished ``epochs`` epochs: a checkpoint holds them."""
    return next((t for t in trials(url) if t.state == TrialState.RUNNING and len(t.intermediate_values) >= epochs),
                None)


def first_started(url, since):
    """The first trial a process started after ``since`` (a datetime) started."""
    started = [t for t in trials(url) if t.datetime_start and t.datetime_start >= since]
    return min(started, key=lambda t: t.datetime_start)


def _cut_short_argv(url, folder):
    return [*TINY, "--epochs", "12", "--pruner", "none", "--storage", url, "--checkpoint-dir", str(folder / "c"),
            "--artifact-dir", str(folder / "a")]


def _rerun(argv):
    """``search.run`` again, to its end; the time it started (the trials it started come after it)."""
    since = datetime.datetime.now()
    done = subprocess.run([sys.executable, "-m", "commands.run", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return since, done.stderr


def test_a_trial_killed_mid_run_is_finished_first_even_when_the_target_is_met(tmp_path):
    """kill -9 during the second trial, three references waiting behind it; a re-run whose target (--trials 1)
    is met already still finishes the killed trial, from its checkpoint: work paid for is never thrown away."""
    url = f"sqlite:///{tmp_path / 'search.db'}"
    argv = _cut_short_argv(url, tmp_path)
    first = start_search([*argv, "--trials", "3"])
    wait_for(lambda: (running := running_after_epoch(url)) is not None and running.number >= 1)  # past the baseline
    victim = running_after_epoch(url)
    first.kill()
    first.wait()
    assert [t.state for t in trials(url)].count(TrialState.WAITING) == 3
    since, err = _rerun([*argv, "--trials", "1"])
    assert "finishing the interrupted trials" in err
    retry = first_started(url, since)
    assert retry.user_attrs["retry_of"] == victim.number and "worker died" in \
        trials(url)[victim.number].user_attrs["fail_reason"]
    assert retry.state == TrialState.COMPLETE and retry.user_attrs["resumed_from_epoch"] >= 2
    assert [t.state for t in trials(url)].count(TrialState.WAITING) == 3  # the target was met: nothing else ran
    assert not list((tmp_path / "c").rglob("state.npz"))  # its checkpoint went with its recorded result


def test_ctrl_c_mid_trial_exits_130_and_the_rerun_resumes_that_trial_first_on_postgresql(postgres_url, tmp_path):
    """Ctrl-C after two epochs of the first trial: exit code 130 and one line; the re-run starts with that trial,
    resumed from its checkpoint, then finishes the study: nothing running, no checkpoint left. (kill -9: the test
    above; SIGTERM, through the same handler: the confirm stage's test in test_search.)"""
    argv = _cut_short_argv(postgres_url, tmp_path)
    interrupted = start_search([*argv, "--trials", "2"])
    wait_for(lambda: running_after_epoch(postgres_url))
    cut = running_after_epoch(postgres_url)
    interrupted.send_signal(signal.SIGINT)
    _, err = interrupted.communicate(timeout=120)
    assert interrupted.returncode == 130, err[-2000:]
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("interrupted") and "resume" in last and "Traceback" not in err
    assert trials(postgres_url)[cut.number].user_attrs["fail_reason"] == "interrupted"
    since, err = _rerun([*argv, "--trials", "2"])
    resumed = first_started(postgres_url, since)
    assert resumed.user_attrs["retry_of"] == cut.number and resumed.user_attrs["resumed_from_epoch"] >= 2
    assert resumed.params == cut.params and resumed.user_attrs.get("preset") == cut.user_attrs.get("preset")
    after = trials(postgres_url)
    assert sum(t.state in FINISHED for t in after) == 2 and not [t for t in after if t.state == TrialState.RUNNING]
    assert not list((tmp_path / "c").rglob("state.npz")) and not list((tmp_path / "c").rglob("trial-*"))
    assert "did not run:" in err and "learned, skipinit; --trials 5 runs them" in err


def test_failing_trials_are_recorded_and_a_repeated_failure_stops_the_search(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    real_run = objective_module.run
    calls = []

    def sometimes_out_of_memory(config, schedule, data, **kwargs):
        calls.append(schedule)
        if len(calls) % 2 == 0:
            raise RuntimeError("ResourceExhaustedError: OOM when allocating tensor")
        return real_run(config, schedule, data, **kwargs)

    monkeypatch.setattr(objective_module, "run", sometimes_out_of_memory)
    assert search_run.main([*TINY, "--trials", "3", "--storage", url]) == 0
    failed = [t for t in trials(url) if t.state == TrialState.FAIL]
    assert failed and all("OOM" in t.user_attrs["fail_reason"] for t in failed)
    assert sum(t.state in FINISHED for t in trials(url)) == 3

    def always_out_of_memory(config, schedule, data, **kwargs):
        raise RuntimeError("ResourceExhaustedError: OOM when allocating tensor")

    monkeypatch.setattr(objective_module, "run", always_out_of_memory)
    capsys.readouterr()
    assert search_run.main([*TINY, "--trials", "10", "--storage", url, "--max-failures", "3"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "3 trials in a row failed" in last and "OOM when allocating" in last


def test_diverged_trial_is_pruned_with_its_reason(tmp_path, monkeypatch):
    """A NaN loss is a property of the schedule: the trial is pruned as 'diverged', never counted as good."""
    url = f"sqlite:///{tmp_path / 'search.db'}"
    from training.config import TrainConfig

    argv = [*TINY, "--trials", "1", "--storage", url]
    config = search_run.config_from_args(argv)
    object.__setattr__(config, "train", TrainConfig(depth=8, epochs=2, batch_size=50, precision="float32",
                                                    learning_rate=1e12))
    monkeypatch.setattr(search_run, "config_from", lambda args: config)
    assert search_run.main(argv) == 0
    trial = trials(url)[0]  # the first trial run; the other warm-start trials still wait
    assert [t.state for t in trials(url)[1:]] == [TrialState.WAITING] * (len(trials(url)) - 1)
    assert trial.state == TrialState.PRUNED and "loss became" in trial.user_attrs["diverged"]


def test_same_seed_same_schedules_and_same_curves(tmp_path):
    studies = []
    for name in ("a", "b"):
        url = f"sqlite:///{tmp_path / f'{name}.db'}"
        # the linear family within 0.5-1.2 (no paper schedule fits): 3 warm-start trials (the baseline, the learned
        # arms), then 1 of TPE's
        argv = [*TINY, "--trials", "4", "--scale-range", "0.5", "1.2", "--storage", url, "--seed", "5",
                "--pruner", "none"]
        assert search_run.main(argv) == 0
        studies.append(trials(url))
    a, b = studies
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.intermediate_values for t in a] == [t.intermediate_values for t in b]
    assert len({(str(t.params), t.user_attrs.get("preset")) for t in a}) == 4
    assert sum("preset" not in t.user_attrs for t in a) == 1


def _parallel_search(url, workers, trials_target):
    argv = [*TINY, "--trials", str(trials_target), "--storage", url, "--pruner", "none", "--workers",
            str(workers)]
    done = subprocess.run([sys.executable, "-m", "commands.run", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    crash = done.stderr.find("Traceback")
    assert done.returncode == 0, done.stderr[crash:crash + 3000] if crash >= 0 else done.stderr[-3000:]
    assert "database is locked" not in done.stderr
    return done


def _assert_parallel_study(url, workers, target):
    all_trials = trials(url)
    numbers = [t.number for t in all_trials]
    assert sorted(numbers) == list(range(len(numbers)))  # unique, none lost
    assert not [t for t in all_trials if t.state in (TrialState.FAIL, TrialState.RUNNING)]
    finished = sum(t.state in FINISHED for t in all_trials)
    assert target <= finished <= target + workers - 1
    assert sum(t.user_attrs.get("preset") == "baseline" and not t.user_attrs.get("replica") for t in all_trials) == 1


def test_four_workers_share_one_sqlite_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    seen = []  # the workers' command lines, read from /proc while they run, as ps shows them to any user
    watcher = threading.Thread(target=lambda: seen.extend(_worker_command_lines(wait=120)), daemon=True)
    watcher.start()
    _parallel_search(url, 4, 6)
    watcher.join(timeout=10)
    _assert_parallel_study(url, 4, 6)
    assert seen and not [line for line in seen if str(tmp_path) in line or "storage" in line], seen


def _worker_command_lines(wait: float) -> list[str]:
    """The command lines of this machine's worker processes (``commands run --worker RANK``), once some run."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        lines = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if " run --worker" in line:
                lines.append(line)
        if lines:
            return lines
        time.sleep(0.1)
    return []


def started_together(target, url, count: int) -> list:
    """Run ``target(url, start_at, results)`` in ``count`` spawned processes that all begin at ``start_at``; each
    must exit 0. What they put on ``results``, one item each."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 3
    processes = [context.Process(target=target, args=(url, start_at, results)) for _ in range(count)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [process.exitcode for process in processes] == [0] * count
    return [results.get(timeout=10) for _ in processes]


def _assert_each_enqueued_trial_runs_once(url, processes=4, enqueued=40):
    from storage import open_storage

    study = optuna.create_study(study_name="queue", storage=open_storage(url, None))
    for value in range(enqueued):
        study.enqueue_trial({"x": float(value)})
    numbers = [number for claimed in started_together(claim_and_finish, url, processes) for number in claimed]
    assert len(numbers) == len(set(numbers)) >= enqueued  # no trial ran twice (optuna/optuna#4002 on SQLite)
    assert not study.get_trials(states=(TrialState.WAITING, TrialState.RUNNING))


def test_processes_starting_a_new_study_together_queue_each_warm_start_trial_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'search.db'}"
    seeds = started_together(open_new_study, url, 3)
    assert len(set(seeds)) == 3 and seeds.count(0) == 1  # only the creator samples from --seed
    presets = [t.user_attrs["preset"] for t in trials(url)]
    assert presets == ["baseline", "paper-c10-r32", "baseline", "baseline", "baseline", "paper-c10-r56",
                       "paper-c100-r32", "paper-c100-r56", "learned", "skipinit"]  # the warm start, once


def _assert_dashboard_writes_are_whole(url):
    from optuna_dashboard import save_note

    from search.config import SearchConfig
    from search.study import open_study
    from storage import open_storage

    study = open_study(open_storage(url, None), SearchConfig(dataset="digits", depth=8, epochs=1), epochs=1)
    save_note(study, "My remarks: typed in optuna-dashboard.")
    # three workers refresh the figure and the note as their trials finish, reading them back as a dashboard does;
    # written chunk by chunk, reads caught half-replaced figures (invalid JSON) or two tool sections
    assert started_together(publish_and_read, url, 3) == [0, 0, 0]


def test_workers_refreshing_the_dashboard_never_leave_it_half_written_on_sqlite(tmp_path):
    _assert_dashboard_writes_are_whole(f"sqlite:///{tmp_path / 'search.db'}")


def test_workers_on_sqlite_never_claim_the_same_enqueued_trial(tmp_path):
    _assert_each_enqueued_trial_runs_once(f"sqlite:///{tmp_path / 'queue.db'}")


def test_machines_starting_on_a_new_postgresql_database_together_all_open_it(postgres_url):
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(postgres_url)
    fresh = f"fresh_{os.getpid()}_{int(time.time())}"
    admin = server.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {fresh}")
    try:
        url = server.set(database=fresh).render_as_string(hide_password=False)
        # without the schema lock, all but one failed with a UniqueViolation on pg_type_typname_nsp_index
        assert started_together(open_storage_at, url, 4) == ["ok"] * 4
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f"DROP DATABASE IF EXISTS {fresh} WITH (FORCE)")


def test_workers_refreshing_the_dashboard_never_leave_it_half_written_on_postgresql(postgres_url):
    _assert_dashboard_writes_are_whole(postgres_url)


def test_workers_on_postgresql_never_claim_the_same_enqueued_trial(postgres_url):
    _assert_each_enqueued_trial_runs_once(postgres_url)


def test_two_machines_starting_a_new_study_together_share_it_and_never_show_its_password(postgres_url, secret_role,
                                                                                        tmp_path):
    """Two `search.run` processes, as on two machines, started at once on a new PostgreSQL database, the URL in
    $SEARCH_STORAGE with the password of a role that must give it (.ci/services)."""
    import psycopg
    from optuna_dashboard import get_note
    from sqlalchemy.engine import make_url

    password, _, database = secret_role
    url = make_url(postgres_url).set(username="search_secret", password=password, database=database)
    with pytest.raises(psycopg.OperationalError, match="password"):  # the password is really needed
        psycopg.connect(url.set(drivername="postgresql", password="wrong").render_as_string(False)).close()
    url = url.render_as_string(hide_password=False)
    target = 8
    argv = [*TINY, "--family", "any", "--baseline-seeds", "1", "--confirm-top", "1", "--confirm-seeds", "2",
            "--trials", str(target), "--pruner", "none", "--checkpoint-dir", str(tmp_path / "checkpoints"),
            "--artifact-dir", str(tmp_path / "artifacts")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "SEARCH_STORAGE": url}
    machines = [subprocess.Popen([sys.executable, "-m", "commands.run", *argv], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    command_lines = [(Path("/proc") / str(m.pid) / "cmdline").read_bytes().decode() for m in machines]
    outputs = [m.communicate(timeout=900) for m in machines]
    for machine, (out, err) in zip(machines, outputs):
        assert machine.returncode == 0, err[-3000:]
    all_trials = trials(url)
    _assert_parallel_study(url, len(machines), target)
    searched = [t for t in all_trials if "failed_trial" not in t.system_attrs and "retry_of" not in t.user_attrs]
    runs = [(sorted(t.params.items()), t.user_attrs["seed"], t.user_attrs.get("preset")) for t in searched]
    assert len(runs) == len(set(map(str, runs)))  # no trial ran twice, not even the random start-up ones
    presets = [(t.user_attrs["preset"], t.user_attrs.get("replica", False)) for t in searched if
               "preset" in t.user_attrs]
    assert len(presets) == len(set(presets)) >= 5  # each warm-start trial once: baseline, its replica, presets
    studies = [optuna.load_study(study_name=name, storage=url) for name in optuna.get_all_study_names(url)]
    assert len(studies) == 2  # the search and its confirm stage
    stored = [get_note(study) for study in studies]
    assert 'shortcut-search export --storage "$SEARCH_STORAGE"' in "".join(stored)  # the note was written, safely
    for study in studies:
        stored += [study.user_attrs, study._storage.get_study_system_attrs(study._study_id)]
        stored += [(t.user_attrs, t.system_attrs) for t in study.get_trials(deepcopy=False)]
    assert password not in repr([outputs, stored, command_lines])
    assert "search_secret:***@" in outputs[0][1]  # the URL is shown, without its password


def test_worker_environment_pins_gpus_round_robin_or_splits_cpu_threads(monkeypatch):
    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    shared = [workers.worker_environment(rank, 4, gpus=2) for rank in range(4)]
    assert [env["CUDA_VISIBLE_DEVICES"] for env in shared] == ["0", "1", "0", "1"]
    assert all(env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" for env in shared)
    assert all(env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" for env in shared)  # JAX would take 75 % each
    alone = [workers.worker_environment(rank, 2, gpus=2) for rank in range(2)]
    assert all("XLA_PYTHON_CLIENT_PREALLOCATE" not in env for env in alone)
    cpu = workers.worker_environment(0, 2, gpus=0)
    expected = str(max(1, (os.cpu_count() or 1) // 2))
    assert cpu["TF_NUM_INTRAOP_THREADS"] == cpu["OMP_NUM_THREADS"] == expected
    assert cpu["TF_NUM_INTEROP_THREADS"] == "1" and "CUDA_VISIBLE_DEVICES" not in cpu


def test_trials_per_gpu_without_a_gpu_is_a_usage_error(tmp_path, capsys, monkeypatch):
    from common.cli import run_command

    monkeypatch.setattr(search_run, "gpu_count", lambda: 0)
    url = f"sqlite:///{tmp_path / 'search.db'}"
    assert run_command(search_run.main, [*TINY, "--trials", "2", "--storage", url, "--trials-per-gpu", "4"]) == 2
    assert "no GPU" in capsys.readouterr().err and not (tmp_path / "search.db").exists()
    monkeypatch.setattr(search_run, "gpu_count", lambda: 2)
    config = search_run.config_from_args([*TINY, "--trials", "2", "--storage", url, "--trials-per-gpu", "4"])
    assert config.workers == 8


def test_every_trial_cut_short_is_queued_again_once_whoever_failed_it_and_errors_are_not(tmp_path):
    from search.liveness import DIED, recover
    from search.records import INTERRUPTED
    from storage import MAX_RETRY, open_storage

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    reasons = {0: f"{DIED} (pid 1 on h)",  # a kill between failing it and queueing its retry
               1: None,  # failed by Optuna's stale-heartbeat check, which writes no reason
               2: INTERRUPTED, 3: "ValueError: a real error of the run"}
    for reason in reasons.values():
        study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": reason}
                                                  if reason else {}))
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": DIED},
                                              system_attrs={"retry_history": list(range(90, 90 + MAX_RETRY))}))
    # a chain retried by an earlier version (Optuna's callback: failed_trial, and retry_of copied): 5 -> 6 -> 7
    study.add_trial(optuna.trial.create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": DIED}))
    for history in ([5], [5, 6]):
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.FAIL if len(history) == 1 else TrialState.COMPLETE, value=None if len(history) == 1
            else 0.5, user_attrs={"fail_reason": DIED, "retry_of": 5},
            system_attrs={"failed_trial": 5, "retry_history": history}))
    # four processes open the study at once: one retry each, never two
    threads = [threading.Thread(target=recover, args=(open_storage(url), study, 60)) for _ in range(4)]
    [thread.start() for thread in threads]
    [thread.join() for thread in threads]
    recover(open_storage(url), study, 60)  # and again later
    retries = {t.user_attrs["retry_of"]: t.system_attrs["retry_history"]
               for t in study.get_trials(states=(TrialState.WAITING,))}
    assert retries == {0: [0], 1: [1], 2: []}  # an interrupt does not count; an error, the worn-out and a
    # finished chain are left


def test_an_error_outside_the_run_is_recorded_and_never_taken_for_a_death(tmp_path):
    from search.liveness import recover
    from search.objective import records_its_errors
    from storage import open_storage

    class Broken:
        @records_its_errors
        def __call__(self, trial):
            raise RuntimeError("disk full")  # e.g. while writing the schedule, before any training

    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(Broken(), n_trials=1, catch=(Exception,))
    assert study.trials[0].user_attrs["fail_reason"] == "RuntimeError: disk full"
    assert recover(storage, study, 60) == []  # an error is not retried as if its worker had died
