"""Epoch checkpoints of one training run, so that a run cut short (kill -9, Ctrl-C, a lost machine) resumes at its
last finished epoch instead of starting over.

One file per run, ``state.npz`` in the run's own folder (its caller names it: ``search.run_folders``): every
variable of the model (weights, BatchNorm statistics, the augmentation's random state) and of the optimizer
(momentum, iteration count, hence the learning-rate schedule), the run's curves so far, and the run's key (a digest
of everything that decides it: configuration with the precision resolved, schedule, data). It is written to a
temporary name of its own, flushed to disk and renamed, so a kill during a save leaves the previous epoch's state
whole; a state that is unreadable (a truncated file) or another run's (another key) is discarded with a warning,
and the run starts over. The caller removes the folder once the run's result is safe elsewhere.

Why not ``keras.callbacks.BackupAndRestore``: it writes the weights and the epoch count as two files, one after
the other (a kill between them resumes the wrong epoch), its ``save_weights`` leaves out the augmentation's seed
state (the resumed run would crop and flip differently), and it has no place for the curves.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from common.errors import ENVIRONMENT_ERRNOS
from common.log import log

STATE_FILE = "state.npz"
CURVES = ("train_loss", "train_accuracy", "val_accuracy")
STALE_SECONDS = 60  # a temporary file older than this is a kill's leftover, not a save in progress


def run_key(*parts: Any) -> str:
    """A short, stable digest of JSON-friendly ``parts``: what identifies one run's state."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class EpochCheckpoint:
    """Save and restore the whole state of a compiled Keras model after each epoch, in ``folder``, for the run
    ``key`` names."""

    def __init__(self, folder: str | Path, key: str):
        self.folder, self.key = Path(folder), key
        self.path = self.folder / STATE_FILE

    def restore(self, model) -> dict[str, Any] | None:
        """Load the saved state into ``model`` (built and compiled the same way); the saved record (``epochs``
        finished and the curves), or None when there is nothing (usable) to resume."""
        if not self.path.is_file():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as saved:
                record = json.loads(str(saved["record"]))
                if not isinstance(record, dict):
                    raise ValueError("its record is not a mapping")
                if not model.optimizer.built:
                    model.optimizer.build(model.trainable_variables)
                variables = state_variables(model)
                if record.get("key") != self.key or record.get("shapes") != _shapes(variables):
                    return self._discard("it belongs to another run (configuration, precision, schedule or data)")
                arrays = [saved[f"v{index}"] for index in range(len(variables))]
        except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile) as error:  # (TypeError: a
            # bare .npy, which np.load returns as an array, not an archive)
            if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS:
                raise  # the file system failed, not the file: the run is retried with its checkpoint intact
            return self._discard(f"it cannot be read ({type(error).__name__})")
        for variable, array in zip(variables, arrays):
            variable.assign(array)
        return record

    def _discard(self, why: str) -> None:
        log.warning(f"warning: discarded the checkpoint {self.path}: {why}; the run starts over")
        self.path.unlink(missing_ok=True)
        return None

    def save(self, model, epochs: int, curves: dict[str, list[float]]) -> None:
        """Write the state after ``epochs`` finished epochs, atomically and durably."""
        self.folder.mkdir(parents=True, exist_ok=True)
        variables = state_variables(model)
        record = {"key": self.key, "epochs": epochs, "shapes": _shapes(variables), **curves}
        arrays = {f"v{index}": np.asarray(variable.numpy()) for index, variable in enumerate(variables)}
        handle, partial = tempfile.mkstemp(prefix=f".{STATE_FILE}.", suffix=".tmp", dir=self.folder)
        try:
            with os.fdopen(handle, "wb") as file:
                np.savez(file, record=np.asarray(json.dumps(record)), **arrays)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, self.path)
        finally:
            Path(partial).unlink(missing_ok=True)
        for stale in self.folder.glob(f".{STATE_FILE}.*.tmp"):  # left by a kill during an earlier save
            try:
                if time.time() - stale.stat().st_mtime > STALE_SECONDS:  # not another writer's, mid-save
                    stale.unlink()
            except OSError:
                pass

    def remove(self) -> None:
        """Delete the run's folder."""
        shutil.rmtree(self.folder, ignore_errors=True)


def state_variables(model) -> list:
    """Every variable that training changes: the model's (trainable, BatchNorm moving statistics, random
    generator states) and the optimizer's."""
    return [*model.variables, *model.optimizer.variables]


def _shapes(variables) -> list[list[int]]:
    # shapes, not names: Keras numbers layer names per process, so the same network's names differ between runs
    return [list(variable.shape) for variable in variables]
