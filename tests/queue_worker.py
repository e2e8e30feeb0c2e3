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
