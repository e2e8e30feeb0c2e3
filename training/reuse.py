"""One compiled training step per worker: the models a process has traced, reused by its later runs (issue 29).

Tracing a ResNet's train and test functions costs seconds (2.7 s of a 3.4 s tiny trial on a 2-core CPU, and an
XLA compile on a GPU), and trials differ only in their seed and their shortcut factors. So a process keeps its
compiled models, keyed by everything that decides the traced graph (``training.loop.reuse_key``: depth, data shape
and normalisation, batch size, precision, XLA, steps per execution, fixed or learned arm, the learning-rate
schedule's steps), and a run on a key seen before takes that model, puts it back into the state a fresh process
would build for its seed (``reinitialise``), gives it its factors (variables in the graph:
``models.resnet.build_resnet(variable_factors=True)``), and trains on the functions already traced.

Same numbers as a fresh build: ``keras.utils.set_random_seed(seed)`` first, as before; then every random
initializer (the convolutions' and the dense layer's kernels) is drawn again with a seed from Python's generator, in
the order the build drew them (layer order), so each gets the values a fresh build gives, and Python's generator is
left where a build leaves it; BatchNorm's parameters and statistics, biases and learned scalars go back to their
initializers; the augmentation's seed generator to the seed's first state; the optimizer's variables (iterations,
momentum, a loss scale) to their values before the first step. A variable this does not know is an error, not a
silent carry-over. A model is lent to one run at a time (another run at once builds its own, uncached).
``clear()`` empties the cache (after ``keras.backend.clear_session``).
"""
from __future__ import annotations

import random as _random
import threading
from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable, Hashable, Iterator, Sequence

import keras
import numpy as np

from models.resnet import LearnedScale, ScaledShortcut, set_shortcut_factors
from training.pipeline import PadCropFlip

CACHE_SIZE = 4  # compiled models a process keeps (least recently used goes first)

_cache: OrderedDict[Hashable, "_Entry"] = OrderedDict()
_lock = threading.Lock()


class _Entry:
    def __init__(self, model: keras.Model):
        self.model, self.busy = model, True
        optimizer = model.optimizer
        if not optimizer.built:
            optimizer.build(model.trainable_variables)
        self.optimizer_start = [np.array(variable.numpy()) for variable in optimizer.variables]


def clear() -> None:
    """Forget every compiled model of this process."""
    with _lock:
        _cache.clear()


def cached_keys() -> list:
    return list(_cache)


@contextmanager
def lend(key: Hashable, build: Callable[[], keras.Model], seed: int, factors: Sequence[float]) -> Iterator[keras.Model]:
    """The compiled model for ``key``, in the state a fresh ``build()`` under ``seed`` gives it, with ``factors``.

    ``build`` seeds Keras and builds and compiles a new model (with variable factors); it runs when the key is new,
    or its model is lent to another run at the moment (that one is not kept).
    """
    with _lock:
        entry = _cache.get(key)
        lent = entry is not None and not entry.busy
        if lent:
            entry.busy = True
            _cache.move_to_end(key)
    if lent:
        seed_keeping_kernels(seed)
        try:
            reinitialise(entry.model, seed, entry.optimizer_start)
        except BaseException:
            _forget(key, entry)
            raise
    else:
        model = build()
        entry = _Entry(model)
        with _lock:
            if key not in _cache:
                _cache[key] = entry
                while len(_cache) > CACHE_SIZE:
                    _cache.popitem(last=False)
    set_shortcut_factors(network_of(entry.model), factors)
    try:
        yield entry.model
    finally:
        entry.busy = False


