"""Search shortcut schedules for a CIFAR ResNet with Optuna; every trial is kept in a persistent study.

    python -m search.run --depth 32 --dataset cifar10 --trials 200

Re-running the same command resumes the study and stops once --trials trials have finished (complete or
pruned); nothing that finished is run again. Watch it with `optuna-dashboard sqlite:///search.db`, then
`python -m search.export` the best schedule and `python -m search.evaluate` it over seeds.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from common.cli import ArgumentParser, positive_int, run_command
from common.errors import UsageError
from common.log import log, quiet_optuna, result
from common.machine import gpu_count, prepare_tensorflow
from search.interrupts import EXIT_SIGNAL, interrupted_exit, signals_as_interrupt

EXIT_FAILURES = 1


def build_parser() -> ArgumentParser:
    from search.config import PRUNERS, SAMPLERS
    from search.space import FAMILY_CHOICES
    from storage.artifacts import add_artifact_dir_argument
    from storage.rdb import HEARTBEAT_SECONDS, add_storage_argument
    from training.train import add_training_arguments

    parser = ArgumentParser(prog="python -m search.run", description=__doc__.split("\n\n")[0],
                            epilog="Every trial trains on the fixed 45k/5k split and is judged by validation "
                                   "accuracy; the test set is never touched by the search.")
    add_training_arguments(parser)
    parser.add_argument("--trials", type=positive_int, default=200,
                        help="target count of finished trials (complete + pruned) in the study (default 200)")
    parser.add_argument("--family", default="any", choices=FAMILY_CHOICES,
                        help="schedule family to search; any = the family is itself searched (default any)")
    parser.add_argument("--scale-range", type=float, nargs=2, default=(0.5, 1.5), metavar=("LO", "HI"),
                        help="bounds of every shortcut factor, 0 < LO < HI (default 0.5 1.5)")
    parser.add_argument("--sampler", default="tpe", choices=SAMPLERS,
                        help="tpe (multivariate, seeded), gp, cmaes or random (default tpe)")
    parser.add_argument("--pruner", default="rungs", choices=PRUNERS,
                        help="rungs = keep the top third at 55 %% and 80 %% of the epochs, after the learning-rate "
                             "drops, where accuracy ranks trials as at the end; hyperband = aggressive early "
                             "stopping from epoch 1; median; none (default rungs)")
    add_storage_argument(parser, "SQLAlchemy URL of the study storage")
    parser.add_argument("--study", help="study name (default <dataset>-resnet<depth>)")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="worker processes on this machine sharing the study; with several GPUs one GPU each, "
                             "on a CPU the cores are split between them (default 1)")
    parser.add_argument("--trials-per-gpu", type=positive_int, default=1,
                        help="run this many trials at once on every visible GPU (worker processes sharing it, "
                             "memory growth on): small CIFAR ResNets leave a large GPU mostly idle (default 1)")
    parser.add_argument("--baseline-seeds", type=int, default=3, metavar="R",
                        help="train the baseline R more times on seeds of their own (seed + 1000 + i): their spread is "
                             "the study's noise floor, in which every gain is stated; they count as trials "
                             "(default 3)")
    parser.add_argument("--confirm-top", type=int, default=5, metavar="K",
                        help="after the search, re-train the top K schedules, the baseline and the paper's preset "
                             "on fresh seeds and name the confirmed winner (search.confirm); 0 = off (default 5)")
    parser.add_argument("--confirm-seeds", type=positive_int, default=3, metavar="S",
                        help="fresh seeds per confirmed schedule, seed + 2000 + i (default 3)")
    parser.add_argument("--checkpoint-dir", metavar="DIR",
                        help="where trials save their state after every epoch, so that a trial cut short (kill, "
                             "crash, Ctrl-C) resumes at its last finished epoch when re-run; a folder on storage "
                             "every machine mounts for several machines; none = no checkpoints (default: "
                             "search-checkpoints/ beside a SQLite study, in this folder for other databases)")
    parser.add_argument("--keep-models", type=int, default=5, metavar="K",
                        help="keep the trained models (.keras) of the K best completed schedule trials as Optuna "
                             "artifacts; the rest are deleted as they fall out; 0 = none (default 5)")
    add_artifact_dir_argument(parser)
    parser.add_argument("--tensorboard", metavar="DIR", help="log every trial for TensorBoard, one run folder each "
                        "(DIR/trial-0007): loss, accuracy, validation accuracy and learning rate per epoch")
    parser.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    parser.add_argument("--max-failures", type=positive_int, default=5,
                        help="stop after this many trials in a row failed with an error (default 5)")
    parser.add_argument("--heartbeat", type=positive_int, default=HEARTBEAT_SECONDS,
                        help="seconds between a running trial's heartbeats; a trial silent for twice this long "
                             f"(its worker died) is failed and re-run (default {HEARTBEAT_SECONDS})")
    return parser


def config_from_args(argv: Sequence[str] | None):
    from search.config import SearchConfig

    args = build_parser().parse_args(argv)
    workers = args.workers
    if args.trials_per_gpu > 1:
        gpus = gpu_count()
        if not gpus:
            raise UsageError("trials-per-gpu: no GPU is visible (nvidia-smi found none); use --workers on a CPU")
        workers = max(workers, gpus * args.trials_per_gpu)
    return SearchConfig(
        dataset=args.dataset, depth=args.depth, trials=args.trials, epochs=args.epochs, subset=args.subset,
        batch_size=args.batch_size, precision=args.precision, seed=args.seed, family=args.family,
        scale_range=tuple(args.scale_range), sampler=args.sampler, pruner=args.pruner, storage=args.storage,
        study=args.study, data_dir=args.data_dir, workers=workers, timeout=args.timeout,
        max_failures=args.max_failures, heartbeat=args.heartbeat, steps_per_execution=args.steps_per_execution,
        baseline_seeds=args.baseline_seeds, confirm_top=args.confirm_top, confirm_seeds=args.confirm_seeds,
        checkpoint_dir=args.checkpoint_dir, keep_models=args.keep_models, artifact_dir=args.artifact_dir,
        tensorboard=args.tensorboard)


def main(argv: Sequence[str] | None = None) -> int:
    config = config_from_args(argv)

    quiet_optuna()
    from search.study import finished_count
    from storage.rdb import redacted

    data, epochs, storage, study, resuming = open_search(config)
    done = finished_count(study)
    log.info(f"{'resuming' if resuming else 'new'} study {config.study!r} in {redacted(config.storage)}: "
             f"{done}/{config.trials} trials finished; ResNet-{config.depth}, {data.summary()}, "
             f"{epochs} epochs a trial")
    if done >= config.trials and (not config.confirm_top or "confirmation" in study.user_attrs):
        result("target reached; raise --trials to search further")
        return 0
    if config.workers == 1:
        return search_worker(config, epochs, rank=0, data=data, study=study, storage=storage)
    return _run_workers(config, epochs)


def open_search(config):
    """Check everything the user can get wrong, then open (create or resume) the study: the data, the epochs of a
    trial, the storage, the study, and whether it existed. What the command and the notebook API share."""
    from search.study import check_existing, open_study
    from storage.rdb import open_storage
    from training.data import load_dataset

    # everything the user can get wrong is checked before the storage is written to
    data = load_dataset(config.dataset, config.data_dir, config.subset)
    epochs = config.train.epochs_for(len(data.y_train))
    check_writable(config.checkpoints(config.study))
    storage = open_storage(config.storage, config.heartbeat)
    resuming = check_existing(storage, config)
    return data, epochs, storage, open_study(storage, config, epochs), resuming


def check_writable(folder) -> None:
    """UsageError now, rather than every trial failing, when the checkpoint folder (None: no checkpoints) cannot
    be created: a trial folder is made and removed in its nearest existing parent, so nothing is left behind."""
    if folder is None:
        return
    existing = next(parent for parent in (folder.absolute(), *folder.absolute().parents) if parent.exists())
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-check-", dir=existing))
    except OSError as error:
        raise UsageError(f"checkpoint-dir: cannot create {folder} ({error.strerror} in {existing}); choose "
                         f"another --checkpoint-dir, or none for no checkpoints") from None


def search_worker(config, epochs: int, rank: int = 0, data=None, study=None, storage=None) -> int:
    """``run_search`` with Ctrl-C and SIGTERM turned into a recorded interrupt; the command's exit code.

    ``data``, ``study`` and ``storage`` are what the caller already opened (one worker, in-process); a worker
    process opens its own.
    """
    try:
        with signals_as_interrupt():
            _, stopped = run_search(config, epochs, rank, data, study, storage)
    except KeyboardInterrupt as interrupt:
        return interrupted_exit(interrupt)
    if stopped:
        log.error(f"stopped: {stopped}")
        return EXIT_FAILURES
    return 0


def run_search(config, epochs: int, rank: int = 0, data=None, study=None, storage=None):
    """Run trials in this process until the study has ``config.trials`` finished ones, then the confirm stage;
    the study, and why the search stopped short (``--max-failures`` trials failed in a row) or None.

    No signal handling and no exit: what the command's workers and the notebook API (``search.api``) share.
    """
    prepare_tensorflow()
    import optuna

    from dashboards.live import LiveDashboard, publish
    from search.confirm import run_confirm
    from search.keep import ModelKeeper
    from search.objective import Objective
    from search.progress import FailureGuard, TrialReporter, confirm_runs
    from search.study import FINISHED, baseline_pending, finished_count, open_study
    from storage.rdb import open_storage
    from training.data import load_dataset

    quiet_optuna()
    data = data if data is not None else load_dataset(config.dataset, config.data_dir, config.subset)
    if study is None:
        storage = open_storage(config.storage, config.heartbeat)
        study = open_study(storage, config, epochs, worker=rank)
    keeper = ModelKeeper.for_search(config, storage)
    reporter = TrialReporter(config, show_bar=config.workers == 1, initial=finished_count(study))
    guard = FailureGuard(config.max_failures)
    live = LiveDashboard(storage, config.storage, config.trials, config.workers, confirm_runs(config))
    callbacks = [optuna.study.MaxTrialsCallback(config.trials, states=FINISHED), reporter, guard, live]
    deadline = None if config.timeout is None else time.monotonic() + config.timeout
    try:
        # a study is not done before its baseline has finished: an interrupted baseline's re-run may sit in the
        # queue behind trials that already reach the target
        while ((remaining := config.trials - finished_count(study)) > 0 or baseline_pending(study)) \
                and not guard.tripped:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            study.optimize(Objective(config, data, keeper), n_trials=max(remaining, 1), timeout=left,
                           callbacks=callbacks if remaining > 0 else [reporter, guard, live],
                           catch=(Exception,), gc_after_trial=True)
    finally:
        reporter.close()
    if guard.tripped:
        return study, guard.message()
    reporter.summary(study)
    if config.confirm_top and finished_count(study) >= config.trials:
        run_confirm(config, study, storage, data)
        publish(storage, study.study_name, config.storage, config.trials, config.workers, confirm_runs(config))
    return study, None


def worker_environment(rank: int, workers: int, gpus: int) -> dict[str, str]:
    """Environment of worker ``rank``: its GPU (round robin, memory growth when shared), or its CPU threads."""
    env = dict(os.environ)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(rank % gpus)
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"  # several trials may share one GPU
        if workers > gpus:  # JAX (Keras's other backend) takes 75 % of the GPU at start unless told not to
            env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    else:
        # On CPU, K single-purpose processes beat one process with K times the threads (less synchronisation
        # inside each op); give each worker its share of the cores.
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        env.update(TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS=threads)
    return env


def _run_workers(config, epochs: int) -> int:
    """Start ``config.workers`` processes of ``search.worker`` on this machine and wait for them."""
    import json

    gpus = gpu_count()
    payload = json.dumps({**config.to_dict(), "epochs_resolved": epochs})
    # the configuration (the storage URL with its password among it) travels through a pipe, never on the
    # command line, where ps shows it to every user of the machine
    children = [subprocess.Popen([sys.executable, "-m", "search.worker", str(rank)], stdin=subprocess.PIPE,
                                 env=worker_environment(rank, config.workers, gpus), text=True)
                for rank in range(config.workers)]
    for child in children:
        child.stdin.write(payload)
        child.stdin.close()

    def forward(number, frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(number)

    previous = signal.signal(signal.SIGTERM, forward)
    received = None
    try:
        while any(child.poll() is None for child in children):
            try:
                time.sleep(0.5)
            except KeyboardInterrupt:  # Ctrl-C reaches the children too; wait for them to record it
                received = signal.SIGINT
    finally:
        signal.signal(signal.SIGTERM, previous)
    codes = [child.returncode for child in children]
    interrupted = [code for code in codes if code in EXIT_SIGNAL.values()]
    if interrupted or received is not None:
        return interrupted[0] if interrupted else EXIT_SIGNAL[signal.SIGINT]
    failed = [code for code in codes if code != 0]
    return (failed[0] if failed[0] > 0 else EXIT_FAILURES) if failed else 0


if __name__ == "__main__":
    sys.exit(run_command(main))
