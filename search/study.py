"""The study: created once with its settings and warm start, refused under other settings, resumed as it is.

A new study is warm-started with the baseline (f = 1) and the paper's schedules, so that every search has a
reference trained on the same budget and starts from what the authors found by hand; then with the learned arms
(``learned``, ``skipinit``), which show where a network that learns its own factors lands on the same budget. The
configuration is stored on the study and checked on every later run, before anything is written.
"""
from __future__ import annotations

import dataclasses
import time

import optuna

from common.errors import UsageError
from common.log import log
from common.machine import package_versions
from models.schedules import LEARNED, PAPER_PRESETS, paper_preset_for, preset
from search import records, run_folders
from search.config import SearchConfig, settings_difference
from search.keep import ArmModelKeeper, ModelKeeper
from search.liveness import recover
from search.pruning import make_pruner
from search.records import BASELINE, StudyKey
from search.samplers import make_sampler, sampler_seed
from search.space import trial_params
from storage import load_existing_study, open_storage
from training.data import load_dataset

CREATION_WAIT_SECONDS = 15  # how long a process joining a study that is being created waits for its warm start


def check_target_data(config: SearchConfig) -> None:
    """UsageError now, not after the search, for a ``--target-subset`` the data set cannot give."""
    if config.target_subset is not None and config.target_subset != config.subset:
        try:
            load_dataset(config.dataset, config.data_dir, config.target_subset)
        except UsageError as error:
            raise UsageError(f"target-{error}") from None


def settle_target(study: optuna.Study, config: SearchConfig) -> SearchConfig:
    """``config`` with the study's confirm target: ``--target-*`` flags given are recorded on the study; without
    any, the ones recorded are kept (a resumed or extended search, or ``confirm --study``, does not fall back to
    the search's own budget because a flag was left out; give the search's own values to drop a target)."""
    given = {"depth": config.target_depth, "epochs": config.target_epochs, "subset": config.target_subset}
    stored = StudyKey.TARGET.of(study)
    if config.has_target():
        if stored != given:
            StudyKey.TARGET.write(study, given)
        return config
    if not stored or not any(value is not None for value in stored.values()):
        return config
    shown = ", ".join(f"--target-{key} {value}" for key, value in stored.items() if value is not None)
    log.info(f"the confirm stage keeps the study's target ({shown})")
    return dataclasses.replace(config, target_depth=stored["depth"], target_epochs=stored["epochs"],
                               target_subset=stored["subset"])


def confirm_config(url: str, name: str | None, **stage) -> SearchConfig:
    """What ``shortcut-search confirm`` runs: the search study's own budget and settings (its epochs as resolved
    when it started) with the stage's flags ``stage`` (``SearchConfig`` fields: confirm_top, confirm_seeds, ...).
    Read as a reader (no journal mode, no tables written): a foreign or unknown study, or one without a baseline
    run, is refused untouched."""
    reader = open_storage(url, reader=True)
    name = records.search_study_name(reader, name)
    study = load_existing_study(reader, name)
    settings = {**records.require_settings(study), "epochs": records.epochs(study)}
    if not any(records.is_baseline_run(t) for t in study.get_trials(deepcopy=False)):
        raise UsageError(f"study: {name!r} has no baseline trial")
    return SearchConfig(**settings, storage=url, study=name, **stage)


def check_existing(storage, config: SearchConfig) -> bool:
    """True when the study exists and was made with the same settings; UsageError when its settings differ.

    Reads only: a refused run writes nothing.
    """
    if config.study not in optuna.get_all_study_names(storage):
        return False
    # a study another process has just created has no settings for a moment: give it time to write them
    stored = _wait_for(lambda: records.stored_settings(storage, config.study), CREATION_WAIT_SECONDS)
    if stored is None:
        if _is_empty_shell(storage, config.study):  # a creation killed before its settings: taken over
            return False
        raise UsageError(f"study: {config.study!r} exists but was not made by this tool; choose another --study")
    if differences := settings_difference(stored, config.study_settings()):
        raise UsageError(f"study: {config.study!r} was made with other settings ({'; '.join(differences)}); "
                         f"use the same flags to resume it, or a new --study name")
    return True


