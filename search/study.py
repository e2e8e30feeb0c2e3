"""The study: samplers, pruners, the configuration guard and the warm start.

A new study is warm-started with the baseline (f = 1) and the paper's schedules, so that every search has a
reference trained on the same budget and starts from what the authors found by hand; then with the learned arms
(``learned``, ``skipinit``), which show where a network that learns its own factors lands on the same budget. The
configuration is stored on the study and checked on every later run, before anything is written.
"""
from __future__ import annotations

import importlib.metadata
import os
import socket
import time
import warnings
import zlib

import numpy as np
import optuna
from optuna.storages import RDBStorage, RetryFailedTrialCallback
from optuna.trial import TrialState

from common.errors import UsageError
from models.schedules import LEARNED, PAPER_PRESETS, paper_preset_for, preset
from search.config import SearchConfig, settings_difference
from search.pruning import HYPERBAND_FACTOR, HYPERBAND_MIN_RESOURCE, RungPruner, rung_epochs
from search.space import trial_params
from storage.rdb import MAX_RETRY, storage_flag

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
BASELINE = "baseline"
PACKAGES = ("keras", "tensorflow", "optuna", "numpy", "jax")
CREATION_WAIT_SECONDS = 15  # how long a process joining a study that is being created waits for its warm start


def sampler_seed(config: SearchConfig, worker: int = 0, created: bool = True) -> int:
    """This process's sampler seed.

    The process that created the study (worker 0) uses ``--seed`` itself, so a study searched by one worker from
    start to end is reproducible from it. Every other process (more workers, other machines joining, a resumed
    study) draws its seed from NumPy's SeedSequence over ``--seed``, its host, its pid and the clock: two
    processes on any machines never share a stream, so neither repeats the other's proposals (two machines with
    the same seed and the same history would otherwise propose the same points). Each trial records the seed
    of the process that sampled it (``sampler_seed``).
    """
    if created and worker == 0:
        return config.seed
    entropy = [config.seed, zlib.crc32(socket.gethostname().encode()), os.getpid(), time.time_ns()]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def make_sampler(config: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    """The configured sampler, seeded with ``seed`` (``sampler_seed``), which it keeps as ``seed_used``."""
    sampler = _sampler(config, seed)
    sampler.seed_used = seed  # for the objective to record on every trial
    return sampler


def _sampler(config: SearchConfig, seed: int) -> optuna.samplers.BaseSampler:
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if config.sampler == "tpe":
        # multivariate + group: the family's parameters are modelled jointly, and only with their own family;
        # constant liar keeps parallel workers from sampling the same point while a trial runs
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True)
    # GP and CMA-ES only get fixed-dimension families (SearchConfig refuses the others), so nothing is sampled
    # independently and their warning stays on in case that ever changes
    if config.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if config.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, consider_pruned_trials=True)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(config: SearchConfig, epochs: int) -> optuna.pruners.BasePruner:
    """Successive halving at 55 % and 80 % of the epochs (``search.pruning``; the default), hyperband over epochs
    (1..epochs, factor 3: aggressive, from the first epoch), the median rule after 5 finished trials, or none."""
    if config.pruner == "rungs":
        return RungPruner(rung_epochs(epochs))
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=HYPERBAND_MIN_RESOURCE, max_resource=max(epochs, 1),
                                              reduction_factor=HYPERBAND_FACTOR)
    if config.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0)
    return optuna.pruners.NopPruner()


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def check_existing(storage: RDBStorage, config: SearchConfig) -> bool:
    """True when the study exists and was made with the same settings; UsageError when its settings differ.

    Reads only: a refused run writes nothing.
    """
    if config.study not in optuna.get_all_study_names(storage):
        return False
    study_id = storage.get_study_id_from_name(config.study)
    # a study another process has just created has no settings for a moment: give it time to write them
    stored = _wait_for(lambda: storage.get_study_user_attrs(study_id).get("settings"), CREATION_WAIT_SECONDS)
    if stored is None:
        raise UsageError(f"study: {config.study!r} exists but was not made by this tool; choose another --study")
    if differences := settings_difference(stored, config.study_settings()):
        raise UsageError(f"study: {config.study!r} was made with other settings ({'; '.join(differences)}); "
                         f"use the same flags to resume it, or a new --study name")
    return True


