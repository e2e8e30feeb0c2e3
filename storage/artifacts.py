"""A study's files, kept as Optuna artifacts: the trained models of its best trials, its exports, evaluations and
reports, browsable and downloadable in ``optuna-dashboard STORAGE --artifact-dir FOLDER``.

The store is Optuna's ``FileSystemArtifactStore``: by default the folder ``search-artifacts/`` beside a SQLite
study (in the working folder for other databases), otherwise ``--artifact-dir`` (storage every machine mounts,
for several machines). The study records which artifact is which; the folder holds the files under their ids.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.storages import RDBStorage

from common.log import log
from storage.attributes import can_forget, forget_trial_system_attr
from storage import load_existing_study, open_storage
from storage.urls import beside_storage, journal_path

ARTIFACT_FOLDER = "search-artifacts"
ARTIFACT_PREFIX = "artifacts:"  # Optuna's system-attribute prefix of an artifact record


def artifact_folder(storage_url: str, folder: str | os.PathLike | None = None) -> Path:
    """Where the study's artifact store is: ``folder``, else ``search-artifacts/`` beside a SQLite study."""
    return beside_storage(storage_url, folder, ARTIFACT_FOLDER)


class ArtifactStore(FileSystemArtifactStore):
    """Optuna's file-system store whose folder is made by its first write, so a reader makes nothing."""

    def __init__(self, folder: Path):
        super().__init__(str(folder))
        self.folder = Path(folder)

    def write(self, artifact_id: str, content_body) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        super().write(artifact_id, content_body)


def artifact_store(storage_url: str, folder: str | os.PathLike | None = None) -> ArtifactStore:
    """The study's artifact store."""
    return ArtifactStore(artifact_folder(storage_url, folder))


def attach(study_or_trial, store: FileSystemArtifactStore, path: str | os.PathLike) -> str:
    """Upload the file at ``path`` as an artifact of the study or (running) trial; its artifact id."""
    return upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study_or_trial)


def attach_when_free(storage_url: str, study_name: str, store: FileSystemArtifactStore, path: str | os.PathLike,
                     wait_seconds: float = 5.0) -> bool:
    """Attach a file a reader wrote (an export, a report) to the study, waiting at most ``wait_seconds`` for a
    busy SQLite database or a journal whose lock a writer holds: a reader never waits on the workers for long. True
    when attached; otherwise the caller's file is written all the same and a warning says the study does not list
    it."""
    try:
        if (journal := journal_path(storage_url)) is not None and not _unlocked(journal, wait_seconds):
            raise TimeoutError("a writer holds the journal's lock")
        study = load_existing_study(open_storage(storage_url, reader=True, busy_seconds=wait_seconds), study_name)
        attach(study, store, path)
        return True
    except Exception as error:  # the database stayed locked (SQLite, a journal), or went away
        log.warning(f"warning: {path} is written but not attached to study {study_name!r} "
                    f"({type(error).__name__}: the database was busy or unavailable)")
        return False


def _unlocked(journal: Path, seconds: float) -> bool:
    """Whether the journal's lock file is gone within ``seconds`` (an append then takes milliseconds)."""
    deadline = time.monotonic() + seconds
    while Path(f"{journal}.lock").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def kept_model(trial: optuna.trial.FrozenTrial) -> str | None:
    """The artifact id of the trained model a trial keeps, or None (never kept, or removed since)."""
    for key, value in trial.system_attrs.items():
        if key.startswith(ARTIFACT_PREFIX) and (json.loads(value) or {}).get("filename", "").endswith(".keras"):
            return key[len(ARTIFACT_PREFIX):]
    return None


def forget(storage: RDBStorage, store: FileSystemArtifactStore, study_name: str, trial_number: int,
           artifact_id: str) -> bool:
    """Remove a trial's artifact: its record first, then its file, so that a kill in between leaves at worst a
    file nobody points at, never a record pointing at no file. A journal cannot drop a finished trial's record:
    there the artifact stays, file and record (False)."""
    if not can_forget(storage):
        return False
    trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name),
                                                               trial_number)
    forget_trial_system_attr(storage, trial_id, ARTIFACT_PREFIX + artifact_id)
    try:
        store.remove(artifact_id)
    except Exception:  # already gone (another worker removed it first)
        pass
    return True
