"""What each storage costs a trial, with 1, 4 and 16 workers on one study: seconds and writes per trial.

    python -m benchmarks.storage_overhead [--workers 1 4 16] [--trials 192] [--postgresql URL] [--folder DIR]

Every worker runs the search loop's real bookkeeping around a trial whose training is free: per iteration the
recovery of dead and cut-short trials under the study's lock (``search.liveness.recover``) and the retry queue
(``search.loop``), then one trial through ``search.liveness.optimize``
that records what a real trial records (schedule, process identity, the journal heartbeat, 30 epochs of
intermediate values, the run record). The trials (``--trials`` in all, split between the workers) go to one study
on SQLite, on a journal file in ``--folder`` (put it on the file system you mean to use: NFS for a cluster) and,
with ``--postgresql``, on PostgreSQL. Seconds per trial is a worker's wall time over its trials (the median worker;
the storage's locks, the readers' replays and the CPU the workers share included); writes per trial count SQL
INSERT/UPDATE/DELETE statements, or journal records appended. The random sampler keeps TPE's cost
(``benchmarks.search_overhead``) out of the figure.
"""
from __future__ import annotations

import json
import multiprocessing
import platform
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace
from pathlib import Path
from typing import Sequence

import optuna

from common.cli import ArgumentParser, positive_int, run_command
from common.errors import UsageError
from common.machine import cpu_info, package_versions
from search import records
from search.config import SearchConfig
from search.liveness import beating, record_process, recover
from search.run_queue import run_next, run_retries
from search.space import suggest_schedule
from storage import open_storage
from storage.journal import is_journal
from storage.urls import redacted

EPOCHS = 30
DEPTH = 32
WRITES = ("INSERT", "UPDATE", "DELETE")


def _objective(config: SearchConfig):
    def objective(trial: optuna.Trial) -> float:
        schedule = suggest_schedule(trial, config.family, config.scale_range)
        values = schedule.values(DEPTH)
        records.write_schedule(trial, schedule, [i / len(values) for i in range(len(values))], values)
        record_process(trial)
        records.TrialKey.SEED.write(trial, trial.number)
        with beating(trial, config.heartbeat):
            curve = [0.1 + 0.8 * epoch / EPOCHS for epoch in range(EPOCHS)]
            for epoch, accuracy in enumerate(curve, start=1):
                trial.report(accuracy, epoch)
            # the fields of training.loop.RunResult that a trial records (without importing TensorFlow 16 times)
            run = SimpleNamespace(epochs_run=EPOCHS, train_loss=curve, train_accuracy=curve, images_per_second=1e3,
                                  resumed_from_epoch=None, learned_values=None)
            records.write_run(trial, run, wall_seconds=1.0)
        return curve[-1]
    return objective


def worker(url: str, study_name: str, trials: int, start, results) -> None:
    """One worker: ``trials`` trials of the loop's bookkeeping; puts (seconds, writes, trials) on ``results``."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = SearchConfig(dataset="cifar10", depth=DEPTH, trials=trials, epochs=EPOCHS, storage=url, heartbeat=60)
    storage = open_storage(url, config.heartbeat)
    writes = [0]
    if not is_journal(storage):
        from sqlalchemy import event

        @event.listens_for(storage.engine, "before_cursor_execute")
        def count(conn, cursor, statement, parameters, context, executemany):
            writes[0] += statement.lstrip().upper().startswith(WRITES)
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=optuna.samplers.RandomSampler())
    objective = _objective(config)
    start.wait()
    began = time.perf_counter()
    for _ in range(trials):
        recover(storage, study, config.heartbeat)
        records.finished_count(study)
        run_retries(storage, study, objective, [])
        run_next(storage, study, objective, [])
    results.put((time.perf_counter() - began, writes[0], trials))


def measure(url: str, workers: int, trials: int) -> dict:
    """Run ``workers`` processes on a new study at ``url``; the figures of one configuration."""
    name = f"overhead-{workers}-{time.time_ns()}"
    storage = open_storage(url)
    optuna.create_study(study_name=name, storage=storage, direction="maximize")
    journal = Path(storage.path) if is_journal(storage) else None
    lines_before = _lines(journal)
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(workers), context.Queue()
    share = [trials // workers + (i < trials % workers) for i in range(workers)]
    processes = [context.Process(target=worker, args=(url, name, n, start, results)) for n in share]
    for process in processes:
        process.start()
    figures = [results.get(timeout=3600) for _ in processes]
    for process in processes:
        process.join()
    done = sum(n for _, _, n in figures)
    writes = (_lines(journal) - lines_before) if journal else sum(w for _, w, _ in figures)
    optuna.delete_study(study_name=name, storage=storage)
    return {"storage": url.split(":")[0], "workers": workers, "trials": done,
            "seconds_per_trial": round(statistics.median(s / n for s, _, n in figures), 4),
            "writes_per_trial": round(writes / done, 1)}


def _file_system(folder: Path) -> str:
    """The type of the file system ``folder`` is on (from /proc/mounts; "unknown" elsewhere)."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    best = max((m for m in mounts if str(folder.resolve()).startswith(m[1])), key=lambda m: len(m[1]), default=None)
    return best[2] if best else "unknown"


def _lines(path: Path | None) -> int:
    return sum(1 for _ in path.open("rb")) if path and path.exists() else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.storage_overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=positive_int, nargs="+", default=[1, 4, 16],
                        help="concurrent workers, one figure each (default 1 4 16)")
    parser.add_argument("--trials", type=positive_int, default=192, help="trials in all per figure (default 192)")
    parser.add_argument("--postgresql", help="a PostgreSQL URL to measure too (a scratch database)")
    parser.add_argument("--folder", help="where the SQLite file and the journal go (default: a temporary folder)")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.folder and not Path(args.folder).is_dir():
        raise UsageError(f"folder: {args.folder} is not a folder")
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        urls = [f"sqlite:///{folder}/overhead.db", f"journal:///{folder}/overhead.journal",
                *([args.postgresql] if args.postgresql else [])]
        print(json.dumps({"cpu": cpu_info(), "python": platform.python_version(), "versions": package_versions(),
                          "file_system": _file_system(Path(folder))}), flush=True)
        for url in urls:
            for workers in args.workers:
                figure = measure(url, workers, max(args.trials, workers))
                print(json.dumps({**figure, "url": redacted(url)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
