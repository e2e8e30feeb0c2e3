"""Fused arms (training.fused): each arm of one fused run is the run ``training.loop.run`` makes alone with its
seed and schedule: the same per-epoch curves and final weights (float32), with shared and with different seeds,
with an arm pruned, with an arm diverged, and after a kill and a resume."""
import json
from dataclasses import asdict

import keras
import numpy as np
import pytest

from common.errors import UsageError
from models.schedules import Schedule, preset
from training import fused, loop, reuse
from training.checkpoint import EpochCheckpoint, run_key
from training.config import TrainConfig
from training.data import load_dataset
from training.fused import run_fused

BASE, PAPER, LEARNED = None, preset("paper-c10-r32"), preset("learned")
HUGE = Schedule("constant", {"value": 1e25})  # activations overflow to inf by block 2: a NaN loss
SCHEDULES = {"base": BASE, "paper": PAPER, "learned": LEARNED, "huge": HUGE}
EPOCHS = 2


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", subset=200)


def _config(seed: int) -> TrainConfig:
    return TrainConfig(depth=8, epochs=EPOCHS, batch_size=32, precision="float32", seed=seed)


@pytest.fixture(scope="module")
def alone(digits):
    """(result, final network weights) of ``loop.run`` alone, per (schedule name, seed, stop epoch)."""
    reuse.clear()
    fused.clear()
    done = {}

    def single(name: str, seed: int, stop_at: int | None = None):
        if (name, seed, stop_at) not in done:
            hook = (lambda epoch, accuracy: epoch >= stop_at) if stop_at else None
            result = loop.run(_config(seed), SCHEDULES[name], digits, on_epoch=hook, test=True)
            entry = list(reuse._cache.values())[-1]  # the model this run was lent (the most recently used)
            network = reuse.network_of(entry.model)
            weights = [np.array(v.numpy()) for v in network.weights if not v.path.endswith("/factor")]
            done[name, seed, stop_at] = result, weights
        return done[name, seed, stop_at]

    yield single
    reuse.clear()
    fused.clear()


def _assert_same(fused, weights, expected):
    result, expected_weights = expected
    assert fused.val_accuracy == pytest.approx(result.val_accuracy, abs=1e-6)
    assert fused.train_accuracy == pytest.approx(result.train_accuracy, abs=1e-6)
    assert fused.train_loss == pytest.approx(result.train_loss, rel=1e-5)
    assert (fused.epochs_run, fused.stopped_early, fused.diverged) == \
        (result.epochs_run, result.stopped_early, result.diverged)
    assert fused.final_val_accuracy == pytest.approx(result.final_val_accuracy, abs=1e-6)
    assert fused.seed == result.seed and fused.schedule == result.schedule
    if fused.test_accuracy is not None:
        assert fused.test_accuracy == pytest.approx(result.test_accuracy, abs=1e-6)
    assert fused.learned_values == pytest.approx(result.learned_values, rel=1e-5)
    assert len(weights) == len(expected_weights)
    for mine, theirs in zip(weights, expected_weights):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6)


def test_arms_of_one_seed_equal_their_separate_runs(digits, alone, tmp_path):
    weights = []
    results = run_fused(_config(3), [BASE, PAPER], digits, final_weights=weights, test=True,
                        save_models=[None, tmp_path / "paper.keras"])
    assert all(result.test_accuracy is not None for result in results)
    saved = keras.saving.load_model(tmp_path / "paper.keras", compile=False)  # uint8 images in, logits out
    network = reuse.network_of(saved)
    for mine, saved_weight in zip(weights[1], [v for v in network.weights if not v.path.endswith("/factor")],
                                  strict=True):
        np.testing.assert_array_equal(mine, np.array(saved_weight))
    for arm, name in enumerate(("base", "paper")):
        _assert_same(results[arm], weights[arm], alone(name, 3))


def test_arms_with_their_own_seeds_get_their_own_data_and_equal_their_separate_runs(digits, alone):
    weights = []
    results = run_fused([_config(3), _config(5), _config(5)], [BASE, PAPER, LEARNED], digits, final_weights=weights)
    assert results[2].learned_values is not None  # a learned arm: its scalars trained in the fused graph too
    for arm, (name, seed) in enumerate((("base", 3), ("paper", 5), ("learned", 5))):
        _assert_same(results[arm], weights[arm], alone(name, seed))


def test_a_pruned_arm_stops_where_it_was_pruned_and_the_others_go_on_unchanged(digits, alone):
    seen, weights = [], []

    def hook(arm, epoch, accuracy):
        seen.append((arm, epoch))
        return arm == 0 and epoch == 1

    results = run_fused(_config(3), [BASE, PAPER], digits, on_epoch=hook, final_weights=weights)
    assert seen == [(0, 1), (1, 1), (1, 2)]
    _assert_same(results[0], weights[0], alone("base", 3, stop_at=1))
    _assert_same(results[1], weights[1], alone("paper", 3))


def test_a_diverged_arm_never_touches_the_others_nor_the_next_run_on_the_same_compiled_model(digits, alone):
    weights = []
    results = run_fused(_config(3), [HUGE, PAPER, BASE], digits, final_weights=weights)
    diverged, expected = results[0], alone("huge", 3)[0]
    assert diverged.diverged and expected.diverged and diverged.epochs_run == expected.epochs_run == 1
    assert diverged.final_val_accuracy is None and diverged.diverged_reason.startswith("training loss became")
    _assert_same(results[1], weights[1], alone("paper", 3))
    _assert_same(results[2], weights[2], alone("base", 3))
    cached = dict(fused._cache)
    weights = []  # the same graph (fixed factors, 3 arms of one seed): the model with a NaN arm, re-initialised
    results = run_fused(_config(5), [PAPER, BASE, PAPER], digits, final_weights=weights)
    assert dict(fused._cache) == cached
    for arm, name in enumerate(("paper", "base", "paper")):
        _assert_same(results[arm], weights[arm], alone(name, 5))


