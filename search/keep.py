"""Which trained networks a study keeps: the models of its best ``keep`` schedule trials, as artifacts.

A trial that completes saves its trained model (a ``.keras`` file: the network behind its input pipeline, with
the schedule in its config and the optimizer's state) and uploads it to the study's artifact store while it is
still running, if it ranks among the top ``keep`` completed schedule trials by validation accuracy; a model that
falls out of the top ``keep`` is removed, file and record. The learned arms' models are not kept (they are
references, not schedules to hand over). Several workers may decide at once: each ranks what the study holds,
so a model is only ever removed by a view that ranks it out.
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
        holders = [t for t in records.schedule_trials(trial.study) if kept_model(t) is not None]
        ranked = sorted([(t.value, -t.number, t) for t in holders] + [(value, -trial.number, None)],
                        key=lambda item: item[:2], reverse=True)
        kept = any(t is None for *_, t in ranked[:self.keep])
        if kept:
            records.write(trial, TrialKey.MODEL_ARTIFACT, attach(trial, self.store, model_file))
        for *_, loser in ranked[self.keep:]:
            if loser is not None:
                forget(self.storage, self.store, trial.study.study_name, loser.number, kept_model(loser))
        return kept


def model_to_export(trial: optuna.trial.FrozenTrial, study: optuna.Study, store, path: str, output: str) -> str:
    """The artifact id of ``trial``'s kept model, for ``export --model PATH``; UsageError (with the command that
    trains it, or the store to name) before anything is written."""
    if not path.endswith(".keras"):
        raise UsageError(f"model: {path!r} must end in .keras (Keras's file format)")
    if (artifact := kept_model(trial)) is None:
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
    return artifact
