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
from optuna.storages import RDBStorage

from search.study import schedule_trials
from storage.artifacts import artifact_store, attach, forget, kept_model


class ModelKeeper:
    """Keeps the trained models of a study's ``keep`` best schedule trials in ``store``."""

    def __init__(self, storage: RDBStorage, store, keep: int):
        self.storage, self.store, self.keep = storage, store, keep

    @classmethod
    def for_search(cls, config, storage: RDBStorage) -> "ModelKeeper | None":
        """The keeper of a search's (or its confirm stage's) ``--keep-models`` best models, in its
        ``--artifact-dir``; None with ``--keep-models 0``."""
        if not config.keep_models:
            return None
        return cls(storage, artifact_store(config.storage, config.artifact_dir), config.keep_models)

    def offer(self, trial: optuna.Trial, value: float, model_file: Path) -> bool:
        """Keep the running ``trial``'s model if it ranks in the top ``keep``; drop the models it pushes out.
        True when it was kept."""
        holders = [t for t in schedule_trials(trial.study) if kept_model(t) is not None]
        ranked = sorted([(t.value, -t.number, t) for t in holders] + [(value, -trial.number, None)],
                        key=lambda item: item[:2], reverse=True)
        kept = any(t is None for *_, t in ranked[:self.keep])
        if kept:
            trial.set_user_attr("model_artifact", attach(trial, self.store, model_file))
        for *_, loser in ranked[self.keep:]:
            if loser is not None:
                forget(self.storage, self.store, loser, kept_model(loser))
        return kept
