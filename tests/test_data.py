import io
import pickle
import tarfile

import numpy as np
import pytest

from training.data import DataError, load_dataset, stratified_split


def _batch(n, seed, label_key=b"labels", classes=10):
    rng = np.random.default_rng(seed)
    return {label_key: list(rng.permutation(np.arange(n) % classes)),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}


def write_cifar10(root, per_batch=100, test=50, as_tar=False):
    """A CIFAR-10 archive in the official python layout, with random pixels."""
    files = {f"data_batch_{i}": _batch(per_batch, i) for i in range(1, 6)}
    files["test_batch"] = _batch(test, 99)
    files["batches.meta"] = {b"label_names": [b"c%d" % i for i in range(10)]}
    if as_tar:
        with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
            for name, content in files.items():
                payload = pickle.dumps(content)
                info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    else:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for name, content in files.items():
            (folder / name).write_bytes(pickle.dumps(content))
    return files


@pytest.mark.parametrize("as_tar", [False, True])
def test_cifar10_loads_from_folder_and_archive(tmp_path, as_tar):
    files = write_cifar10(tmp_path, as_tar=as_tar)
    data = load_dataset("cifar10", tmp_path)
    assert data.num_classes == 10
    assert len(data.y_train) == 450 and len(data.y_val) == 50 and len(data.y_test) == 50
    assert data.x_train.shape == (450, 32, 32, 3) and data.x_train.dtype == np.uint8
    # pixels are CHW rows in the archive: the first test image's red channel is its first 1024 bytes
    first = files["test_batch"][b"data"][0]
    np.testing.assert_array_equal(data.x_test[0, :, :, 0], first[:1024].reshape(32, 32))
    np.testing.assert_array_equal(data.x_test[0, :, :, 2], first[2048:].reshape(32, 32))
    # validation is stratified: 5 of each class
    assert np.bincount(data.y_val, minlength=10).tolist() == [5] * 10
    assert data.mean.shape == (3,) and np.all(data.std > 0)


def test_cifar100_uses_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 500), ("test", 100)):
        batch = _batch(n, n, label_key=b"fine_labels", classes=100)
        batch[b"coarse_labels"] = [0] * n
        (folder / name).write_bytes(pickle.dumps(batch))
    data = load_dataset("cifar100", tmp_path)
    assert data.num_classes == 100 and data.y_test.max() > 20


def test_split_is_fixed_and_subset_is_stratified(tmp_path):
    write_cifar10(tmp_path)
    a, b = load_dataset("cifar10", tmp_path), load_dataset("cifar10", tmp_path)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    small = load_dataset("cifar10", tmp_path, subset=100)
    assert len(small.y_train) == 100 and np.bincount(small.y_train).tolist() == [10] * 10
    np.testing.assert_array_equal(small.x_val, a.x_val)  # the validation images do not depend on the subset
    assert not set(map(bytes, small.x_train.reshape(100, -1))) & set(map(bytes, a.x_val.reshape(50, -1)))


def test_stratified_split_keeps_proportions_and_exact_size():
    labels = np.array([0] * 70 + [1] * 20 + [2] * 10)
    kept, held = stratified_split(labels, 11, seed=0)
    assert len(held) == 11 and len(kept) == 89 and not set(kept) & set(held)
    assert np.bincount(labels[held]).tolist() == [8, 2, 1]


def test_full_training_set_without_validation(tmp_path):
    write_cifar10(tmp_path)
    data = load_dataset("cifar10", tmp_path, validation=False)
    assert len(data.y_train) == 500 and len(data.y_val) == 0


def test_missing_cifar_names_the_file_to_put_where(tmp_path):
    with pytest.raises(DataError, match="cifar-10-python.tar.gz.*--data-dir|put it there"):
        load_dataset("cifar10", tmp_path)


def test_corrupt_archive_is_a_clear_error(tmp_path):
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b\x08 this is not gzip at all")
    with pytest.raises(DataError, match="not a readable tar.gz"):
        load_dataset("cifar10", tmp_path)


def test_corrupt_batch_is_a_clear_error(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(DataError, match="data_batch_3.*corrupt"):
        load_dataset("cifar10", tmp_path)


def test_misshaped_batch_is_a_clear_error(tmp_path):
    write_cifar10(tmp_path)
    bad = {b"labels": [1, 2], b"data": np.zeros((2, 100), np.uint8)}
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(bad))
    with pytest.raises(DataError, match="3072"):
        load_dataset("cifar10", tmp_path)


def test_digits_is_a_real_offline_dataset():
    data = load_dataset("digits")
    assert data.x_train.shape[1:] == (32, 32, 3) and data.num_classes == 10
    assert len(data.y_test) == 360 and len(data.y_val) > 100
    assert np.array_equal(data.x_train[..., 0], data.x_train[..., 2])


def test_unknown_dataset_and_bad_subset():
    with pytest.raises(ValueError, match="dataset"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="subset"):
        load_dataset("digits", subset=10**6)
