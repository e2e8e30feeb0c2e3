"""One arm of a fused run (``training.fused``) leaves what its single run leaves: its checkpoint and its
TensorBoard log.

``ArmCheckpoints.save(arm, epoch, curves)`` writes, in the arm's folder, the very file ``training.loop.run(config_k,
schedule_k, data, checkpoint_dir=folder)`` writes after that epoch (its key, its variables in its order, its
record), so that the arm, retried alone, resumes there. ``ArmBoards`` writes each arm's TensorBoard log as
``training.loop.run(tensorboard=folder)`` does, for the epochs the arm trains.

The single run's state (``training.checkpoint.state_variables``) is its compiled model's variables (the
augmentation's seed-generator state, then the network's; the normalisation has none) and its optimizer's (the
iteration count, then one momentum slot per trainable variable). A template of that model (``loop.compiled_model``
with the factors as variables exactly when ``loop.REUSE_COMPILED`` makes ``loop.run``'s own so: the restore goes
by order and shape) is built once per graph and process, and before each save every one of its state variables is
assigned from the fused model's: the augmentation of the arm's seed group, the arm's network, the shared
iteration count, and each momentum slot found by its variable (``optimizer._get_variable_index``). A template
variable that nothing maps is an error, not a silent zero.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import keras

from models.fused import FusedArms, arm_name
from models.schedules import Schedule
from training import loop, reuse
from training.checkpoint import EpochCheckpoint, state_variables, run_key
from training.config import TrainConfig
from training.data import Dataset

CACHE_SIZE = 4  # template models a process keeps
_templates: OrderedDict = OrderedDict()
_lock = threading.Lock()


def clear() -> None:
    with _lock:
        _templates.clear()


def _template(config: TrainConfig, schedule: Schedule, data: Dataset,
              epochs: int) -> tuple[keras.Model, threading.Lock]:
    """The process's model with the variables ``loop.run`` builds for this graph (untraced, optimizer built)."""
    key = (loop.reuse_key(config, schedule, data, epochs), loop.REUSE_COMPILED)
    with _lock:
        if key in _templates:
            _templates.move_to_end(key)
            return _templates[key]
    model = loop.compiled_model(config, schedule, data, epochs, variable_factors=loop.REUSE_COMPILED)[0]
    model.optimizer.build(model.trainable_variables)  # as training.reuse and EpochCheckpoint.restore build it
    with _lock:
        _templates.setdefault(key, (model, threading.Lock()))
        while len(_templates) > CACHE_SIZE:
            _templates.popitem(last=False)
        return _templates[key]


def _pairs(template: keras.Model, model: FusedArms, arm: int, group: int) -> list[tuple]:
    """(template variable, fused variable) for every state variable of the template, in its order."""
    network, source = reuse.network_of(template), model.arms()[arm]
    factors = any(v.path.endswith("/factor") for v in network.variables)
    theirs = [v for v in source.variables if factors or not v.path.endswith("/factor")]
    if [tuple(v.shape) for v in network.variables] != [tuple(v.shape) for v in theirs]:
        raise RuntimeError(f"arm checkpoints: arm {arm}'s network differs from its single run's")
    weights = list(zip(network.variables, theirs))
    mine, fused = template.optimizer, model.optimizer
    pairs = [*weights, (template.get_layer("augment").seed_generator.state,
                        model.get_layer(f"augment{group}").seed_generator.state),
             (mine.iterations, fused.iterations),
             *((mine.momentums[mine._get_variable_index(t)], fused.momentums[fused._get_variable_index(f)])
               for t, f in weights if t.trainable)]
    by_id = {id(t): f for t, f in pairs}
    missed = [v.path for v in state_variables(template) if id(v) not in by_id]
    if missed:
        raise RuntimeError(f"arm checkpoints: no fused variable for {', '.join(missed)}")
    return [(v, by_id[id(v)]) for v in state_variables(template)]


class ArmCheckpoints:
    """Per arm (a folder or None): its single run's ``EpochCheckpoint`` and what to copy into its template."""

    def __init__(self, model: FusedArms, configs: Sequence[TrainConfig], schedules: Sequence[Schedule],
                 data: Dataset, epochs: int, policy: str, groups: Sequence[int],
                 folders: Sequence[str | Path | None]):
        fingerprint = loop.data_fingerprint(data)
        self.arms: dict[int, tuple] = {}
        for arm, folder in enumerate(folders):
            if folder is None:
                continue
            config, schedule = configs[arm], schedules[arm]
            key = run_key({**asdict(config), "precision": policy}, schedule.to_dict(), fingerprint)  # loop.run's
            template, lock = _template(config, schedule, data, epochs)
            self.arms[arm] = EpochCheckpoint(folder, key), template, lock, _pairs(template, model, arm, groups[arm])

    def save(self, arm: int, epoch: int, curves: dict[str, list[float]]) -> None:
        """Write arm ``arm``'s state after ``epoch`` epochs as its single run would (nothing without a folder)."""
        if arm not in self.arms:
            return
        checkpoint, template, lock, pairs = self.arms[arm]
        with lock:
            for mine, fused in pairs:
                mine.assign(fused.value)
            checkpoint.save(template, epoch, curves)


class ArmBoards(keras.callbacks.Callback):
    """Keras callback of a fused run: per arm with a folder, Keras's ``TensorBoard`` callback as ``training.loop``
    sets it up for a single run (loss, accuracy, validation accuracy and loss, learning rate; per epoch), fed that
    arm's own figures, for every epoch the arm trains (the one it is pruned or diverges in included, as alone)."""

    def __init__(self, folders: Sequence[str | Path | None]):
        super().__init__()
        self.boards = {arm: keras.callbacks.TensorBoard(str(folder), write_graph=False, update_freq="epoch",
                                                        profile_batch=0)
                       for arm, folder in enumerate(folders) if folder is not None}
        self.training: set[int] = set()

    def set_model(self, model) -> None:
        super().set_model(model)
        for board in self.boards.values():
            board.set_model(model)

    def on_train_begin(self, logs=None):
        for board in self.boards.values():
            board.on_train_begin()

    def on_epoch_begin(self, epoch, logs=None):
        active = keras.ops.convert_to_numpy(self.model.active)
        self.training = {arm for arm in self.boards if active[arm] > 0.5}
        for arm in self.training:
            self.boards[arm].on_epoch_begin(epoch)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for arm in self.training:
            name = arm_name(arm)
            metric = "accuracy" if self.model.arm_count == 1 else f"{name}_accuracy"  # one output: not prefixed
            own = {"loss": logs.get(f"{name}_loss"), "accuracy": logs.get(metric),
                   "val_loss": logs.get(f"val_{name}_loss"), "val_accuracy": logs.get(f"val_{metric}")}
            self.boards[arm].on_epoch_end(epoch, {key: value for key, value in own.items() if value is not None})

    def on_train_end(self, logs=None):
        for board in self.boards.values():
            board.on_train_end()
