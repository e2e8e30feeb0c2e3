"""The Slurm batch script of a search: a job array whose every task is one worker of the same study.

Each task runs ``search.run`` with the same flags through ``srun`` (so ``scancel --signal=TERM`` and a
preemption's SIGTERM reach it): the workers share the study on a journal file on the cluster's shared file system
(or a PostgreSQL server), hand out trials once each, keep checkpoints and models beside the journal, and the
first to find the target reached runs the confirm stage with the others. A preempted task is signalled (SIGTERM,
then SIGKILL after Slurm's KillWait): its running trial saves its last epoch and is marked interrupted, and with
``--requeue`` the task starts again and resumes it first. Threads follow ``SLURM_CPUS_PER_TASK``.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

from common.errors import UsageError
from search.config import SearchConfig
from storage.urls import has_secret, sqlite_path

TIME_LIMIT_SIGNAL_SECONDS = 120  # SIGTERM this long before the time limit: the trial saves and is marked


def check_cluster_storage(config: SearchConfig) -> None:
    """UsageError for a storage the tasks of an array cannot share safely: SQLite (one machine's locks)."""
    if sqlite_path(config.storage) is not None:
        raise UsageError("storage: SQLite is one machine's; the tasks of an array run on several: use "
                         "journal:////SHARED/PATH/search.journal (a shared file system) or PostgreSQL")


def batch_script(config: SearchConfig, run_flags: list[str], tasks: int, cpus_per_task: int,
                 gpus_per_task: int = 0, time_limit: str | None = None, partition: str | None = None,
                 logs: Path = Path("."), workdir: Path = Path(".")) -> str:
    """The sbatch script: a ``tasks``-task array of ``search.run RUN_FLAGS``. A password in the storage URL never
    enters it: such a URL comes from ``$SEARCH_STORAGE``, which sbatch passes on to the tasks."""
    if has_secret(config.storage) and any(flag.startswith("--storage") for flag in run_flags):
        raise UsageError("storage: a URL with a password goes in $SEARCH_STORAGE, never on a command line or in "
                         "a batch script; export it and leave --storage out")
    command = " ".join(shlex.quote(part) for part in [sys.executable, "-m", "search.run", *run_flags])
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name=search-{_name(config.study)}",
             f"#SBATCH --array=0-{tasks - 1}",
             "#SBATCH --ntasks=1",
             f"#SBATCH --cpus-per-task={cpus_per_task}",
             *([f"#SBATCH --gres=gpu:{gpus_per_task}"] if gpus_per_task else []),
             *([f"#SBATCH --time={time_limit}"] if time_limit else []),
             *([f"#SBATCH --partition={partition}"] if partition else []),
             "#SBATCH --requeue",
             f"#SBATCH --signal=TERM@{TIME_LIMIT_SIGNAL_SECONDS}",
             f"#SBATCH --output={logs.absolute() / '%x-%A_%a.out'}",
             "#SBATCH --open-mode=append",
             "",
             f"# {config.study}: {tasks} workers on one study ({_where(config)}); a requeued task resumes.",
             "export TF_NUM_INTRAOP_THREADS=${SLURM_CPUS_PER_TASK:-1} OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1} "
             "TF_NUM_INTEROP_THREADS=1 PYTHONUNBUFFERED=1",
             f"cd {shlex.quote(str(workdir.absolute()))}",
             f"exec srun --kill-on-bad-exit=1 {command}",
             ""]
    return "\n".join(lines)


def _name(study: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in study)[:40]


def _where(config: SearchConfig) -> str:
    return "PostgreSQL" if config.storage.startswith("postgresql") else "a journal on the shared file system"
