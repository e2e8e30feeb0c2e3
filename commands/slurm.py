"""Run the search on a Slurm cluster: write, and submit, a job array whose every task is a worker of one study.

    shortcut-search slurm --tasks 8 --gpus-per-task 1 -- --depth 32 --dataset cifar10 --trials 200 \\
        --storage journal:////shared/studies/search.journal

The flags after ``--`` are ``shortcut-search run``'s, checked here before anything is submitted. The study lives on
a journal file on the cluster's shared file system (or a PostgreSQL server: its URL, password included, goes in
$SEARCH_STORAGE, which sbatch passes on). Checkpoints and models go beside the journal unless --checkpoint-dir and
--artifact-dir say otherwise; put them on the shared file system too. A preempted or time-limited task gets
SIGTERM, saves its running trial and marks it interrupted; with --requeue (on by default) it starts again and
resumes that trial first. Every task's log is in --logs.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Sequence

from common.cli import ArgumentParser, positive_int, run_command
from commands import run as search_run
from common.errors import UsageError
from search.checks import check_shared_journal, check_slurm_time
from search.slurm_script import check_cluster_storage, submit_array


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="shortcut-search slurm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=positive_int, default=4, help="workers: the job array's tasks (default 4)")
    parser.add_argument("--cpus-per-task", type=positive_int, default=1, help="CPU cores of each task; its "
                        "TensorFlow uses that many threads (default 1)")
    parser.add_argument("--gpus-per-task", type=int, default=0, help="GPUs of each task (--gres=gpu:N; default 0)")
    parser.add_argument("--time", help="each task's time limit, as sbatch takes it (e.g. 24:00:00)")
    parser.add_argument("--partition", help="the partition to run in (default: the cluster's)")
    parser.add_argument("--logs", default="slurm-logs", help="folder of the tasks' logs (default slurm-logs)")
    parser.add_argument("--script", default="search.sbatch", help="where to write the batch script "
                        "(default search.sbatch)")
    parser.add_argument("--no-submit", action="store_true", help="write the script, do not submit it")
    parser.add_argument("run", nargs="*", metavar="-- RUN FLAGS", help="shortcut-search run's flags, after --")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.gpus_per_task < 0:
        raise UsageError(f"gpus-per-task: must be >= 0, got {args.gpus_per_task}")
    for flag, value in (("time", args.time), ("partition", args.partition)):
        if value is not None and not re.fullmatch(r"[\w.,:-]+", value):
            raise UsageError(f"{flag}: {value!r} is not a Slurm {flag} (letters, digits and . , : - only)")
    check_slurm_time(args.time)
    config = search_run.config_from_args(args.run)
    check_cluster_storage(config)
    check_shared_journal(config.storage)
    if any(flag == "--worker" or flag.startswith("--worker=") for flag in args.run):
        raise UsageError("run: --worker is the search's own flag for the processes it starts; leave it out")
    return submit_array(config, search_run.WORKER_COMMAND, args.run, args.tasks, args.cpus_per_task,
                        args.gpus_per_task, args.time, args.partition, Path(args.logs), args.script,
                        submit=not args.no_submit)


if __name__ == "__main__":
    sys.exit(run_command(main))
