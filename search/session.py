"""A search opened on its study: what ``shortcut-search run`` and the notebook API share, so neither repeats a
decision of the other (what is checked before anything is written, what the opening lines say, whether there is
work left, and running it here or in worker processes)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import optuna

from common.errors import UsageError
from common.files import check_writable
from common.log import log, result
from search import records
from search.config import SearchConfig
from search.evidence.confirm_plan import is_settled, race_runs
from search.confirm_loop import run_confirm
from search.loop import Publisher, environment_stop, run_search
from search.run_queue import has_checkpoint, waiting_retries
from search.samplers import check_installed
from search.study import check_existing, check_target_data, open_study, settle_target
from search.workers import run_worker, run_workers
from storage import load_existing_study, open_storage
from storage.artifacts import artifact_folder
from storage.urls import redacted
from training.data import load_dataset


def open_search(config: SearchConfig):
    """Check everything the user can get wrong, then open (create or resume) the study: the data, the epochs of a
    trial, the storage, the study, and whether it existed. What the command and the notebook API share."""
    # everything the user can get wrong is checked before the storage is written to
    data = load_dataset(config.dataset, config.data_dir, config.subset)
    epochs = config.train.epochs_for(len(data.y_train))
    check_target_data(config)
    check_outputs(config)
    check_installed(config.sampler)
    storage = open_storage(config.storage, config.heartbeat)
    resuming = check_existing(storage, config)
    return data, epochs, storage, open_study(storage, config, epochs), resuming


def check_outputs(config: SearchConfig) -> None:
    """UsageError, before anything is written, for a folder the runs cannot write: checkpoints, the artifact
    store (when models are kept), TensorBoard's logs."""
    check_writable(config.checkpoint_root(), "checkpoint-dir",
                   "choose another --checkpoint-dir, or none for no checkpoints")
    if config.keep_models:
        check_writable(artifact_folder(config.storage, config.artifact_dir), "artifact-dir",
                       "choose another --artifact-dir, or --keep-models 0")
    if config.tensorboard:
        check_writable(Path(config.tensorboard), "tensorboard", "choose another folder")


def confirm_stage(config: SearchConfig, invoked_at: float) -> int:
    """The confirm stage of ``config`` (``study.confirm_config``) on its own, in this process: its data and folders
    checked, the study opened as a writer, the stored ``--target-*`` flags settled in; the exit code."""
    data = load_dataset(config.dataset, config.data_dir, config.subset)
    check_outputs(config)
    try:
        storage = open_storage(config.storage, config.heartbeat, create=False)
        study = load_existing_study(storage, config.study)
        config = settle_target(study, config)
        check_target_data(config)
        run_confirm(config, study, storage, data, invoked_at)
    except Exception as error:
        return stopped_by_environment(error, "in the confirm stage")
    return 0


def stopped_by_environment(error: Exception, during: str) -> int:
    """The exit code of a command that ``error`` ended when the environment caused it (a full disk, the storage
    lost: ``loop.environment_stop``), its one line logged; any other error, a usage error above all, is raised on."""
    if isinstance(error, UsageError) or (stop := environment_stop(error, during)) is None:
        raise error
    log.error(f"stopped: {stop}")
    return stop.exit_code


class SearchSession:
    """One search, opened: its data, the epochs of a trial, the storage and the study; ``config`` is the one given
    with the study's stored ``--target-*`` flags settled in. Opening checks everything the user can get wrong
    before the storage is written to (``open_search``)."""

    def __init__(self, config: SearchConfig):
        self.data, self.epochs, self.storage, self.study, self.resuming = open_search(config)
        self.config = settle_target(self.study, config)

    @classmethod
    def open(cls, config: SearchConfig) -> "SearchSession | int":
        """The session, or the exit code when the environment stopped its opening (its line logged: a disk still
        full, the storage lost), so a re-run on a fault not yet fixed says so in one line."""
        try:
            return cls(config)
        except Exception as error:
            return stopped_by_environment(error, "as the study was opened")

    def announce(self) -> None:
        """The opening lines: new or resumed, how far, the budget; how many trials are references."""
        config, study = self.config, self.study
        log.info(f"{'resuming' if self.resuming else 'new'} study {config.study!r} in {redacted(config.storage)}: "
                 f"{records.finished_count(study)}/{config.trials} trials finished; ResNet-{config.depth}, "
                 f"{self.data.summary()}, {self.epochs} epochs a trial")
        references = records.reference_count(study)
        if (searched := config.trials - references) > 0:
            log.info(f"{references} of the {config.trials} trials are references (the baseline, its replicas, the "
                     f"paper's schedules, the learned arms); {searched} schedules will be searched")
        else:
            log.warning(f"warning: --trials {config.trials} leaves no trial to search: the study's {references} "
                        f"references (the baseline, its replicas, the paper's schedules, the learned arms) come "
                        f"first; raise --trials above {references}")

    def has_work(self) -> bool:
        """False when the target is reached, the confirm stage settled and no retry's checkpoint holds work."""
        config, study = self.config, self.study
        target = config.target(self.epochs)
        trainings = race_runs(study, config.confirm_budget, config.confirm_top, config.confirm_seeds,
                              config.min_effect, target)
        settled = not config.confirm_top or is_settled(study, config.confirm_top, config.confirm_seeds,
                                                       config.min_effect, target, trainings)
        paid = any(has_checkpoint(config.checkpoint_root(), study, t) for t in waiting_retries(study))
        return not (records.finished_count(study) >= config.trials and settled and not paid
                    and not records.baseline_pending(study))  # (a baseline's retry, queued after the target)

    def run_here(self, publisher: Publisher | None, invoked_at: float | None = None) \
            -> tuple[optuna.Study, str | None]:
        """Run the search in this process (no signal handling): the study, and why it stopped short or None."""
        return run_search(self.config, self.epochs, data=self.data, study=self.study, storage=self.storage,
                          publisher=publisher, invoked_at=invoked_at)

    def run(self, publisher: Publisher | None, invoked_at: float, worker_command: Sequence[str]) -> int:
        """The command's run: nothing when there is no work left; one worker here (Ctrl-C and SIGTERM recorded),
        or ``config.workers`` processes of ``worker_command`` (the CLI that runs one worker); the exit code."""
        if not self.has_work():
            result("target reached; raise --trials to search further")
            return 0
        if self.config.workers == 1:
            return run_worker(self.config, self.epochs, rank=0, data=self.data, study=self.study,
                              storage=self.storage, publisher=publisher, invoked_at=invoked_at)
        return run_workers(self.config, self.epochs, invoked_at, worker_command)
