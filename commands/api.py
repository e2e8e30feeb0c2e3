"""The tool from Python, e.g. a notebook: the same code paths as the commands, without their argument parsing,
signal handlers or exits.

    from commands import api
    from search.config import SearchConfig

    study = api.search(SearchConfig(dataset="digits", depth=8, epochs=3, trials=12, storage="sqlite:///nb.db"))
    document = api.export(study)                      # the dict shortcut-search export writes as best.json
    record = api.evaluate(["paper-c10-r32", "learned"], depth=8, dataset="digits", epochs=3, seeds=3)

Errors in what you pass raise ``common.errors.UsageError`` (a ValueError) with the message a command prints;
Ctrl-C raises KeyboardInterrupt, and the interrupted trial is failed in the study, to be re-run by the next search.
Like the commands, it wires the library together (the dashboard's publisher into the search loop).
"""
from __future__ import annotations

from typing import Sequence

import optuna

from common.errors import UsageError
from common.machine import prepare_tensorflow
from dashboards.live import DashboardPublisher
from search.checks import check_database_file
from search.config import SearchConfig
from search.records import EVALUATION_SEED_START
from search.evidence.document import export_document
from search import evaluation
from search.interrupts import tracked
from search.progress import confirm_runs


def search(config: SearchConfig) -> optuna.Study:
    """Run (or resume) the search ``config`` describes in this process, confirm stage included when
    ``config.confirm_top``; the study. One worker: for several, run the command with ``--workers``."""
    if config.workers != 1:
        raise UsageError("workers: the API searches in this process; run shortcut-search run --workers K for more")
    check_database_file(config.storage)
    prepare_tensorflow()
    from search.session import SearchSession  # imports TensorFlow: after prepare_tensorflow

    session = SearchSession(config)
    publisher = DashboardPublisher(session.config.storage, session.config.trials, 1, confirm_runs(session.config))
    with tracked():  # a Ctrl-C is never lost, even when Optuna's tell of a taken-over trial raises in its place
        study, stopped = session.run_here(publisher)
    if stopped:
        raise RuntimeError(f"search stopped: {stopped}")
    return study


def export(study: optuna.Study, depth: int | None = None) -> dict:
    """The study's answer as ``shortcut-search export`` writes it: the confirmed winner (else the best schedule trial)
    realised at ``depth`` (default: the verdict's: the search's, or its target's), with provenance and
    evidence."""
    return export_document(study, depth)


def evaluate(schedules: Sequence[str], *, depth: int = 32, dataset: str = "cifar10", seeds: int = 5,
             epochs: int | None = None, subset: int | None = None, batch_size: int = 128, precision: str = "auto",
             seed: int = EVALUATION_SEED_START, data_dir: str | None = None, tensorboard: str | None = None) -> dict:
    """``shortcut-search evaluate``: the baseline and each of ``schedules`` (files, presets, ``learned``, ``skipinit``)
    trained and tested on seeds ``seed .. seed + seeds - 1``; the record it writes (arms, CIs, Holm's p)."""
    prepare_tensorflow()  # before the runs import it
    return evaluation.evaluate(schedules, depth=depth, dataset=dataset, seeds=seeds, epochs=epochs, subset=subset,
                               batch_size=batch_size, precision=precision, seed=seed, data_dir=data_dir,
                               tensorboard=tensorboard)
