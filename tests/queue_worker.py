"""A worker process for the enqueued-trial race test, kept apart from the test modules so that the spawned
processes import Optuna and the storage only (no TensorFlow) and all reach the queue at once."""
import time

import optuna
from optuna.trial import TrialState

from storage import open_storage


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
    from search.samplers import seed_of
    from search.study import check_existing, open_study

    config = SearchConfig(dataset="digits", depth=8, epochs=1, storage=url)
    while time.time() < start_at:  # every process opens at the same moment, the new file included
        pass
    storage = open_storage(url, None)
    check_existing(storage, config)
    opened.put(seed_of(open_study(storage, config, epochs=1).sampler))


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


def publish_and_read(url, start_at, results):
    """Add a trial and publish the dashboard figure and note, 6 times, reading both back 5 times after each, from
    ``start_at``; put the count of reads that found them half-written (or the user's text lost) on ``results``."""
    import json
    import random

    from optuna_dashboard._custom_plot_data import get_plotly_graph_objects
    from optuna_dashboard._note import get_note_from_system_attrs

    from dashboards.live import FIGURE_ID, NOTE_BEGIN, publish

    storage = open_storage(url, None)
    study = optuna.load_study(study_name="digits-resnet8", storage=storage)
    while time.time() < start_at:
        pass
    broken = 0
    for _ in range(6):
        start, end = random.uniform(0.5, 1.5), random.uniform(0.5, 1.5)
        study.add_trial(optuna.trial.create_trial(value=random.random(), user_attrs={"schedule": {
            "family": "linear", "params": {"start": start, "end": end}}}))
        publish(storage, study.study_name, url)
        for _ in range(5):
            attrs = storage.get_study_system_attrs(study._study_id)  # one query: what a dashboard reads
            note = get_note_from_system_attrs(attrs, None)["body"]
            try:
                json.loads(get_plotly_graph_objects(attrs)[FIGURE_ID])
            except ValueError:
                broken += 1
                continue
            broken += note.count(NOTE_BEGIN) != 1 or note.count("Best:") != 1 or "My remarks" not in note
    results.put(broken)


def keep_one_model(url, start_at, results):
    """One of two workers: ask a trial of the study ``keep``, offer a model to a keeper of K = 1 at ``start_at``,
    record the trial's result, prune, as a search does."""
    import os
    import tempfile
    from pathlib import Path

    from search.keep import ModelKeeper
    from storage.artifacts import artifact_store

    storage = open_storage(url, None)
    study = optuna.load_study(study_name="keep", storage=storage)
    keeper = ModelKeeper(storage, artifact_store(url), keep=1)
    trial = study.ask()
    trial.set_user_attr("schedule", {"family": "constant", "params": {"value": 1.1}})  # a candidate
    value = 0.5 + (os.getpid() % 97) / 1000
    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "trial.keras"
        model.write_bytes(os.urandom(1000))
        while time.time() < start_at:
            pass
        keeper.offer(trial, value, model)
    study.tell(trial, value)
    keeper.prune(study)
    results.put(trial.number)
