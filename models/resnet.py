"""The CIFAR ResNet of He et al. 2015, with each block's shortcut scaled by a fixed factor f_l.

    block l:  y = ReLU(f_l * shortcut(x) + F(x)),   F = conv3x3-BN-ReLU-conv3x3-BN

Depth 6n+2: a 3x3 stem of 16 filters, three stages of n blocks at 16/32/64 filters (stride 2 entering stages 2
and 3), global average pooling and a dense layer of logits. Shortcuts are He et al.'s option A: stride-2
subsampling plus zero-padded channels, no parameters. f_l is a Python float baked into the graph, so a scaled
network has exactly the weights of the plain one; ``variable_factors=True`` makes every block's f_l a
non-trainable scalar variable instead (``set_shortcut_factors``), so that one compiled step trains any schedule
(``training.reuse``); x * 1.0 is exact, so a factor of 1 computes what the plain shortcut does. The learned
arms add one trainable scalar per block instead (``LearnedScale``): ``learned`` on the shortcut (f_l from 1),
``skipinit`` on the branch F(x) (from 0). Weight decay 1e-4 on every parameter, BatchNorm's and the dense bias
included, as in fb.resnet.torch; never on the learned scalars. Keras 3 API only: it runs under TensorFlow and JAX.
"""
from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np
from keras import layers, ops

from common.errors import UsageError
from models.schedules import Schedule, block_count

WEIGHT_DECAY = 1e-4
# Keras's L2(c) adds c * sum(w^2), whose gradient is 2c*w: half the coefficient gives SGD's coupled decay 1e-4*w.
_L2 = WEIGHT_DECAY / 2
# PyTorch's 0.1 in Keras's convention. Keras's default 0.99 lags so far behind in short runs that validation
# accuracy sits near chance for the first epochs, which would make early pruning decisions noise.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="resnet_shortcut")
class ScaledShortcut(layers.Layer):
    """Option-A shortcut times a constant: ``scale * pad_channels(x[:, ::stride, ::stride])``.

    Args:
        filters: output channels; extra channels are zeros, split evenly before and after the input's.
        stride: 1 or 2; stride 2 keeps the even pixels, where the block's padded stride-2 conv is centred.
        scale: the schedule's factor f_l (> 0), a constant rather than a weight.
        variable: hold ``scale`` in a non-trainable float32 variable (``factor``) read by the graph, so that
            ``set_scale`` changes it without tracing again.
    """

    def __init__(self, filters: int, stride: int = 1, scale: float = 1.0, variable: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.stride, self.scale, self.variable = int(filters), int(stride), float(scale), variable

    def build(self, input_shape):
        if self.variable:
            self.factor = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.scale),
                                          trainable=False, name="factor")

    def set_scale(self, scale: float) -> None:
        """A new f_l: in the variable of a ``variable`` shortcut (the same graph computes it); else in the
        attribute, which only a graph traced afterwards reads."""
        self.scale = float(scale)
        if self.variable:
            self.factor.assign(self.scale)

    def call(self, x):
        if self.stride > 1:
            x = x[:, :: self.stride, :: self.stride, :]
        extra = self.filters - x.shape[-1]
        if extra:
            x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])
        if self.variable:  # float32 to the compute dtype, as a Python float's cast goes through float32 too
            return x * ops.cast(self.factor, x.dtype)
        return x if self.scale == 1.0 else x * ops.cast(self.scale, x.dtype)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        shrink = lambda size: None if size is None else -(-size // self.stride)  # noqa: E731
        return (batch, shrink(height), shrink(width), self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "stride": self.stride, "scale": self.scale,
                "variable": self.variable}


@keras.saving.register_keras_serializable(package="resnet_shortcut")
class LearnedScale(layers.Layer):
    """``scale * x`` with ``scale`` one trainable scalar starting at ``initial``, free of weight decay (a learned
    f_l, or SkipInit's branch multiplier)."""

    def __init__(self, initial: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.initial = float(initial)

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer=keras.initializers.Constant(self.initial), name="scale")

    def call(self, x):
        return x * ops.cast(self.scale, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "initial": self.initial}


@keras.saving.register_keras_serializable(package="resnet_shortcut")
class BatchNorm(layers.BatchNormalization):
    """BatchNormalization over the last axis that trains through TensorFlow's fused kernel under that backend.

    Keras 3 computes training-mode BN from separate moments and elementwise ops: on a 2-core CPU that was a third
    of a ResNet-32 training step (benchmarks.step_profile), and the fused kernel made the whole step 25 % faster
    (315 -> 394 img/s, float32). Same function: batch statistics in training, moving averages at inference; the
    moving variance follows the kernel's (and PyTorch's) unbiased batch variance, a factor N/(N-1) with
    N = batch x height x width pixels. Other backends, inference, and masks use Keras's own path.
    """

    _FUSED_DTYPES = ("float32", "float16", "bfloat16")

    def call(self, inputs, training=None, mask=None):
        fused = (training and self.trainable and mask is None and keras.config.backend() == "tensorflow"
                 and len(inputs.shape) == 4 and self.axis in (-1, 3) and self.scale and self.center
                 and keras.backend.standardize_dtype(inputs.dtype) in self._FUSED_DTYPES)
        if fused:
            import tensorflow as tf

            # tf.compat.v1 is not TensorFlow's public API any more: if a release drops it, Keras's path (same
            # function, slower) takes over, and tests/test_resnet.py's fused test fails to say so
            fused_batch_norm = getattr(getattr(getattr(tf.compat, "v1", None), "nn", None), "fused_batch_norm", None)
        if not fused or fused_batch_norm is None:
            return super().call(inputs, training=training, mask=mask)
        outputs, mean, variance = fused_batch_norm(
            inputs, ops.cast(self.gamma, "float32"), ops.cast(self.beta, "float32"), epsilon=self.epsilon,
            data_format="NHWC", is_training=True)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return ops.cast(outputs, self.compute_dtype)


def conv(filters: int, stride: int, name: str) -> layers.Conv2D:
    return layers.Conv2D(
        filters, 3, strides=stride, use_bias=False, name=name,
        # He et al.'s Torch code pads a stride-2 conv one pixel on every side (explicit ZeroPadding2D before it),
        # centring its taps on the even pixels the shortcut keeps; "same" at stride 2 would pad bottom/right only.
        padding="same" if stride == 1 else "valid",
        kernel_initializer="he_normal", kernel_regularizer=keras.regularizers.L2(_L2),
    )


def batch_norm(name: str) -> layers.BatchNormalization:
    return BatchNorm(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name,
                     gamma_regularizer=keras.regularizers.L2(_L2), beta_regularizer=keras.regularizers.L2(_L2))


def basic_block(x, filters: int, stride: int, scale: float, name: str, learned: str | None = None,
                variable: bool = False):
    """One residual block: ReLU(scale * shortcut(x) + conv-BN-ReLU-conv-BN(x)); ``learned`` = ``learned`` makes
    the shortcut's factor a trainable scalar from 1, ``skipinit`` multiplies the branch by one from 0;
    ``variable``: the factor is a variable (``ScaledShortcut``), in every block."""
    shortcut = x
    if variable or stride != 1 or scale != 1.0 or x.shape[-1] != filters:
        shortcut = ScaledShortcut(filters, stride, scale, variable=variable, name=f"{name}_shortcut")(x)
    if learned == "learned":
        shortcut = LearnedScale(1.0, name=f"{name}_shortcut_scale")(shortcut)
    y = layers.ZeroPadding2D(1, name=f"{name}_pad")(x) if stride != 1 else x
    y = conv(filters, stride, f"{name}_conv1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(batch_norm(f"{name}_bn1")(y))
    y = batch_norm(f"{name}_bn2")(conv(filters, 1, f"{name}_conv2")(y))
    if learned == "skipinit":
        y = LearnedScale(0.0, name=f"{name}_branch_scale")(y)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))


