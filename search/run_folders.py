"""One folder per run: where a trial keeps its epoch checkpoint and its TensorBoard log, and when they go.

A run's folder is named by its study, its stage and its trial: ``<study>/<stage>/trial-00007``, the study part a
readable prefix of its name and a digest of all of it (``digits-resnet8-3fa2c1d9``: names that sanitise alike,
``a/b`` and ``a b``, never share a folder, and ``..`` or 300 characters are just a name). The stage is
``search``, ``confirm`` or ``evaluate``.

A checkpoint outlives its run until the run's result is in the study (``sweep`` after the trial is told, or when a
study is opened after a kill in between). A retry takes over the checkpoint of the trial it re-runs (``inherit``),
so it resumes where that one stopped; a failed trial's folder waits for its retry and goes once none will come.
"""
from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import optuna
from optuna.trial import TrialState

from common.log import log
from search import records

STAGES = ("search", "confirm", "evaluate")
PREFIX_LENGTH = 40


def study_folder(study_name: str) -> str:
    """A folder name for a study: a sanitised prefix of its name, and a digest of the whole name."""
    prefix = re.sub(r"[^\w.-]", "_", study_name)[:PREFIX_LENGTH].strip(".") or "study"
    return f"{prefix}-{hashlib.sha256(study_name.encode()).hexdigest()[:8]}"


def stage_of(study_name: str) -> str:
    return "confirm" if records.is_confirm_study(study_name) else "search"


def run_folder(root: Path, study_name: str, number: int, stage: str | None = None) -> Path:
    """The folder of trial ``number`` of ``study_name`` under ``root`` (``<study>/<stage>/trial-00007``); a confirm
    study's runs go beside its search study's, under ``confirm``."""
    search_name = study_name[:-len(records.CONFIRM_SUFFIX)] if records.is_confirm_study(study_name) else study_name
    return root / study_folder(search_name) / (stage or stage_of(study_name)) / f"trial-{number:05d}"


def inherit(root: Path, study: optuna.Study, trial: optuna.Trial) -> Path:
    """The running ``trial``'s folder, holding the checkpoint of the trial it re-runs when there is one (moved:
    the retry takes it over)."""
    own = run_folder(root, study.study_name, trial.number)
    predecessor = records.retry_of(trial)
    if predecessor is not None and not own.exists():
        earlier = run_folder(root, study.study_name, predecessor)
        if earlier.is_dir():
            own.parent.mkdir(parents=True, exist_ok=True)
            earlier.rename(own)
    return own


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def sweep(root: Path | None, study: optuna.Study) -> int:
    """Remove the folders of the study's runs that are over: finished trials (their result is recorded), failed
    trials no retry will take over, and numbers the study does not hold; stale temporary files go with them.
    Running and waiting trials' folders stay, and a failed trial's while a retry of it waits. The count removed."""
    if root is None:
        return 0
    base = run_folder(root, study.study_name, 0).parent
    if not base.is_dir():
        return 0
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    awaited = {records.retry_of(t) for t in trials.values() if t.state in (TrialState.WAITING, TrialState.RUNNING)}
    removed = 0
    for folder in base.glob("trial-*"):
        match = re.fullmatch(r"trial-(\d+)", folder.name)
        trial = trials.get(int(match[1])) if match else None
        keep = trial is not None and (trial.state in (TrialState.RUNNING, TrialState.WAITING)
                                      or (trial.state == TrialState.FAIL and trial.number in awaited))
        if not keep:
            remove(folder)
            removed += 1
    if removed:
        log.info(f"removed {removed} checkpoint folder(s) of finished or abandoned runs of {study.study_name!r}")
    return removed