def seed_keeping_kernels(seed: int) -> None:
    """``keras.utils.set_random_seed(seed)``, less the clearing of TensorFlow's kernel cache that its
    ``tf.random.set_seed`` does in eager mode: the clearing drops the instantiated training function, whose next
    call then optimises its graph again (0.4-0.5 s of a tiny trial on 2 CPU cores, a fifth of the tracing). The
    global seed and its operation-seed generator are set as ``tf.random.set_seed`` sets them; the cache holds no
    random state this training reads (Keras's random ops are stateless, seeded from variables; tf.data's shuffle
    takes its seeds when the data set is made), so the numbers are a fresh process's (tests/test_reuse.py)."""
    context = _eager_context()
    if context is None:
        keras.utils.set_random_seed(seed)
        return

    def set_global_seed(value):
        context._seed, context._rng = value, _random.Random(value)

    context._set_global_seed = set_global_seed  # this instance only, for this call
    try:
        keras.utils.set_random_seed(seed)
    finally:
        del context._set_global_seed


def _eager_context():
    """TensorFlow's eager context when its seed can be set as ``tf.random.set_seed`` does, else None."""
    if keras.config.backend() != "tensorflow":
        return None
    from tensorflow.python.eager import context  # TensorFlow's own module (Keras started TensorFlow already)

    current = context.context()
    ready = (context.executing_eagerly() and "_set_global_seed" not in vars(current)
             and all(hasattr(current, name) for name in ("_set_global_seed", "_seed", "_rng")))
    return current if ready else None


def _forget(key: Hashable, entry: _Entry) -> None:
    with _lock:
        if _cache.get(key) is entry:
            del _cache[key]


def network_of(model: keras.Model) -> keras.Model:
    """The ResNet inside an input-pipeline model (the model itself when it is the network)."""
    return next((layer for layer in model.layers if isinstance(layer, keras.Model)), model)


def reinitialise(model: keras.Model, seed: int, optimizer_start: Sequence[np.ndarray]) -> None:
    """Put ``model`` (an input pipeline around a ResNet, compiled and built) into the state a fresh build right
    after ``keras.utils.set_random_seed(seed)`` gives it. Call it right after that seeding."""
    done: set[int] = set()
    for layer in model.layers:
        if isinstance(layer, PadCropFlip):
            layer.seed = seed
            layer.seed_generator._initial_seed = seed
            layer.seed_generator.state.assign(keras.random.SeedGenerator(seed).state.value)
            done.add(id(layer.seed_generator.state))
    for layer in network_of(model).layers:
        _reinitialise_layer(layer, done)
    constant = [layer for layer in model.layers if isinstance(layer, keras.layers.Normalization)]
    done.update(id(variable) for layer in constant for variable in layer.variables)  # set by the cache's key
    missed = [variable.path for variable in model.variables if id(variable) not in done]
    if missed:
        raise RuntimeError(f"reinitialise: no initial value known for {', '.join(missed)}")
    optimizer = model.optimizer
    if len(optimizer.variables) != len(optimizer_start):
        raise RuntimeError("reinitialise: the optimizer's variables changed since the model was compiled")
    for variable, value in zip(optimizer.variables, optimizer_start):
        variable.assign(value)


def _reinitialise_layer(layer, done: set[int]) -> None:
    def assign(variable, initializer):
        variable.assign(initializer(tuple(variable.shape), dtype=variable.dtype))
        done.add(id(variable))

    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
        # a fresh initializer draws its seed from Python's generator, as the layer's own did when it was built
        kernel = layer.kernel_initializer
        if "seed" in kernel.get_config() and kernel.get_config()["seed"] is None:  # an unseeded random one
            kernel = kernel.__class__.from_config(kernel.get_config())
        assign(layer.kernel, kernel)
        if layer.bias is not None:
            assign(layer.bias, layer.bias_initializer)
    elif isinstance(layer, keras.layers.BatchNormalization):
        for name in ("gamma", "beta", "moving_mean", "moving_variance"):
            if getattr(layer, name, None) is not None:
                assign(getattr(layer, name), getattr(layer, f"{name}_initializer"))
    elif isinstance(layer, LearnedScale):
        assign(layer.scale, keras.initializers.Constant(layer.initial))
    elif isinstance(layer, ScaledShortcut) and layer.variable:
        done.add(id(layer.factor))  # set_shortcut_factors gives it the run's factor
