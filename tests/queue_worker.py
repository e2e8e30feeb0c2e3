"""A worker process for the enqueued-trial race test, kept apart from the test modules so that the spawned
processes import Optuna and the storage only (no TensorFlow) and all reach the queue at once."""
import time

import optuna
from optuna.trial import TrialState

from storage.rdb import open_storage


def claim_and_finish(url, start_at, claimed):
    """Take enqueued trials, as ``study.optimize`` does, until none is left; put their numbers on ``claimed``."""
    study = optuna.load_study(study_name="queue", storage=open_storage(url, None))
    while time.time() < start_at:  # every process starts claiming at the same moment
        pass
    numbers = []
    while study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        trial = study.ask()
        numbers.append(trial.number)
        study.tell(trial, 0.0)  # raises if another process claimed and finished the same trial
    claimed.put(numbers)


def open_new_study(url, start_at, opened):
    """Open (create, warm-start) the search study ``digits-resnet8`` at ``start_at``, as ``search.run`` does."""
    from search.config import SearchConfig
    from search.study import check_existing, open_study

    config = SearchConfig(dataset="digits", depth=8, epochs=1, storage=url)
    while time.time() < start_at:  # every process opens at the same moment, the new file included
        pass
    storage = open_storage(url, None)
    check_existing(storage, config)
    opened.put(open_study(storage, config, epochs=1).sampler.seed_used)


def open_storage_at(url, start_at, opened):
    """Open the storage at ``url`` at ``start_at`` (creating Optuna's tables in a new database); report the error."""
    from common.errors import UsageError

    while time.time() < start_at:
        pass
    try:
        open_storage(url, None)
        opened.put("ok")
    except UsageError as error:
        opened.put(str(error))
