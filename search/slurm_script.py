"""The Slurm batch script of a search: a job array whose every task is one worker of the same study.

Each task runs the search command with the same flags through ``srun`` (so ``scancel --signal=TERM`` and a
preemption's SIGTERM reach it): the workers share the study on a journal file on the cluster's shared file system
(or a PostgreSQL server), hand out trials once each, keep checkpoints and models beside the journal, and the
first to find the target reached runs the confirm stage with the others. A preempted task is signalled (SIGTERM,
then SIGKILL after Slurm's KillWait): its running trial saves its last epoch and is marked interrupted, and with
``--requeue`` the task starts again and resumes it first. Threads follow ``SLURM_CPUS_PER_TASK``.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from common.errors import UsageError
from common.files import check_output, check_writable, write_text_atomic
from common.log import result
from search.config import SearchConfig
from storage.journal import check_journal_path
from storage.urls import STORAGE_ENV, engine_url, has_secret, journal_path

TIME_LIMIT_SIGNAL_SECONDS = 120  # SIGTERM this long before the time limit: the trial saves and is marked


def check_cluster_storage(config: SearchConfig) -> None:
    """UsageError, before anything is submitted, for a storage the tasks of an array cannot share: SQLite (one
    machine's locks), and whatever the search would refuse (a journal file that cannot be, a database URL that
    is not one). A database is not connected to: the cluster's nodes may reach it where the login node does not."""
    url = config.storage
    if url.startswith("sqlite"):
        raise UsageError("storage: SQLite is one machine's; the tasks of an array run on several: use "
                         "journal:////SHARED/PATH/search.journal (a shared file system) or PostgreSQL")
    if (path := journal_path(url)) is not None:
        check_journal_path(path)
    else:
        engine_url(url)


def check_script_path(path: Path, flag: str) -> None:
    """UsageError for a path an #SBATCH line cannot hold: whitespace and quotes end or break the directive, and
    sbatch reads ``%`` as a file name pattern."""
    if re.search(r"[\s'\"%\\]", str(path.absolute())):
        raise UsageError(f"{flag}: {path.absolute()} holds whitespace, a quote, a backslash or '%', which an #SBATCH "
                         f"line cannot; choose a plainer path")


def batch_script(config: SearchConfig, run_command: list[str], run_flags: list[str], tasks: int, cpus_per_task: int,
                 gpus_per_task: int = 0, time_limit: str | None = None, partition: str | None = None,
                 logs: Path = Path("."), workdir: Path = Path(".")) -> str:
    """The sbatch script: a ``tasks``-task array of ``RUN_COMMAND RUN_FLAGS`` (``run_command``: how the caller
    starts the search, e.g. its CLI's run subcommand). A password in the storage URL never enters it: such a URL
    comes from ``$SEARCH_STORAGE``, which sbatch passes on to the tasks."""
    from_environment = config.storage == os.environ.get(STORAGE_ENV) and not any(
        flag == "--storage" or flag.startswith("--storage=") for flag in run_flags)
    if has_secret(config.storage) and not from_environment:
        raise UsageError("storage: a URL with a password goes in $SEARCH_STORAGE, never on a command line or in "
                         "a batch script; export it and leave --storage out")
    check_script_path(logs, "logs")
    command = " ".join(shlex.quote(part) for part in [*run_command, *run_flags])
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
             *([f': "${{{STORAGE_ENV}:?sbatch passed no {STORAGE_ENV} on: submit with --export=ALL}}"']
               if from_environment else []),
             f"cd {shlex.quote(str(workdir.absolute()))}",
             f"exec srun --kill-on-bad-exit=1 {command}",
             ""]
    return "\n".join(lines)


def _name(study: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in study)[:40]


def _where(config: SearchConfig) -> str:
    return "PostgreSQL" if config.storage.startswith("postgresql") else "a journal on the shared file system"


def submit_array(config: SearchConfig, run_command: list[str], run_flags: list[str], tasks: int, cpus_per_task: int,
                 gpus_per_task: int, time_limit: str | None, partition: str | None, logs: Path, script_path: str,
                 submit: bool = True) -> int:
    """Write the batch script (``batch_script``'s arguments) to ``script_path`` and, with ``submit``, hand it to
    sbatch; Slurm's own check (partition, time, resources) runs before anything is written. The exit code."""
    check_writable(logs, "logs", "choose another folder")
    check_output(script_path, "script")
    script = batch_script(config, run_command, run_flags, tasks, cpus_per_task, gpus_per_task, time_limit,
                          partition, logs)
    if submit:
        if not shutil.which("sbatch"):
            raise UsageError("slurm: sbatch is not on PATH; run this on the cluster's login node, or --no-submit")
        sbatch(["--test-only"], script, "refused the script")
    logs.mkdir(parents=True, exist_ok=True)
    path = write_text_atomic(script_path, script)
    if not submit:
        result(f"wrote {path}: submit it with sbatch {path}")
        return 0
    job = sbatch(["--parsable", str(path)], None, f"refused {path}").strip().split(";")[0]
    result(f"submitted job {job}: {tasks} workers of study {config.study!r} (script {path}, logs in {logs}); "
           f"squeue -j {job} shows them, and the same command after it resumes")
    return 0


def sbatch(flags: list[str], script: str | None, what: str) -> str:
    """Run sbatch (the script on its standard input when given); its output, or a UsageError with its last
    line."""
    done = subprocess.run(["sbatch", *flags], input=script, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise UsageError(f"slurm: sbatch {what}: {last}")
    return done.stdout