def open_study(storage, config: SearchConfig, epochs: int, worker: int = 0) -> optuna.Study:
    """Create the study (settings, warm start) or resume it; call ``check_existing`` first."""
    try:  # the storage says which of several processes starting at once created the study
        storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], config.study)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        created = False
    study = optuna.load_study(study_name=config.study, storage=storage,
                              sampler=make_sampler(config, sampler_seed(config, worker, created)),
                              pruner=make_pruner(config.pruner, epochs))
    # Only the process that created the study writes its settings and warm start, so machines starting a new
    # study together queue each warm-start trial once; the others wait for it (and take over if it died).
    if not created and records.settings(study):
        _wait_for(lambda: StudyKey.WARM_STARTED.of(study) or None, CREATION_WAIT_SECONDS)
    if not records.settings(study):
        records.write_settings(study, config.study_settings(), epochs)
    records.migrate(storage, study)  # a study of an older schema, in one step
    StudyKey.VERSIONS.write(study, package_versions())
    if not StudyKey.WARM_STARTED.of(study):
        warm_start(study, config)
        StudyKey.WARM_STARTED.write(study, True)
    recover(storage, study, config.heartbeat)  # before tidy: a checkpoint with a retry to come stays
    tidy(storage, study, config)
    return study


def tidy(storage, study: optuna.Study, config: SearchConfig) -> None:
    """What a kill may have left behind: checkpoints of runs that are over, models of trials that are not the
    best complete ones."""
    run_folders.sweep(config.checkpoint_root(), study)
    keeper = (ArmModelKeeper if records.is_confirm_study(study.study_name) else ModelKeeper).for_search(config,
                                                                                                      storage)
    if keeper is not None:
        keeper.prune(study)


def _is_empty_shell(storage, name: str) -> bool:
    """A study with no attribute and no trial: what a creation killed before its settings leaves."""
    study_id = storage.get_study_id_from_name(name)
    return not records.holds_records(storage, name) and not storage.get_all_trials(study_id, deepcopy=False)


def _wait_for(read, seconds: float, step: float = 0.2):
    """``read()`` once it returns something other than None, or None after ``seconds``."""
    deadline = time.monotonic() + seconds
    while (value := read()) is None and time.monotonic() < deadline:
        time.sleep(step)
    return value


def warm_start_presets(config: SearchConfig) -> list[str]:
    """Baseline, then the paper's schedule for this dataset and depth, then the paper's other three."""
    own = paper_preset_for(config.dataset, config.depth)
    return [BASELINE, own, *(name for name in PAPER_PRESETS if name != own)]


def warm_start(study: optuna.Study, config: SearchConfig) -> None:
    """Enqueue the baseline, the paper's schedule for this study, the baseline's replicas on seeds of their own
    (``--baseline-seeds``: the study's noise floor on its own budget, known early), the paper's other
    schedules, then the learned arms, each once whatever a kill interrupted; presets that do not fit the study's
    family or bounds are left out (the baseline never).

    A learned arm has no search parameters (it is not a point of the search space, and must not teach the sampler
    anything about one). TPE and random sampling take such a trial in their stride; GP and CMA-ES model the
    parameters every completed trial shares, which it would make none, so with them the learned arms are left out.
    """
    lo, hi = config.scale_range
    baseline = trial_params(preset(BASELINE), config.family)
    for index, name in enumerate(warm_start_presets(config)):
        schedule = preset(name)
        params = trial_params(schedule, config.family)
        in_bounds = all(lo <= v <= hi for v in schedule.values(config.depth))
        if params is not None and (name == BASELINE or in_bounds):
            records.enqueue_reference(study, params, name)
        if index == 1:
            for seed in config.baseline_replica_seeds():
                records.enqueue_reference(study, baseline, BASELINE, seed)
    if config.sampler in ("tpe", "random"):
        for name in LEARNED:
            records.enqueue_reference(study, {}, name)
    StudyKey.BASELINE_SEEDS.write(study, [config.seed, *config.baseline_replica_seeds()])
