"""Search shortcut schedules for a CIFAR ResNet with Optuna; every trial is kept in a persistent study.

    shortcut-search run --depth 32 --dataset cifar10 --trials 200

Re-running the same command resumes the study and stops once --trials trials have finished (complete or
pruned); nothing that finished is run again. Watch it with `optuna-dashboard sqlite:///search.db`, then
`shortcut-search export` the best schedule and `shortcut-search evaluate` it over seeds.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from commands.flags import (add_artifact_dir_argument, add_confirm_arguments, add_storage_argument,
                            add_fuse_argument, add_target_arguments, add_training_arguments)
from common.cli import ArgumentParser, positive_int, run_command
from common.errors import UsageError
from common.log import quiet_optuna
from common.machine import gpu_count
from dashboards.live import DashboardPublisher
from search.checks import check_database_file
from search.config import SAMPLERS, SearchConfig
from search.interrupts import interruptible
from search.progress import confirm_runs
from search.pruning import PRUNERS
from search.space import FAMILY_CHOICES
from search.workers import WORKER_FLAG, config_from_payload, run_worker
from storage import HEARTBEAT_SECONDS

# how a worker process or a Slurm task starts this command (the one CLI): the library does not know the commands
WORKER_COMMAND = [sys.executable, "-P", "-m", "commands", "run"]  # -P: never a commands/ of the working folder


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shortcut-search run", description=__doc__.split("\n\n")[0],
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
                        help="train the baseline R more times on seeds of their own (seed + 1000 + i): their spread "
                             "estimates the study's noise, sigma_d, until the confirm stage measures it; they count "
                             "as trials (default 3)")
    parser.add_argument("--confirm-top", type=int, default=5, metavar="K",
                        help="after the search, confirm on fresh seeds and say whether a candidate beats the "
                             "baseline (shortcut-search confirm): a race of (K + 2) x S runs by default, or with "
                             "--confirm-budget fixed the top K, the baseline and the paper's preset on S seeds each; "
                             "0 = off (default 5)")
    add_confirm_arguments(parser, "--confirm-seeds", "--confirm-budget")
    add_target_arguments(parser)
    parser.add_argument("--checkpoint-dir", metavar="DIR",
                        help="where trials save their state after every epoch, so that a trial cut short (kill, "
                             "crash, Ctrl-C) resumes at its last finished epoch when re-run; a folder on storage "
                             "every machine mounts for several machines; none = no checkpoints (default: "
                             "search-checkpoints/ beside a SQLite study, in this folder for other databases)")
    parser.add_argument("--keep-models", type=int, default=5, metavar="K",
                        help="keep the trained models (.keras) of the K best completed schedule trials as Optuna "
                             "artifacts; the rest are deleted as they fall out; the confirm stage keeps one per arm "
                             "whatever K; 0 = none (default 5)")
    add_artifact_dir_argument(parser)
    parser.add_argument("--tensorboard", metavar="DIR", help="log every trial for TensorBoard, one run folder each "
                        "(DIR/STUDY/search/trial-00007, the confirm stage's under confirm/): loss, accuracy, validation "
                        "accuracy and learning rate per epoch")
    add_fuse_argument(parser)
    parser.add_argument("--timeout", type=float, help="stop starting new trials after this many seconds")
    parser.add_argument("--max-failures", type=positive_int, default=5,
                        help="stop after this many trials in a row failed with an error (default 5)")
    parser.add_argument("--heartbeat", type=positive_int, default=HEARTBEAT_SECONDS,
                        help="seconds between a running trial's heartbeats; a trial silent for twice this long "
                             f"(its worker died) is failed and re-run (default {HEARTBEAT_SECONDS})")
    parser.add_argument(WORKER_FLAG, type=int, metavar="RANK", help=argparse.SUPPRESS)  # a worker process
    return parser


def config_from_args(argv: Sequence[str] | None) -> SearchConfig:
    return config_from(build_parser().parse_args(argv))


def config_from(args: argparse.Namespace) -> SearchConfig:
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
        confirm_budget=args.confirm_budget,
        checkpoint_dir=args.checkpoint_dir, keep_models=args.keep_models, artifact_dir=args.artifact_dir,
        tensorboard=args.tensorboard, fuse=args.fuse, min_effect=args.min_effect / 100, target_depth=args.target_depth,
        target_epochs=args.target_epochs, target_subset=args.target_subset)


def main(argv: Sequence[str] | None = None) -> int:
    return interruptible(lambda: search(build_parser().parse_args(argv)))  # parsing included


def search(args: argparse.Namespace) -> int:
    if args.worker is not None:  # started by run_workers: the configuration comes on standard input
        config, epochs, invoked_at = config_from_payload(sys.stdin.read())
        return run_worker(config, epochs, rank=args.worker, publisher=dashboard_publisher(config),
                          invoked_at=invoked_at)
    invoked_at = time.time()  # a verdict another worker writes after this is not this invocation's to show
    config = config_from(args)
    check_database_file(config.storage)
    quiet_optuna()
    from search.session import SearchSession  # imports TensorFlow: once the arguments are checked

    session = SearchSession.open(config)
    if isinstance(session, int):  # the environment stopped it (a disk still full): one line said so
        return session
    session.announce()
    return session.run(dashboard_publisher(session.config), invoked_at, WORKER_COMMAND)


def dashboard_publisher(config: SearchConfig) -> DashboardPublisher:
    """The figure and note optuna-dashboard shows, refreshed after every trial."""
    return DashboardPublisher(config.storage, config.trials, config.workers, confirm_runs(config))


if __name__ == "__main__":
    sys.exit(run_command(main))
