"""Data sets as uint8 NHWC arrays, with the fixed stratified train/validation split every run shares.

- ``cifar10`` / ``cifar100`` (fine labels), from the official python-format archive: ``--data-dir`` holding
  ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz`` or their extracted folders, else the Keras cache,
  else a Keras download.
- ``digits``: scikit-learn's bundled 8x8 digits, scaled to 32x32x3; a small real data set that works offline.

The training set is split once, with a fixed seed, into train and validation (45k/5k for CIFAR: the split He et
al. used to choose their recipe), so every trial of every search validates on the same images; the test set is
never part of it. ``subset=N`` keeps a stratified N-image part of the training split for cheap runs.
"""
from __future__ import annotations

import io
import os
import pickle
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import UsageError

DATASETS = ("cifar10", "cifar100", "digits")
SPLIT_SEED = 20151210  # fixed, not the run's seed: every run and trial validates on the same images
VALIDATION_FRACTION = 0.1  # 5k of CIFAR's 50k training images

_CIFAR = {
    # dataset: (archive, extracted folder, training members, test member, label key, classes)
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py",
                [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels", 10),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", ["train"], "test", b"fine_labels", 100),
}


class DataError(UsageError):
    """The data set is missing or unreadable; the message says which file to put where."""


@dataclass
class Dataset:
    """Images as uint8 (N, 32, 32, 3), labels as int32 (N,). ``mean``/``std`` are per channel, in pixel units,
    from the training split."""

    name: str
    num_classes: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    mean: np.ndarray = field(init=False)
    std: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        pixels = self.x_train.reshape(-1, 3)
        self.mean = pixels.mean(axis=0, dtype=np.float64)
        self.std = pixels.std(axis=0, dtype=np.float64)

    def summary(self) -> str:
        return (f"{self.name}: {len(self.y_train)} train / {len(self.y_val)} validation / {len(self.y_test)} test "
                f"images, {self.num_classes} classes")


