"""The names of every record the tool writes on a study and its trials, each with its typed reader and writer, and
the fixed vocabularies (trial roles, the plan's states) that the records hold.

A ``Key`` is the string Optuna stores the record under (so it indexes a dict and compares equal to the stored
name) and knows how to read and write it on a trial or a study: ``TrialKey.SEED.of(trial)``,
``StudyKey.TARGET.write(study, given)``. Nothing outside ``search.records`` touches ``user_attrs`` (a test checks).
"""
from __future__ import annotations

from enum import StrEnum
from typing import Any, Generic, TypeVar

from optuna.trial import TrialState

T = TypeVar("T")

SCHEMA_VERSION = 2  # 1: studies written before schema versions were stored (2026-12-02 and earlier)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
BASELINE = "baseline"
CONFIRM_SUFFIX = ".confirm"  # the confirm stage's study is NAME.confirm, in the search's storage
EVALUATION_PREFIX = "evaluation:"  # one study attribute per evaluated schedule and budget: evaluation:<digest>
METRIC = "val_accuracy"
INTERRUPTED = "interrupted"  # the fail reason of a trial that Ctrl-C or SIGTERM cut short
DIED = "its worker died"  # the start of the fail reason of a trial whose worker process is gone (search.liveness)
SILENT = "its heartbeat stopped"  # the start of the fail reason of a trial whose heartbeat went stale
ENVIRONMENT = "environment fault"  # the start of the fail reason of a trial the environment cut short
# what the messages of environment faults say (the strerror of ENOSPC, EDQUOT, EIO, EROFS, EACCES, EPERM, ESTALE;
# SQLite's and PostgreSQL's words for a full disk, an I/O error, a lost connection): how a reason recorded before
# faults were told apart (schema 2 and earlier: "OSError: [Errno 28] No space left on device") is recognised
ENVIRONMENT_SIGNS = ("No space left on device", "Disk quota exceeded", "Input/output error", "Read-only file system",
                     "Permission denied", "Operation not permitted", "Stale file handle", "database or disk is full",
                     "disk I/O error", "attempt to write a readonly database", "unable to open database file",
                     "server closed the connection", "terminating connection", "connection is closed",
                     "consuming input failed", "connection to server")

# the seeds of a study, by role (recorded on the trials and the study; disjoint as long as the ranges hold)
BASELINE_SEED_OFFSET = 1000  # baseline replicas: seed + 1000 + i
CONFIRM_SEED_OFFSET = 2000  # confirm stage: seed + 2000 + i
EVALUATION_SEED_START = 10_000  # shortcut-search evaluate's default: 10000 + i


class Key(str, Generic[T]):
    """A record's name, with its reader and writer on whatever holds it (a trial, frozen or running, or a study)."""

    def of(self, holder: Any, default: T | None = None) -> T | None:
        """The record on ``holder`` (a trial or a study), or ``default``."""
        return holder.user_attrs.get(self, default)

    def write(self, holder: Any, value: T) -> None:
        """Record ``value`` on a running trial or a study."""
        holder.set_user_attr(str(self), value)

    def of_stored(self, storage: Any, study_name: str) -> T | None:
        """The study record read through ``storage`` (for a study not loaded as an ``optuna.Study``)."""
        return storage.get_study_user_attrs(storage.get_study_id_from_name(study_name)).get(self)

    def write_stored(self, storage: Any, study_name: str, number: int, value: T) -> None:
        """Record ``value`` on trial ``number`` of ``study_name`` through ``storage`` (for a trial this process
        does not run)."""
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name),
                                                                   number)
        storage.set_trial_user_attr(trial_id, str(self), value)


class StudyKey:
    """User attributes of a search study (and of its confirm study: ``PLAN``, ``ARMS``, ``SOURCE_STUDY``)."""

    SCHEMA = Key[int]("schema_version")  # SCHEMA_VERSION of the records; absent: 1
    SETTINGS = Key[dict]("settings")  # SearchConfig.study_settings(): compared on every resume
    EPOCHS = Key[int]("epochs")  # epochs of a trial, resolved when the study was made
    VERSIONS = Key[dict]("versions")  # package versions of the last process that opened it
    WARM_STARTED = Key[bool]("warm_started")  # the references are queued
    BASELINE_SEEDS = Key[list]("baseline_seeds")  # the search's seed and the baseline replicas'
    CONFIRM_SEEDS = Key[list]("confirm_seeds")  # the confirm stage's
    CONFIRMATION = Key[dict]("confirmation")  # the confirm stage's summary (values.ConfirmationSummary)
    TARGET = Key[dict]("target")  # the --target-* flags last given ({"depth", "epochs", "subset"}, None where not)
    PLAN = Key[dict]("plan")  # confirm study: {"top": K, "seeds": [...]}
    RACE = Key[dict]("race")  # confirm study: the race's plan (search.evidence.confirm_plan.race_plan)
    ARMS = Key[list]("arms")  # confirm study: the arms it trains
    SOURCE_STUDY = Key[str]("source_study")  # confirm study: the search study it confirms