def open_study(storage: RDBStorage, config: SearchConfig, epochs: int, worker: int = 0) -> optuna.Study:
    """Create the study (settings, warm start) or resume it; call ``check_existing`` first."""
    try:  # the storage says which of several processes starting at once created the study
        storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], config.study)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        created = False
    study = optuna.load_study(study_name=config.study, storage=storage,
                              sampler=make_sampler(config, sampler_seed(config, worker, created)),
                              pruner=make_pruner(config, epochs))
    # Only the process that created the study writes its settings and warm start, so machines starting a new
    # study together queue each warm-start trial once; the others wait for it (and take over if it died).
    if not created:
        _wait_for(lambda: study.user_attrs.get("warm_started") or None, CREATION_WAIT_SECONDS)
    if "settings" not in study.user_attrs:
        study.set_user_attr("settings", config.study_settings())
        study.set_user_attr("epochs", epochs)
        study.set_metric_names(["val_accuracy"])
    study.set_user_attr("versions", package_versions())
    clear_zombies(storage, study)
    if not study.user_attrs.get("warm_started"):
        warm_start(study, config)
        study.set_user_attr("warm_started", True)
    requeue_interrupted(study)
    return study


def _wait_for(read, seconds: float, step: float = 0.2):
    """``read()`` once it returns something other than None, or None after ``seconds``."""
    deadline = time.monotonic() + seconds
    while (value := read()) is None and time.monotonic() < deadline:
        time.sleep(step)
    return value


def record_process(trial: optuna.Trial) -> None:
    """Record on a running trial the host and process running it, so that a dead one is recognised at once."""
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())


def clear_zombies(storage: RDBStorage, study: optuna.Study) -> list[int]:
    """Fail and re-queue, at once, every RUNNING trial whose process ran on this host and no longer exists
    (``kill -9``, a crash); the numbers of those trials.

    The heartbeat would leave such a trial RUNNING for two intervals (2 minutes by default), long enough for a
    re-run to reach its target past it. On the same host the tool can know better; other hosts' trials keep the
    heartbeat rule. The retry is Optuna's ``RetryFailedTrialCallback``, as for a stale heartbeat.
    """
    host, cleared = socket.gethostname(), []
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = trial.user_attrs.get("pid")
        if trial.user_attrs.get("host") != host or pid is None or pid == os.getpid() or _process_exists(pid):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", f"its worker died (pid {pid} on {host})")
            if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another process on this host cleared it first
            continue
        RetryFailedTrialCallback(max_retry=MAX_RETRY)(study, storage.get_trial(trial_id))
        cleared.append(trial.number)
    return cleared


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def requeue_interrupted(study: optuna.Study) -> None:
    """Enqueue again, once, each trial that Ctrl-C or SIGTERM cut short, so resuming re-runs it.

    (Trials whose worker died silently are re-run by the heartbeat's retry callback instead.)
    """
    done = set(study.user_attrs.get("requeued", []))
    interrupted = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                   if t.user_attrs.get("fail_reason") == "interrupted" and t.number not in done]
    for trial in interrupted:
        attrs = {"retry_of": trial.number, **{key: trial.user_attrs[key] for key in ("preset", "seed", "replica")
                                              if key in trial.user_attrs}}
        study.enqueue_trial(trial.system_attrs.get("fixed_params", trial.params), user_attrs=attrs)
        done.add(trial.number)
    if interrupted:
        study.set_user_attr("requeued", sorted(done))