def test_a_killed_fused_run_resumes_to_the_uninterrupted_result(digits, alone, tmp_path):
    def kill(arm, epoch, accuracy):
        if epoch == 1:
            raise Killed

    configs, schedules = [_config(3), _config(5)], [BASE, PAPER]
    with pytest.raises(Killed):
        run_fused(configs, schedules, digits, on_epoch=kill, checkpoint_dir=tmp_path / "run")
    assert (tmp_path / "run" / "state.npz").is_file()
    weights = []
    results = run_fused(configs, schedules, digits, checkpoint_dir=tmp_path / "run", final_weights=weights)
    assert [r.resumed_from_epoch for r in results] == [1, 1]
    _assert_same(results[0], weights[0], alone("base", 3))
    _assert_same(results[1], weights[1], alone("paper", 5))


def test_arms_that_differ_in_more_than_their_seed_or_train_in_mixed_float16_are_refused(digits):
    with pytest.raises(UsageError, match="only in their seed"):
        run_fused([_config(1), TrainConfig(depth=8, epochs=1, batch_size=64, precision="float32")], [BASE, PAPER],
                  digits)
    with pytest.raises(UsageError, match="mixed_float16"):
        run_fused(TrainConfig(depth=8, epochs=1, batch_size=32, precision="mixed_float16"), [BASE], digits)


def test_a_killed_run_resumes_a_pruned_arm_with_its_weights_of_the_epoch_it_stopped(digits, alone, tmp_path):
    def prune_then_kill(arm, epoch, accuracy):
        if arm == 0 and epoch == 2:
            raise Killed
        return arm == 1 and epoch == 1

    with pytest.raises(Killed):
        run_fused(_config(3), [BASE, PAPER], digits, on_epoch=prune_then_kill, checkpoint_dir=tmp_path / "run")
    weights = []
    results = run_fused(_config(3), [BASE, PAPER], digits, checkpoint_dir=tmp_path / "run", final_weights=weights,
                        on_epoch=lambda arm, epoch, accuracy: arm == 1 and epoch == 1)
    _assert_same(results[0], weights[0], alone("base", 3))
    _assert_same(results[1], weights[1], alone("paper", 3, stop_at=1))


def _single_weights() -> list[np.ndarray]:
    """The final weights of the latest ``loop.run`` (its lent model, the most recently used of ``training.reuse``)."""
    network = reuse.network_of(list(reuse._cache.values())[-1].model)
    return [np.array(v.numpy()) for v in network.weights if not v.path.endswith("/factor")]


def _saved_epochs(folder) -> int:
    with np.load(folder / "state.npz") as saved:
        return json.loads(str(saved["record"]))["epochs"]


def test_a_killed_fused_run_leaves_each_arm_a_checkpoint_its_single_run_resumes_to_the_uninterrupted_result(
        digits, alone, tmp_path):
    def kill(arm, epoch, accuracy):
        if epoch == 1:
            raise Killed

    configs, names, folders = [_config(3), _config(5)], ["base", "paper"], [tmp_path / "a0", tmp_path / "a1"]
    with pytest.raises(Killed):
        run_fused(configs, [SCHEDULES[name] for name in names], digits, on_epoch=kill, arm_checkpoints=folders)
    for config, name, folder in zip(configs, names, folders):
        assert _saved_epochs(folder) == 1
        result = loop.run(config, SCHEDULES[name], digits, checkpoint_dir=folder, test=True)
        expected, expected_weights = alone(name, config.seed)
        assert result.resumed_from_epoch == 1 and result.epochs_run == EPOCHS
        for curve in ("train_loss", "train_accuracy", "val_accuracy"):
            assert getattr(result, curve) == getattr(expected, curve)  # bitwise
        assert result.test_accuracy == expected.test_accuracy
        for mine, theirs in zip(_single_weights(), expected_weights, strict=True):
            np.testing.assert_array_equal(mine, theirs)


def test_a_pruned_arm_checkpoints_its_last_epoch_only_and_a_diverged_one_nothing(digits, alone, tmp_path,
                                                                                monkeypatch):
    expected_weights = alone("base", 3, stop_at=1)[1]
    monkeypatch.setattr(loop, "REUSE_COMPILED", False)  # the single run's model without factor variables
    folders = [tmp_path / "pruned", tmp_path / "diverged"]
    results = run_fused(_config(3), [BASE, HUGE], digits, on_epoch=lambda arm, epoch, accuracy: arm == 0,
                        arm_checkpoints=folders)
    assert results[0].stopped_early and results[1].diverged
    assert _saved_epochs(folders[0]) == 1 and not folders[1].exists()
    model, policy = loop.compiled_model(_config(3), BASE, digits, EPOCHS)  # what loop.run builds: it restores there
    key = run_key({**asdict(_config(3)), "precision": policy}, Schedule("constant", {"value": 1.0}).to_dict(),
                  loop.data_fingerprint(digits))
    record = EpochCheckpoint(folders[0], key).restore(model)
    assert record["epochs"] == 1 and record["val_accuracy"] == results[0].val_accuracy
    assert int(model.optimizer.iterations.numpy()) == loop.steps_per_epoch(_config(3), digits)
    for mine, theirs in zip(reuse.network_of(model).weights, expected_weights, strict=True):
        np.testing.assert_array_equal(np.array(mine.numpy()), theirs)
