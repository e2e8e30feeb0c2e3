"""Which trained networks a study keeps: the models of its best ``keep`` candidates, as artifacts, and in the
confirm stage one model per candidate arm.

A run that trains to its end saves its model (a ``.keras`` file: the network behind its input pipeline, with the
schedule in its config and the optimizer's state). While its trial still runs, the model is attached to it if it
ranks among the ``keep`` best candidates holding one (``offer``); once the trial is recorded, the study's models
are pruned to the ``keep`` best *complete* candidates (``prune``): models of trials that failed or were pruned,
and models ranked out, go, record first, then file. So the best complete trial's model is never deleted for a
trial that then fails, and no record points at a missing file. Both decisions run under a study lock (an advisory
lock on PostgreSQL, a file lock on SQLite): with K workers at most K holders run at once, and once they are
recorded the study keeps at most ``keep``. References (baseline runs, learned arms) never take a slot. The confirm
stage keeps the model of each candidate arm's first finished run, so the confirmed winner's network can be
exported even when its search trial's model was not kept.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from common.errors import UsageError
from search import records
from search.records import TrialKey
from storage.artifacts import artifact_store, attach, forget, kept_model, recorded_checksum, verified_download
from storage.attributes import study_lock


class ModelKeeper:
    """Keeps the trained models of a study's ``keep`` best candidates in ``store``."""

    def __init__(self, storage, store, keep: int):
        self.storage, self.store, self.keep = storage, store, keep

    @classmethod
    def for_search(cls, config, storage) -> "ModelKeeper | None":
        """The keeper of a search's ``--keep-models`` best models, in its ``--artifact-dir``; None with
        ``--keep-models 0``."""
        if not config.keep_models:
            return None
        return cls(storage, artifact_store(config.storage, config.artifact_dir), config.keep_models)

    def offer(self, trial: optuna.Trial, value: float, model_file: Path) -> bool:
        """Attach the running ``trial``'s model if it ranks among the ``keep`` best holders (complete or
        running); True when it did. Nothing is removed here: that waits until the trial is recorded."""
        with study_lock(self.storage, trial.study.study_name):
            holders = [t for t in self._holders(trial.study) if t.state in (TrialState.COMPLETE, TrialState.RUNNING)
                       and t.number != trial.number]
            order = sorted([(records.rank_key(t.value, t.number), t.number) for t in holders]
                           + [(records.rank_key(value, trial.number), trial.number)])
            if trial.number not in [number for _, number in order[:self.keep]]:
                return False
            attach(trial, self.store, model_file)  # the artifact record is the only pointer (kept_model)
            return True

    def prune(self, study: optuna.Study) -> None:
        """Keep the models of the ``keep`` best complete candidates; remove every other finished trial's."""
        with study_lock(self.storage, study.study_name):
            holders = self._holders(study)
            kept = {t.number for t in records.ranked(t for t in holders if t.state == TrialState.COMPLETE
                                                     and records.is_candidate(t))[:self.keep]}
            self._forget(study, [t for t in holders if t.state != TrialState.RUNNING and t.number not in kept])

    def _holders(self, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        return [t for t in study.get_trials(deepcopy=False) if kept_model(t) is not None]

    def _forget(self, study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> None:
        for trial in trials:
            forget(self.storage, self.store, study.study_name, trial.number, kept_model(trial))


class ArmModelKeeper(ModelKeeper):
    """The confirm stage's keeper: the model of each arm's first finished run (one per arm the stage has ever
    planned: at most the arms of its plans)."""

    @classmethod
    def for_search(cls, config, storage) -> "ArmModelKeeper | None":
        if not config.keep_models:
            return None
        return cls(storage, artifact_store(config.storage, config.artifact_dir), 1)

    def offer(self, trial: optuna.Trial, value: float, model_file: Path) -> bool:
        arm = TrialKey.ARM.of(trial)
        with study_lock(self.storage, trial.study.study_name):
            if any(TrialKey.ARM.of(t) == arm and t.state in (TrialState.COMPLETE, TrialState.RUNNING)
                   and t.number != trial.number for t in self._holders(trial.study)):
                return False
            attach(trial, self.store, model_file)  # the artifact record is the only pointer (kept_model)
            return True

    def prune(self, study: optuna.Study) -> None:
        """One model per arm, a complete run's; the others' go."""
        with study_lock(self.storage, study.study_name):
            holders, first = self._holders(study), {}
            for trial in holders:
                if trial.state == TrialState.COMPLETE:
                    first.setdefault(TrialKey.ARM.of(trial), trial.number)
            self._forget(study, [t for t in holders if t.state != TrialState.RUNNING
                                 and first.get(TrialKey.ARM.of(t)) != t.number])


def model_to_export(trial: optuna.trial.FrozenTrial, study: optuna.Study, store, path: str, output: str,
                    confirm: optuna.Study | None = None, arm: str | None = None,
                    target: dict | None = None) -> tuple[str, str, dict | None]:
    """The artifact id of the model ``export --model PATH`` writes, where it comes from, and its recorded checksum
    (None for a model kept by an earlier version): ``trial``'s kept model, else the model of a confirm run of its
    ``arm``; with a ``target`` budget (the verdict's, not the
    search's) only a confirm run's, which trained at it. UsageError (with the command that trains it, or the store
    to name) before anything is written."""
    if not path.endswith(".keras"):
        raise UsageError(f"model: {path!r} must end in .keras (Keras's file format)")
    budget = records.budget(study).at(target)
    artifact = None if target else kept_model(trial)
    holder = trial
    trained = f"ResNet-{budget.depth}, {budget.epochs} epochs"
    origin = f"trial {trial.number} (seed {records.seed_of(trial)}, {trained})"
    if artifact is None and confirm is not None and arm is not None:
        for run in records.complete(confirm):
            if TrialKey.ARM.of(run) == arm and kept_model(run) is not None:
                artifact, holder = kept_model(run), run
                origin = (f"confirm run {run.number} of trial {trial.number}'s schedule (seed {records.seed_of(run)}, "
                          f"{trained})")
                break
    if artifact is None:
        raise UsageError(f"model: the search did not keep trial {trial.number}'s model (it keeps the --keep-models "
                         f"best completed trials); train it: shortcut-search train --schedule {output} --depth "
                         f"{budget.depth} --dataset {budget.dataset} --epochs {budget.epochs}"
                         f"{budget.flags(('subset', 'batch_size'))} "
                         f"--seed {records.seed_of(trial)} --save-model {path}")
    try:
        store.open_reader(artifact).close()
    except Exception:
        raise UsageError(f"model: trial {trial.number}'s model is not in this artifact store; name the one the "
                         f"search used with --artifact-dir") from None
    return artifact, origin, recorded_checksum(holder, artifact)


@dataclass(frozen=True)
class FetchedModel:
    """The network ``export --model`` hands over, checked and ready: a temporary file to move into place."""
    file: str
    origin: str
    checked: str


def fetch_model(trial: optuna.trial.FrozenTrial, study: optuna.Study, store, path: str, output: str,
                confirm: optuna.Study | None = None, arm: str | None = None,
                target: dict | None = None) -> FetchedModel:
    """The kept model ``model_to_export`` names, downloaded and checked (its recorded size and SHA-256; a model
    kept by an earlier version, without them, by reading it), then rewritten as the deployable inference network
    (``training.pipeline.deployable_model``) in a temporary file beside ``path`` (or in the system's temporary
    folder while ``path``'s folder does not exist). UsageError, with nothing left behind, for a damaged file."""
    artifact, origin, checksum = model_to_export(trial, study, store, path, output, confirm, arm, target)
    folder = Path(path).parent
    handle, download = tempfile.mkstemp(prefix=".export-", suffix=".keras", dir=folder if folder.is_dir() else None)
    os.close(handle)
    try:
        verified_download(store, artifact, checksum, "model.keras", download, f"model: the model of {origin}")
        from training.pipeline import save_deployable  # imports TensorFlow: only once the file is checked

        try:
            save_deployable(download, download)
        except Exception as error:  # a file of an earlier version that is a zip but no model
            raise UsageError(f"model: the model of {origin} in the artifact store cannot be read as a Keras model "
                             f"({type(error).__name__}); nothing written") from None
    except BaseException:
        Path(download).unlink(missing_ok=True)
        raise
    checked = ("checked against its recorded SHA-256" if checksum else
               "kept without a checksum by an earlier version: checked by reading it")
    return FetchedModel(download, origin, f"{checked}; the inference network (uint8 images in, logits out)")