def warm_start_presets(config: SearchConfig) -> list[str]:
    """Baseline, then the paper's schedule for this dataset and depth, then the paper's other three."""
    own = paper_preset_for(config.dataset, config.depth)
    return [BASELINE, own, *(name for name in PAPER_PRESETS if name != own)]


def warm_start(study: optuna.Study, config: SearchConfig) -> None:
    """Enqueue the baseline, the paper's schedule for this study, the baseline's replicas on seeds of their own
    (``--baseline-seeds``: the study's noise floor on its own budget, known early), the paper's other
    schedules, then the learned arms; presets that do not fit the study's family or bounds are left out (the
    baseline never).

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
            study.enqueue_trial(params, user_attrs={"preset": name}, skip_if_exists=True)
        if index == 1:
            for seed in config.baseline_replica_seeds():
                study.enqueue_trial(baseline, user_attrs={"preset": BASELINE, "seed": seed, "replica": True})
    if config.sampler in ("tpe", "random"):
        for name in LEARNED:
            study.enqueue_trial({}, user_attrs={"preset": name})
    study.set_user_attr("baseline_seeds", [config.seed, *config.baseline_replica_seeds()])


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def baseline_pending(study: optuna.Study) -> bool:
    """True while no baseline trial has completed but one waits in the queue."""
    if baseline_trial(study) is not None:
        return False
    return any(t.user_attrs.get("preset") == BASELINE
               for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def baseline_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The completed baseline trial (f = 1 on the study's budget and seed, not a replica), if any."""
    trials = baseline_trials(study, replicas=False)
    return trials[0] if trials else None


def baseline_trials(study: optuna.Study, replicas: bool = True) -> list[optuna.trial.FrozenTrial]:
    """The completed baseline trials: on the search's seed, and with ``replicas`` on the replicas' seeds."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("preset") == BASELINE and (replicas or not t.user_attrs.get("replica"))]


def is_learned_arm(trial: optuna.trial.FrozenTrial) -> bool:
    """A ``learned`` or ``skipinit`` trial: a reference on the study's budget, not a schedule to hand over."""
    return trial.user_attrs.get("preset") in LEARNED


def schedule_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The completed trials that are schedules: every candidate for the answer (the learned arms are references)."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if not is_learned_arm(t)]


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The completed schedule trial (learned arms aside) with the highest validation accuracy, or UsageError
    when none finished."""
    complete = schedule_trials(study)
    if not complete:
        raise UsageError(f"study: {study.study_name!r} has no completed trial yet; run the search first")
    return max(complete, key=lambda t: (t.value, -t.number))


def study_seeds(study: optuna.Study) -> list[int]:
    """Every seed the study trained with: the search's, its trials' (baseline replicas), its confirm stage's."""
    seeds = {t.user_attrs["seed"] for t in study.get_trials(deepcopy=False) if "seed" in t.user_attrs}
    seeds.add(study.user_attrs.get("settings", {}).get("seed"))
    seeds.update(study.user_attrs.get("confirm_seeds", []))
    return sorted(seed for seed in seeds if seed is not None)


def next_commands(study: optuna.Study, storage_url: str) -> tuple[str, str]:
    """The export and evaluate commands a user runs next on this study; evaluate repeats the searched budget."""
    settings = study.user_attrs.get("settings", {})
    name = study.study_name
    storage = storage_flag(storage_url)  # never the password
    export = f"python -m search.export {storage} --study {name} --output best.json"
    budget = {"epochs": study.user_attrs.get("epochs", settings.get("epochs")), "subset": settings.get("subset"),
              "batch-size": settings.get("batch_size")}
    flags = "".join(f" --{flag} {value}" for flag, value in budget.items() if value is not None)
    evaluate = (f"python -m search.evaluate --schedule best.json --depth {settings.get('depth', 32)} "
                f"--dataset {settings.get('dataset', 'cifar10')}{flags} --seeds 5 {storage} "
                f"--study {name}")
    return export, evaluate
