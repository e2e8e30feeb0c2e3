"""SearchConfig: everything a search needs, validated from the command line before any storage is touched.

Part of it (``study_settings``) is stored on the study and compared on every later run under the same study
name, so a resumed search never mixes trials of different experiments.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from common.errors import UsageError
from models.schedules import FACTOR_BOUNDS, block_count
from search.evidence import race
from search.pruning import PRUNERS
from search.records import BASELINE_SEED_OFFSET, CONFIRM_SEED_OFFSET, CONFIRM_SUFFIX, is_confirm_study
from search.space import FAMILY_CHOICES
from storage import HEARTBEAT_SECONDS
from storage.urls import DEFAULT_URL, beside_storage, redacted
from training.config import TrainConfig
from training.data import DATASETS

SAMPLERS = ("tpe", "gp", "cmaes", "random")
# families whose parameters depend on the trial (a family choice, or a count of control values): GP and CMA-ES
# model one fixed set of parameters and would sample the rest independently, i.e. at random
VARIABLE_FAMILIES = ("any", "spline", "steps")
# Seeds. Selection (every search trial) uses --seed; the baseline's noise floor, the confirm stage and
# shortcut-search evaluate draw from ranges of their own, so no accuracy that judges a schedule comes from the weights it
# was selected on. All are recorded on the study.
MIN_RACE, MAX_RACE = race.MIN_TRAININGS, race.MAX_TRAININGS  # --confirm-budget's bounds
CONFIRM_BUDGETS = ("auto", "fixed")  # --confirm-budget's words; otherwise a number of runs
MAX_SEED_RANGE = 1000  # seeds of one kind (replicas, confirm runs) a study may use
CHECKPOINT_FOLDER = "search-checkpoints"  # beside a SQLite study, else in the working folder
MAX_HEARTBEAT = 86_400  # seconds
FUSE_FLOAT16 = ("fuse: fused trials cannot train under mixed_float16 (its loss scale would skip every arm's step "
                "when one arm overflows); use --precision mixed_bfloat16 or float32")
MAX_FUSE = 16  # trials in one fused network: K copies of the model's memory, and a batch waits for its slowest arm
MAX_SEED = 2 ** 30  # so that every derived seed (seed + 10000 + i at most) stays a valid 32-bit seed
MAX_STUDY_NAME = 100
NO_CHECKPOINTS = "none"

# compared on resume; storage, trials, workers, timeout, data-dir and checkpoint-dir may change between runs
COMPARED = ("dataset", "depth", "epochs", "subset", "batch_size", "precision", "family", "scale_range", "sampler",
            "pruner", "seed")


@dataclass(frozen=True)
class SearchConfig:
    """One search. ``trials`` counts finished trials (complete + pruned) of the whole study, over all workers."""

    dataset: str = "cifar10"
    depth: int = 32
    trials: int = 200
    epochs: int | None = None
    subset: int | None = None
    batch_size: int = 128
    precision: str = "auto"
    seed: int = 0
    family: str = "any"
    scale_range: tuple[float, float] = FACTOR_BOUNDS
    sampler: str = "tpe"
    pruner: str = "rungs"
    storage: str = DEFAULT_URL
    study: str | None = None
    data_dir: str | None = None
    workers: int = 1
    timeout: float | None = None
    max_failures: int = 5
    heartbeat: int = HEARTBEAT_SECONDS
    steps_per_execution: int = 1
    baseline_seeds: int = 3
    confirm_top: int = 5
    confirm_seeds: int | None = 3  # None: auto, as many as min_effect needs (search.evidence.confirm_plan)
    min_effect: float = 0.01  # the gain (a fraction: 0.01 = 1 pt) the power line and auto seeds are about
    # the confirm stage: a race of this many runs (search.evidence.race), "auto" (as many as the fixed stage's
    # (K + 2) x S), or "fixed" (every candidate on the same S seeds)
    confirm_budget: int | str = "auto"
    checkpoint_dir: str | None = None
    keep_models: int = 5
    artifact_dir: str | None = None
    tensorboard: str | None = None
    fuse: int | None = None  # trials trained at once as one fused network (search.fused_batch); None: auto
    target_depth: int | None = None  # the confirm stage's budget (default: the search's own): a cheap search's
    target_epochs: int | None = None  # candidates are confirmed where it matters
    target_subset: int | None = None
    train: TrainConfig = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise UsageError(f"dataset: unknown {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        checks = {
            "family": (self.family, FAMILY_CHOICES),
            "sampler": (self.sampler, SAMPLERS),
            "pruner": (self.pruner, PRUNERS),
        }
        for name, (value, choices) in checks.items():
            if value not in choices:
                raise UsageError(f"{name}: unknown {value!r}; choose one of {', '.join(choices)}")
        if self.sampler in ("gp", "cmaes") and self.family in VARIABLE_FAMILIES:
            raise UsageError(f"sampler: {self.sampler} models a fixed set of parameters, and --family {self.family} "
                             f"changes them from trial to trial, so most factors would be sampled at random; use "
                             f"--sampler tpe, or --family constant, linear or peak with {self.sampler}")
        if self.trials <= 0:
            raise UsageError(f"trials: must be > 0, got {self.trials}")
        lo, hi = self.scale_range
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
            raise UsageError(f"scale-range: need 0 < LO < HI, got {lo:g} {hi:g}; e.g. --scale-range 0.5 1.5")
        if self.confirm_seeds is not None and self.confirm_seeds < 2:
            raise UsageError(f"confirm-seeds: at least 2 (a verdict needs a spread over seeds; one seed would be "
                             f"another single-run best of K), got {self.confirm_seeds}")
        # the seeds of the search, its replicas and its confirm stage stay in disjoint ranges
        if self.confirm_seeds is not None and self.confirm_seeds > MAX_SEED_RANGE:
            raise UsageError(f"confirm-seeds: at most {MAX_SEED_RANGE}, got {self.confirm_seeds}")
        if self.baseline_seeds > CONFIRM_SEED_OFFSET - BASELINE_SEED_OFFSET:
            raise UsageError(f"baseline-seeds: at most {CONFIRM_SEED_OFFSET - BASELINE_SEED_OFFSET}, got "
                             f"{self.baseline_seeds}")
        if self.confirm_budget not in CONFIRM_BUDGETS and not (
                isinstance(self.confirm_budget, int) and MIN_RACE <= self.confirm_budget <= MAX_RACE):
            raise UsageError(f"confirm-budget: {MIN_RACE} to {MAX_RACE} runs (the final test alone needs "
                             f"{MIN_RACE}: the survivor and the baseline on {MIN_RACE // 2} seeds), auto or fixed; "
                             f"got {self.confirm_budget!r}")
        if not (math.isfinite(self.min_effect) and 0 < self.min_effect < 1):
            raise UsageError(f"min-effect: a gain in points between 0 and 100, got {100 * self.min_effect:g}")
        for name in ("workers", "max_failures", "heartbeat"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name.replace('_', '-')}: must be > 0, got {getattr(self, name)}")
        for name in ("baseline_seeds", "confirm_top", "keep_models"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name.replace('_', '-')}: must be >= 0, got {getattr(self, name)}")
        if self.timeout is not None and not (math.isfinite(self.timeout) and self.timeout > 0):
            raise UsageError(f"timeout: must be a finite number of seconds > 0, got {self.timeout}")
        if self.fuse is not None and not 1 <= self.fuse <= MAX_FUSE:
            raise UsageError(f"fuse: 1 to {MAX_FUSE} trials at once, or auto; got {self.fuse}")
        if (self.fuse or 1) > 1 and self.precision == "mixed_float16":
            raise UsageError(FUSE_FLOAT16)
        if self.heartbeat > MAX_HEARTBEAT:
            raise UsageError(f"heartbeat: at most {MAX_HEARTBEAT} seconds (a day), got {self.heartbeat}")
        if not 0 <= self.seed <= MAX_SEED:
            raise UsageError(f"seed: must lie in 0..{MAX_SEED}, got {self.seed}")
        object.__setattr__(self, "scale_range", (float(lo), float(hi)))
        object.__setattr__(self, "study", self.study or f"{self.dataset}-resnet{self.depth}")
        check_study_name(self.study)
        if self.target_depth is not None:
            try:
                block_count(self.target_depth)
            except UsageError as error:
                raise UsageError(f"target-{error}") from None
        for name in ("target_epochs", "target_subset"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise UsageError(f"{name.replace('_', '-')}: must be > 0, got {getattr(self, name)}")
        object.__setattr__(self, "train", TrainConfig(depth=self.depth, epochs=self.epochs,
                                                      batch_size=self.batch_size, precision=self.precision,
                                                      seed=self.seed,
                                                      steps_per_execution=self.steps_per_execution))

    def __repr__(self) -> str:  # a notebook shows it: never the storage's password
        shown = ", ".join(f"{name}={redacted(value)!r}" if name == 'storage' else f"{name}={value!r}"
                          for name, value in self.to_dict().items())
        return f"SearchConfig({shown})"

    def target(self, epochs: int) -> dict[str, Any]:
        """The confirm stage's budget: ``{"depth", "epochs", "subset"}``, each the search's own (``epochs``: a
        search trial's, resolved) unless set. Without ``--epochs`` a run keeps He et al.'s 64k iterations, so a
        target on another number of images gets the epochs that make them."""
        subset = self.target_subset if self.target_subset is not None else self.subset
        if self.target_epochs is None and self.epochs is None and subset != self.subset and subset is not None:
            epochs = self.train.epochs_for(subset)
        return {"depth": self.target_depth or self.depth, "epochs": self.target_epochs or epochs, "subset": subset}

    def has_target(self) -> bool:
        """Whether any ``--target-*`` was given."""
        return any(value is not None for value in (self.target_depth, self.target_epochs, self.target_subset))

    def baseline_replica_seeds(self) -> list[int]:
        """Seeds of the baseline's replicas, whose spread is the study's noise floor (disjoint from ``seed``)."""
        return [self.seed + BASELINE_SEED_OFFSET + i for i in range(self.baseline_seeds)]

    def checkpoint_root(self) -> Path | None:
        """Where runs keep their epoch checkpoints, one folder each (``search.run_folders``): ``--checkpoint-dir``,
        by default ``search-checkpoints/`` beside a SQLite file (in the working folder for other databases);
        None with ``--checkpoint-dir none``."""
        if self.checkpoint_dir == NO_CHECKPOINTS:
            return None
        return beside_storage(self.storage, self.checkpoint_dir, CHECKPOINT_FOLDER)

    def study_settings(self) -> dict[str, Any]:
        """The settings that define the experiment, as stored on the study (JSON-friendly)."""
        settings = {name: getattr(self, name) for name in COMPARED}
        settings["scale_range"] = list(self.scale_range)
        return settings

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("train")
        return data


def check_study_name(name: str) -> None:
    """UsageError for a study name the tool cannot keep: empty, longer than ``MAX_STUDY_NAME``, with control
    characters, or a confirm stage's own name."""
    if not name or len(name) > MAX_STUDY_NAME or not name.isprintable():
        raise UsageError(f"study: a name of 1 to {MAX_STUDY_NAME} printable characters, got {len(name)} "
                         f"characters{'' if name.isprintable() else ' with control characters'}")
    if is_confirm_study(name):
        raise UsageError(f"study: names ending in {CONFIRM_SUFFIX!r} belong to confirm stages; use "
                         f"{name[:-len(CONFIRM_SUFFIX)]!r}")


def settings_difference(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Human lines naming each compared setting that differs, e.g. ``depth: study has 32, this run 56``."""
    return [f"{name}: study has {stored.get(name)!r}, this run {current.get(name)!r}"
            for name in COMPARED if stored.get(name) != current.get(name)]