def build_resnet(depth: int, num_classes: int, schedule: Schedule | Sequence[float] | None = None,
                 input_shape: tuple[int, int, int] = (32, 32, 3), name: str | None = None,
                 variable_factors: bool = False) -> keras.Model:
    """A CIFAR ResNet of ``depth`` = 6n+2 whose block l scales its shortcut by ``schedule.values(depth)[l-1]``.

    ``schedule=None`` is the baseline (every factor 1): the plain ResNet of He et al. A sequence of L raw factors
    (>= 0) is taken as is, for ablations such as f = 0 (no shortcut at all). The ``learned`` and ``skipinit``
    schedules give each block a trainable scalar (``LearnedScale``). Inputs are normalised images; outputs are
    float32 logits, also under a mixed-precision policy. ``variable_factors``: every block's factor is a
    variable that ``set_shortcut_factors`` changes (one traced graph for any schedule of this family).
    """
    blocks = block_count(depth)
    factors, learned = schedule_factors(depth, schedule)
    blocks_per_stage = blocks // 3
    inputs = keras.Input(input_shape, name="image")
    x = conv(16, 1, "stem_conv")(inputs)
    x = layers.ReLU(name="stem_relu")(batch_norm("stem_bn")(x))
    for stage, filters in enumerate((16, 32, 64)):
        for index in range(blocks_per_stage):
            l = stage * blocks_per_stage + index  # noqa: E741 - the paper's block index (0-based here)
            stride = 2 if stage > 0 and index == 0 else 1
            x = basic_block(x, filters, stride, factors[l], name=f"block{l + 1}", learned=learned,
                            variable=variable_factors)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    # float32 logits: a softmax cross-entropy in float16 loses precision and can overflow
    logits = layers.Dense(num_classes, dtype="float32", name="logits",
                          kernel_regularizer=keras.regularizers.L2(_L2), bias_regularizer=keras.regularizers.L2(_L2))(x)
    return keras.Model(inputs, logits, name=name or f"resnet{depth}")


