"""A study's files, kept as Optuna artifacts: the trained models of its best trials, its exports, evaluations and
reports, browsable and downloadable in ``optuna-dashboard STORAGE --artifact-dir FOLDER``.

The store is Optuna's ``FileSystemArtifactStore``: by default the folder ``search-artifacts/`` beside a SQLite
study (in the working folder for other databases), otherwise ``--artifact-dir`` (storage every machine mounts,
for several machines). The study records which artifact is which; the folder holds the files under their ids.

Every file this tool uploads has its size and SHA-256 recorded beside Optuna's artifact record (a study or trial
system attribute ``artifact_checksum:ID``); whatever hands a file over (export, serve) checks it first, and a file
that differs (truncated, overwritten, another file under its id) is refused. An artifact without that record (one
uploaded by an earlier version, or through optuna-dashboard's page) is checked as far as its format allows: a
``.keras`` file is a zip archive whose every member's CRC is read, a ``.json`` file must parse.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.storages import RDBStorage

from common.errors import UsageError
from common.log import log
from storage.attributes import can_forget, forget_trial_system_attr
from storage import load_existing_study, open_storage
from storage.urls import beside_storage, journal_path

ARTIFACT_FOLDER = "search-artifacts"
ARTIFACT_PREFIX = "artifacts:"  # Optuna's system-attribute prefix of an artifact record
CHECKSUM_PREFIX = "artifact_checksum:"  # this tool's record beside it: {"size": bytes, "sha256": hex digest}


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
    """Upload the file at ``path`` as an artifact of the study or (running) trial, its size and SHA-256 recorded
    beside it; its artifact id. (A kill between the upload and the checksum's record leaves an artifact checked as
    an earlier version's is.)"""
    checksum = file_checksum(path)
    artifact_id = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study_or_trial)
    key, value = CHECKSUM_PREFIX + artifact_id, json.dumps(checksum)
    if isinstance(study_or_trial, optuna.Study):
        study_or_trial._storage.set_study_system_attr(study_or_trial._study_id, key, value)
    else:
        study_or_trial.storage.set_trial_system_attr(study_or_trial._trial_id, key, value)
    return artifact_id


def file_checksum(path: str | os.PathLike) -> dict:
    """``{"size": bytes, "sha256": hex digest}`` of the file at ``path``."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


def recorded_checksum(holder, artifact_id: str) -> dict | None:
    """The checksum recorded beside an artifact of ``holder`` (a trial, or a study's or trial's system
    attributes); None for an artifact uploaded without one (by an earlier version, or optuna-dashboard's page)."""
    system_attrs = holder if isinstance(holder, dict) else holder.system_attrs
    value = system_attrs.get(CHECKSUM_PREFIX + artifact_id)
    return json.loads(value) if isinstance(value, str) else value


def verified_download(store: FileSystemArtifactStore, artifact_id: str, checksum: dict | None, filename: str,
                      destination: str | os.PathLike, what: str) -> bool:
    """Copy the artifact to ``destination`` once it is checked: its size and SHA-256 against ``checksum``, or,
    for an artifact without one, its format (``filename``'s suffix: a zip archive's CRCs, JSON). On a mismatch
    nothing stays at ``destination`` and UsageError names ``what`` (an artifact of ...). True when checked by
    checksum, False when only by format."""
    destination = Path(destination)
    try:
        with store.open_reader(artifact_id) as reader, open(destination, "wb") as handle:
            while chunk := reader.read(1 << 20):
                handle.write(chunk)
        verify_file(destination, checksum, filename, what)
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    return checksum is not None


def verify_file(path: Path, checksum: dict | None, filename: str, what: str) -> None:
    """UsageError when the file at ``path`` is not the artifact recorded (``checksum``), or, without a record,
    not a readable file of its format."""
    if checksum is not None:
        found = file_checksum(path)
        if found != {"size": checksum.get("size"), "sha256": checksum.get("sha256")}:
            raise UsageError(f"{what} is damaged in the artifact store: {found['size']} bytes, SHA-256 "
                             f"{found['sha256'][:12]}..., where the study recorded {checksum.get('size')} bytes, "
                             f"SHA-256 {str(checksum.get('sha256'))[:12]}...; nothing written")
        return
    try:
        if filename.endswith(".keras"):
            with zipfile.ZipFile(path) as archive:
                if (bad := archive.testzip()) is not None:
                    raise ValueError(f"member {bad} fails its CRC")
        elif filename.endswith(".json"):
            json.loads(path.read_text())
    except Exception as error:
        raise UsageError(f"{what} (uploaded without a checksum, by an earlier version) is not a readable "
                         f"{Path(filename).suffix or 'file'} ({type(error).__name__}: {error}); nothing "
                         f"written") from None


class VerifyingStore(ArtifactStore):
    """The store as ``serve`` hands it to optuna-dashboard: a file whose recorded checksum (looked up in
    ``storage``) it does not match is not served (the download fails, and one ``error:`` line says why)."""

    def __init__(self, folder: Path, storage):
        super().__init__(folder)
        self.storage = storage

    def open_reader(self, artifact_id: str):
        checksum, filename = self._record(artifact_id)
        reader = super().open_reader(artifact_id)
        if checksum is None and not filename.endswith((".keras", ".json")):
            return reader
        reader.close()
        path = self.folder / artifact_id
        try:
            verify_file(path, checksum, filename, f"artifact {artifact_id} ({filename})")
        except UsageError as error:
            log.error(f"error: {error}")
            raise
        return open(path, "rb")

    def _record(self, artifact_id: str) -> tuple[dict | None, str]:
        for study in self.storage.get_all_studies():
            holders = [self.storage.get_study_system_attrs(study._study_id)]
            holders += [t.system_attrs for t in self.storage.get_all_trials(study._study_id, deepcopy=False)]
            for attrs in holders:
                if ARTIFACT_PREFIX + artifact_id in attrs:
                    meta = attrs[ARTIFACT_PREFIX + artifact_id]
                    meta = json.loads(meta) if isinstance(meta, str) else meta
                    return recorded_checksum(attrs, artifact_id), (meta or {}).get("filename", "")
        return None, ""


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
    forget_trial_system_attr(storage, trial_id, CHECKSUM_PREFIX + artifact_id)
    try:
        store.remove(artifact_id)
    except Exception:  # already gone (another worker removed it first)
        pass
    return True
