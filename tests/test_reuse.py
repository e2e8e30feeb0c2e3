"""One compiled step per worker (training.reuse): a run on a reused model is the run a fresh process makes."""
import random

import numpy as np
import pytest

from models.resnet import ScaledShortcut, build_resnet, schedule_factors, shortcut_factors
from models.schedules import Schedule, preset
from training import loop, reuse
from training.config import TrainConfig
from training.data import load_dataset


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", subset=200)


@pytest.fixture(autouse=True)
def _empty_cache():
    reuse.clear()
    yield
    reuse.clear()


def _state(model):
    return [np.array(v.numpy()) for v in [*model.variables, *model.optimizer.variables]]


def _curves(result):
    return (result.train_loss, result.train_accuracy, result.val_accuracy, result.learned_values)


@pytest.mark.parametrize("precision", ["float32", "mixed_float16"])  # mixed_float16: a loss scale to reset too
def test_a_reinitialised_model_holds_exactly_what_a_fresh_build_for_its_seed_holds(digits, precision):
    config = TrainConfig(depth=8, epochs=1, batch_size=32, precision=precision, seed=0)
    loop.run(config, preset("paper-c10-r32"), digits)  # trains the cached model away from its start
    (entry,) = reuse._cache.values()
    for variable in entry.model.variables:  # as a diverged run leaves it
        if "float" in str(variable.dtype):
            variable.assign(np.full(variable.shape, np.nan, "float32"))
    other = TrainConfig(depth=8, epochs=1, batch_size=32, precision=precision, seed=7)
    schedule = preset("paper-c10-r56")
    factors, _ = schedule_factors(8, schedule)
    with loop.lent_model(other, schedule, digits, 1) as (model, _):
        assert model is entry.model
        lent, after_lend = _state(model), random.random()
    fresh, _ = loop.compiled_model(other, schedule, digits, 1, variable_factors=True)
    fresh.optimizer.build(fresh.trainable_variables)
    after_build = random.random()
    assert len(lent) == len(_state(fresh))
    for mine, theirs in zip(lent, _state(fresh)):
        assert mine.dtype == theirs.dtype and np.array_equal(mine, theirs)
    assert after_lend == after_build  # Python's generator left where a build leaves it
    assert shortcut_factors(loop.reuse.network_of(model)) == pytest.approx(factors)
    # and the weights are those of today's network with constant factors (the factors are its only extra)
    plain, _ = loop.compiled_model(other, schedule, digits, 1)
    plain_weights = [np.array(v.numpy()) for v in plain.weights]
    reused_weights = [np.array(v.numpy()) for v in model.weights if not v.path.endswith("/factor")]
    assert all(np.array_equal(a, b) for a, b in zip(plain_weights, reused_weights, strict=True))


@pytest.mark.parametrize("first, first_seed, second", [
    (None, 1, preset("paper-c10-r32")),
    (Schedule("constant", {"value": 0.7}), 3, None),  # the same seed twice, as in a search
    (preset("learned"), 1, preset("learned")),
])
def test_a_run_after_another_in_one_process_equals_a_fresh_process(digits, monkeypatch, first, first_seed, second):
    config = TrainConfig(depth=8, epochs=2, batch_size=32, precision="float32", seed=3)
    loop.run(TrainConfig(depth=8, epochs=2, batch_size=32, precision="float32", seed=first_seed), first, digits)
    reused = loop.run(config, second, digits, test=True)
    assert len(reuse.cached_keys()) == 1  # the second run traced nothing new
    monkeypatch.setattr(loop, "REUSE_COMPILED", False)
    fresh = loop.run(config, second, digits, test=True)
    assert _curves(reused) == _curves(fresh)
    assert reused.test_accuracy == fresh.test_accuracy


def test_other_graphs_get_their_own_models_and_a_busy_one_is_not_shared(digits):
    config = TrainConfig(depth=8, epochs=1, batch_size=32, precision="float32")
    with loop.lent_model(config, preset("paper-c10-r32"), digits, 1) as (first, _):
        with loop.lent_model(config, None, digits, 1) as (second, _):  # the same graph
            assert second is not first  # lent to the outer run: a model of its own, not kept
    assert len(reuse.cached_keys()) == 1
    with loop.lent_model(config, preset("learned"), digits, 1) as (learned, _):
        assert learned is not first
    with loop.lent_model(config, preset("paper-c10-r32"), digits, 2) as (longer, _):  # another schedule length
        assert longer is not first
    assert len(reuse.cached_keys()) == 3


def test_variable_factors_compute_what_constant_ones_do():
    schedule = preset("paper-c10-r56")
    constant, variable = build_resnet(8, 10, schedule), build_resnet(8, 10, schedule, variable_factors=True)
    variable.set_weights(_aligned(constant, variable))
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    assert np.array_equal(constant(x, training=True).numpy(), variable(x, training=True).numpy())
    assert sum(isinstance(layer, ScaledShortcut) for layer in variable.layers) == 3


def _aligned(constant, variable):
    """``constant``'s weights in ``variable``'s order, its factor variables holding their own values."""
    values = iter(constant.get_weights())
    return [np.array(v.numpy()) if v.path.endswith("/factor") else next(values) for v in variable.weights]