def stratified_split(labels: np.ndarray, holdout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out) with ``holdout`` images held out in the classes' proportions, sorted."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    share = counts * holdout / len(labels)
    per_class = np.floor(share).astype(int)
    # largest remainders take the leftover images, so the total is exact
    per_class[np.argsort(per_class - share)[: holdout - per_class.sum()]] += 1
    held = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, per_class, strict=True)]
    held = np.sort(np.concatenate(held)) if held else np.array([], dtype=int)
    kept = np.setdiff1d(np.arange(len(labels)), held)
    return kept, held


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, subset: int | None = None,
                 validation: bool = True) -> Dataset:
    """Load a data set with its fixed train/validation split.

    Args:
        name: ``cifar10``, ``cifar100`` or ``digits``.
        data_dir: folder holding the official CIFAR archive or its extracted folder (CIFAR only).
        subset: keep a stratified part of this many training images (after the validation split).
        validation: ``False`` trains on the whole training set (the validation arrays are then empty), as for a
            final test-set evaluation.
    """
    if name not in DATASETS:
        raise UsageError(f"dataset: unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if name == "digits":
        (x_train, y_train), (x_test, y_test), classes = _digits()
    else:
        (x_train, y_train), (x_test, y_test) = _cifar(name, data_dir)
        classes = _CIFAR[name][5]
    if validation:
        train, val = stratified_split(y_train, round(len(y_train) * VALIDATION_FRACTION), SPLIT_SEED)
    else:
        train, val = np.arange(len(y_train)), np.array([], dtype=int)
    if subset is not None:
        if not 0 < subset <= len(train):
            raise UsageError(f"subset: must be between 1 and {len(train)} for {name}, got {subset}")
        kept, _ = stratified_split(y_train[train], len(train) - subset, SPLIT_SEED + 1)
        train = train[kept]
    return Dataset(name, classes, x_train[train], y_train[train], x_train[val], y_train[val], x_test, y_test)


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0..16 grey levels -> 0..255, each pixel a 4x4 block -> 32x32, grey -> RGB
    images = np.round(digits.images * (255 / 16)).astype(np.uint8)
    images = np.repeat(np.repeat(images, 4, axis=1), 4, axis=2)[..., None].repeat(3, axis=-1)
    labels = digits.target.astype(np.int32)
    train, test = stratified_split(labels, 360, SPLIT_SEED)
    return (images[train], labels[train]), (images[test], labels[test]), 10


def _cifar(name: str, data_dir: str | os.PathLike | None):
    archive, folder, train_members, test_member, label_key, classes = _CIFAR[name]
    for source in _cifar_sources(name, data_dir):
        if source.is_dir():
            read = lambda member, root=source: (root / member).read_bytes()  # noqa: E731
            return _cifar_arrays(name, source, read, train_members, test_member, label_key, classes)
        if source.is_file():
            return _cifar_from_archive(name, source, folder, train_members, test_member, label_key, classes)
    if data_dir is not None:
        raise DataError(f"{name}: neither {archive} nor {folder}/ is in {data_dir}; download {archive} from "
                        f"https://www.cs.toronto.edu/~kriz/cifar.html and put it there")
    return _cifar_download(name, archive, folder)


def _cifar_sources(name: str, data_dir) -> list[Path]:
    archive, folder = _CIFAR[name][:2]
    if data_dir is not None:
        root = Path(data_dir)
        if not root.is_dir():
            raise DataError(f"data-dir: {root} is not a folder; point it at the folder holding {archive}")
        return [root / folder, root / archive]
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"
    # Keras 3 extracts into "<folder>-target/<folder>"; older Keras into "<folder>"
    return [cache / f"{folder}-target" / folder, cache / folder]


def _cifar_from_archive(name, path: Path, folder, train_members, test_member, label_key, classes):
    try:
        with tarfile.open(path, "r:*") as tar:
            def read(member: str) -> bytes:
                try:
                    handle = tar.extractfile(f"{folder}/{member}")
                except KeyError:
                    raise DataError(f"{name}: {path} has no {folder}/{member}; is it the python-format "
                                    f"archive?") from None
                return handle.read()

            return _cifar_arrays(name, path, read, train_members, test_member, label_key, classes)
    except (tarfile.TarError, EOFError, OSError, ValueError) as error:
        if isinstance(error, DataError):
            raise
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{name}: {path} is not a readable tar.gz archive ({reason}); download it again") from None


def _cifar_arrays(name, source, read, train_members, test_member, label_key, classes):
    train = [_cifar_batch(name, source, member, read(member), label_key, classes) for member in train_members]
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    x_test, y_test = _cifar_batch(name, source, test_member, read(test_member), label_key, classes)
    return (x_train, y_train), (x_test, y_test)


def _cifar_batch(name, source, member: str, payload: bytes, label_key: bytes, classes: int):
    """One pickled batch -> (uint8 NHWC images, int32 labels), checked for the official shapes.

    The official archives are Python pickles; like Keras's own loader we unpickle them, so only point
    ``--data-dir`` at archives you trust.
    """
    where = f"{name}: {source} ({member})"
    try:
        batch = pickle.load(io.BytesIO(payload), encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int32)
    except FileNotFoundError:
        raise DataError(f"{where}: file missing; the folder should hold the whole extracted archive") from None
    except Exception as error:  # a damaged pickle can raise almost anything
        raise DataError(f"{where}: corrupt or not a CIFAR batch ({type(error).__name__}); download it again") \
            from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise DataError(f"{where}: expected N x 3072 images and N labels, got {data.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(f"{where}: labels outside 0..{classes - 1}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _cifar_download(name: str, archive: str, folder: str):
    import keras

    loader = keras.datasets.cifar10 if name == "cifar10" else keras.datasets.cifar100
    try:
        kwargs = {} if name == "cifar10" else {"label_mode": "fine"}
        (x_train, y_train), (x_test, y_test) = loader.load_data(**kwargs)
    except Exception as error:  # offline: URLError, socket errors, or Keras's own "URL fetch failure"
        raise DataError(
            f"{name}: not found offline and the download failed ({type(error).__name__}); put {archive} (or its "
            f"extracted {folder}/) in a folder and pass --data-dir FOLDER") from None
    return (x_train, y_train.reshape(-1).astype(np.int32)), (x_test, y_test.reshape(-1).astype(np.int32))
