"""Which trained networks a study keeps: the models of its best ``keep`` candidates, as artifacts, and in the
confirm stage one model per candidate arm.

A trial that completes saves its trained model (a ``.keras`` file: the network behind its input pipeline, with
the schedule in its config and the optimizer's state) and uploads it to the study's artifact store while it is
still running, if it ranks among the top ``keep`` completed candidates by validation accuracy; a model that
falls out of the top ``keep`` is removed, file and record. References (baseline runs, learned arms) never take
a slot. Several workers may decide at once: each ranks what the study holds, so a model is only ever removed by
a view that ranks it out. The confirm stage keeps the model of each candidate arm's first finished run, so the
confirmed winner's network can be exported even when its search trial's model was not kept.
"""
from __future__ import annotations

from pathlib import Path

import optuna

from common.errors import UsageError
from search import records
from search.records import TrialKey
from storage.artifacts import artifact_store, attach, forget, kept_model


class ModelKeeper:
    """Keeps the trained models of a study's ``keep`` best schedule trials in ``store``."""

    def __init__(self, storage, store, keep: int):
        self.storage, self.store, self.keep = storage, store, keep

    @classmethod
    def for_search(cls, config, storage) -> "ModelKeeper | None":
        """The keeper of a search's (or its confirm stage's) ``--keep-models`` best models, in its
        ``--artifact-dir``; None with ``--keep-models 0``."""
        if not config.keep_models:
            return None
        return cls(storage, artifact_store(config.storage, config.artifact_dir), config.keep_models)

    def offer(self, trial: optuna.Trial, value: float, model_file: Path) -> bool:
        """Keep the running ``trial``'s model if it ranks in the top ``keep``; drop the models it pushes out.
        True when it was kept."""
        holders = [t for t in records.candidates(trial.study) if kept_model(t) is not None]
        ranked = sorted([(t.value, -t.number, t) for t in holders] + [(value, -trial.number, None)],
                        key=lambda item: item[:2], reverse=True)
        kept = any(t is None for *_, t in ranked[:self.keep])
        if kept:
            records.write(trial, TrialKey.MODEL_ARTIFACT, attach(trial, self.store, model_file))
        for *_, loser in ranked[self.keep:]:
            if loser is not None:
                forget(self.storage, self.store, trial.study.study_name, loser.number, kept_model(loser))
        return kept


class ArmModelKeeper:
    """The confirm stage's keeper: the model of each candidate arm's first finished run."""

    def __init__(self, store):
        self.store = store

    @classmethod
    def for_search(cls, config, storage) -> "ArmModelKeeper | None":
        if not config.keep_models:
            return None
        return cls(artifact_store(config.storage, config.artifact_dir))

    def offer(self, trial: optuna.Trial, value: float, model_file: Path) -> bool:
        arm = records.attr(trial, TrialKey.ARM)
        if any(records.attr(t, TrialKey.ARM) == arm and kept_model(t) is not None
               for t in records.complete(trial.study)):
            return False
        records.write(trial, TrialKey.MODEL_ARTIFACT, attach(trial, self.store, model_file))
        return True


def model_to_export(trial: optuna.trial.FrozenTrial, study: optuna.Study, store, path: str, output: str,
                    confirm: optuna.Study | None = None, arm: str | None = None) -> tuple[str, str]:
    """The artifact id of the model ``export --model PATH`` writes, and where it comes from: ``trial``'s kept
    model, else the model of a confirm run of its ``arm``; UsageError (with the command that trains it, or the
    store to name) before anything is written."""
    if not path.endswith(".keras"):
        raise UsageError(f"model: {path!r} must end in .keras (Keras's file format)")
    artifact, origin = kept_model(trial), f"trial {trial.number} (seed {records.seed_of(trial)})"
    if artifact is None and confirm is not None and arm is not None:
        for run in records.complete(confirm):
            if records.attr(run, TrialKey.ARM) == arm and kept_model(run) is not None:
                artifact = kept_model(run)
                origin = f"confirm run {run.number} of trial {trial.number}'s schedule (seed {records.seed_of(run)})"
                break
    if artifact is None:
        budget = records.budget(study)
        extra = "".join(f" --{flag} {budget[key]}" for flag, key in (("subset", "subset"),
                                                                      ("batch-size", "batch_size"))
                        if budget.get(key) is not None)
        raise UsageError(f"model: the search did not keep trial {trial.number}'s model (it keeps the --keep-models "
                         f"best completed trials); train it: shortcut-search train --schedule {output} --depth "
                         f"{budget['depth']} --dataset {budget['dataset']} --epochs {budget['epochs']}{extra} "
                         f"--seed {records.seed_of(trial)} --save-model {path}")
    try:
        store.open_reader(artifact).close()
    except Exception:
        raise UsageError(f"model: trial {trial.number}'s model is not in this artifact store; name the one the "
                         f"search used with --artifact-dir") from None
    return artifact, origin