def schedule_factors(depth: int, schedule: Schedule | Sequence[float] | None) -> tuple[list[float], str | None]:
    """(the factor of each block, the learned family or None) of ``schedule`` at ``depth``, checked: L finite
    factors >= 0 (``UsageError`` otherwise)."""
    blocks = block_count(depth)
    learned = schedule.family if isinstance(schedule, Schedule) and schedule.learned else None
    factors = list(schedule.values(depth) if isinstance(schedule, Schedule) else schedule or [1.0] * blocks)
    if len(factors) != blocks or not all(math.isfinite(f) and f >= 0 for f in factors):
        raise UsageError(f"schedule: ResNet-{depth} needs {blocks} finite factors >= 0, got {factors}")
    return [float(f) for f in factors], learned


def set_shortcut_factors(network: keras.Model, factors: Sequence[float]) -> None:
    """Give a network built with ``variable_factors=True`` the factors ``factors`` (block 1 first)."""
    shortcuts = [layer for layer in _all_layers(network) if isinstance(layer, ScaledShortcut)]
    if len(shortcuts) != len(factors) or not all(layer.variable for layer in shortcuts):
        raise ValueError(f"set_shortcut_factors: {len(factors)} factors for a network without a variable factor "
                         f"in each of its blocks")
    for layer, factor in zip(sorted(shortcuts, key=lambda layer: _block_number(layer.name)), factors):
        layer.set_scale(factor)


def _block_number(name: str) -> int:
    return int(name.removeprefix("block").partition("_")[0])


def portable_network(network: keras.Model) -> keras.Model:
    """``network`` (built by ``build_resnet``, trained) rebuilt from Keras's built-in layers only, for inference in
    float32: ``keras.saving.load_model`` reads it without this project. Same function at inference: a
    ``ScaledShortcut`` becomes a fixed 1x1 convolution (stride, zero channels and the factor in its one-hot
    kernel: each output is ``f_l * x`` plus exact zeros), a ``LearnedScale`` a ``Rescaling`` by its trained
    value, ``BatchNorm`` Keras's ``BatchNormalization`` (moving statistics, as at inference before)."""

    def built_in(layer):
        config = {**layer.get_config(), "dtype": "float32", "trainable": False}
        if isinstance(layer, ScaledShortcut):
            return layers.Conv2D(layer.filters, 1, strides=layer.stride, use_bias=False, name=layer.name,
                                 dtype="float32", trainable=False)
        if isinstance(layer, LearnedScale):
            return layers.Rescaling(float(ops.convert_to_numpy(layer.scale)), name=layer.name, dtype="float32")
        if isinstance(layer, BatchNorm):
            return layers.BatchNormalization.from_config(config)
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(network, clone_function=built_in)
    for old, new in zip(network.layers, copy.layers):
        if isinstance(old, ScaledShortcut):
            channels, extra = int(old.input.shape[-1]), old.filters - int(old.input.shape[-1])
            kernel = np.zeros((1, 1, channels, old.filters), "float32")
            kernel[0, 0, np.arange(channels), extra // 2 + np.arange(channels)] = old.scale
            new.set_weights([kernel])
        elif not isinstance(old, LearnedScale):
            new.set_weights([np.asarray(ops.convert_to_numpy(w), "float32") for w in old.weights])
    return copy


def shortcut_factors(model: keras.Model) -> list[float]:
    """The factors f_l baked into a model built by ``build_resnet`` (1.0 where a block has a plain shortcut)."""
    by_name = {layer.name: layer for layer in model.layers}
    adds = [name.removesuffix("_add") for name in by_name if name.endswith("_add")]
    return [getattr(by_name.get(f"{block}_shortcut"), "scale", 1.0) for block in adds]


def learned_values(model: keras.Model) -> list[float] | None:
    """The trained per-block scalars of a ``learned`` (shortcut factors) or ``skipinit`` (branch multipliers)
    network, block 1 first, also inside a wrapping model (the input pipeline); None for a fixed schedule."""
    scales = [layer for layer in _all_layers(model) if isinstance(layer, LearnedScale)]
    return [float(ops.convert_to_numpy(layer.scale)) for layer in scales] if scales else None


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
