"""Epoch checkpoints of one training run, so that a run cut short (kill -9, Ctrl-C, a lost machine) resumes at its
last finished epoch instead of starting over.

One file per run, ``state.npz`` in the run's own folder: every variable of the model (weights, BatchNorm
statistics, the augmentation's random state) and of the optimizer (momentum, iteration count, hence the
learning-rate schedule), plus the run's curves so far. It is written to a temporary name and renamed, so a kill
during a save leaves the previous epoch's state whole. The folder's name is a digest of everything that decides
the run (configuration, schedule, data), so a state is only ever restored into the same run.

Why not ``keras.callbacks.BackupAndRestore``: it writes the weights and the epoch count as two files, one after
the other (a kill between them resumes the wrong epoch), its ``save_weights`` leaves out the augmentation's seed
state (the resumed run would crop and flip differently), and it has no place for the curves.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

STATE_FILE = "state.npz"
CURVES = ("train_loss", "train_accuracy", "val_accuracy")


def run_key(*parts: Any) -> str:
    """A short, stable digest of JSON-friendly ``parts``: the folder name of one run's checkpoint."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class EpochCheckpoint:
    """Save and restore the whole state of a compiled Keras model after each epoch, in ``folder``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.path = self.folder / STATE_FILE

    def restore(self, model) -> dict[str, Any] | None:
        """Load the saved state into ``model`` (built and compiled the same way); the saved record
        (``epochs`` finished and the curves), or None when there is nothing to resume."""
        if not self.path.is_file():
            return None
        with np.load(self.path, allow_pickle=False) as saved:
            record = json.loads(str(saved["record"]))
            if not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            variables = _state_variables(model)
            if record.get("shapes") != _shapes(variables):
                return None  # another network under the same key (a changed code version): start over
            for index, variable in enumerate(variables):
                variable.assign(saved[f"v{index}"])
        return record

    def save(self, model, epochs: int, curves: dict[str, list[float]]) -> None:
        """Write the state after ``epochs`` finished epochs, atomically."""
        self.folder.mkdir(parents=True, exist_ok=True)
        variables = _state_variables(model)
        record = {"epochs": epochs, "shapes": _shapes(variables), **curves}
        arrays = {f"v{index}": np.asarray(variable.numpy()) for index, variable in enumerate(variables)}
        partial = self.folder / f".{STATE_FILE}.{os.getpid()}.tmp"
        with open(partial, "wb") as file:
            np.savez(file, record=np.asarray(json.dumps(record)), **arrays)
        os.replace(partial, self.path)

    def remove(self) -> None:
        """Delete the run's folder: a finished run needs no checkpoint."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _state_variables(model) -> list:
    """Every variable that training changes: the model's (trainable, BatchNorm moving statistics, random
    generator states) and the optimizer's."""
    return [*model.variables, *model.optimizer.variables]


def _shapes(variables) -> list[list[int]]:
    # shapes, not names: Keras numbers layer names per process, so the same network's names differ between runs
    return [list(variable.shape) for variable in variables]