class TrialKey:
    """User attributes of a trial."""

    PRESET = Key[str]("preset")  # a reference's name (baseline, paper-..., learned, skipinit)
    REPLICA = Key[bool]("replica")  # a baseline run on a seed of its own
    SEED = Key[int]("seed")  # the training seed
    RETRY_OF = Key[int]("retry_of")  # the interrupted trial this one runs again
    FAMILY = Key[str]("family")
    SCHEDULE = Key[dict]("schedule")  # Schedule.to_dict()
    X = Key[list]("x")  # the blocks' positions on the axis
    VALUES = Key[list]("values")  # the realised per-block factors
    SAMPLER_SEED = Key[int]("sampler_seed")  # the seed of the process that sampled it
    EPOCHS_RUN = Key[int]("epochs_run")
    TRAIN_LOSS = Key[list]("train_loss")
    TRAIN_ACCURACY = Key[list]("train_accuracy")
    WALL_SECONDS = Key[float]("wall_seconds")  # fused (FUSED_WITH): its share of the batch's, by epochs trained
    IMAGES_PER_SECOND = Key[float]("images_per_second")
    RESUMED_FROM_EPOCH = Key[int]("resumed_from_epoch")
    LEARNED_VALUES = Key[list]("learned_values")  # learned arms: the scalars after training
    DIVERGED = Key[str]("diverged")  # why the run diverged (pruned)
    PRUNED_AT_EPOCH = Key[int]("pruned_at_epoch")
    FAIL_REASON = Key[str]("fail_reason")  # why it failed; "interrupted" for Ctrl-C or SIGTERM
    PROCESS = Key[dict]("process")  # the process running it: search.liveness.ProcessIdentity's fields
    HOST = Key[str]("host")  # the same host and pid, readable at a glance
    HEARTBEAT = Key[float]("heartbeat")  # on a journal: the time (s) the running trial last proved alive
    HEARTBEAT_SECONDS = Key[float]("heartbeat_seconds")  # on a journal: how often its process writes that heartbeat
    PID = Key[int]("pid")
    DUPLICATE_OF = Key[int]("duplicate_of")  # confirm stage: the earlier run of the same arm and seed
    SKIPPED = Key[str]("skipped")  # confirm stage: why a queued run was not trained (queued for another budget)
    SOURCE_TRIAL = Key[int]("source_trial")  # confirm stage: the search trial the arm's schedule came from
    ARM = Key[str]("arm")  # confirm stage: the arm's key (a digest of its schedule)
    LABEL = Key[str]("label")  # confirm stage: the arm's name (baseline, paper-c10-r32, #7 linear)
    CANDIDATE = Key[bool]("candidate")  # confirm stage: the arm is one of the search's top candidates
    FUSED_WITH = Key[list]("fused_with")  # the trials trained with it as one fused network (--fuse), itself included
    BUDGET = Key[dict]("budget")  # confirm stage: what the run trains, {"depth", "epochs", "subset"}


# what a retry keeps of the trial it re-runs: what defines the run (the process, its fate and its files stay behind)
RETRY_KEEPS = (TrialKey.PRESET, TrialKey.SEED, TrialKey.REPLICA, TrialKey.ARM, TrialKey.LABEL, TrialKey.SCHEDULE,
               TrialKey.SOURCE_TRIAL, TrialKey.CANDIDATE, TrialKey.BUDGET)


class TrialRole(StrEnum):
    """What a search trial is for (``trials.role``)."""

    BASELINE = "baseline"  # f = 1 on the search's seed
    REPLICA = "replica"  # f = 1 on a seed of its own: the noise floor
    PAPER = "paper"  # one of the paper's schedules: a reference and a candidate
    LEARNED = "learned"  # learned or skipinit: a reference, never a schedule to hand over
    SEARCHED = "searched"  # proposed by the sampler: a candidate


class RunState(StrEnum):
    """Where one (arm, seed) of the confirm stage's plan stands (``confirm_plan.outcome``)."""

    DONE = "done"  # completed: its accuracy counts
    DIVERGED = "diverged"  # diverged: counts against its arm
    RUNNING = "running"  # queued or running
    FAILED = "failed"  # its attempts failed with an error
    MISSING = "missing"  # to queue
