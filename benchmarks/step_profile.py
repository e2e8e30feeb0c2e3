"""Where a training step's time goes, by ablation: the same ResNet with parts taken out, timed side by side.

    python -m benchmarks.step_profile --depth 32 --batch-size 128

Variants, each a full train step (forward, backward, SGD update) on one resident float32 batch: the network as
built; without BatchNormalization; convolutions only (no BN, no ReLU, no shortcut); and a forward pass alone.
Rounds alternate between variants and the best round of each counts. Prints JSON: images/s and milliseconds per
step of each variant, and the shares they imply.
"""
from __future__ import annotations

import sys
import time
from typing import Sequence

from benchmarks.train_speed import step_benchmark
from common.cli import run_command
from common.machine import prepare_tensorflow


def _conv_stack(keras, depth: int, with_bn: bool, with_shortcut: bool):
    """The ResNet's convolutions in the same shapes, optionally without BN and without the residual adds."""
    from models.resnet import ScaledShortcut, batch_norm, conv  # TensorFlow: after prepare_tensorflow

    layers = keras.layers
    inputs = keras.Input((32, 32, 3))
    x = conv(16, 1, "stem")(inputs)
    n = (depth - 2) // 6
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(n):
            stride = 2 if stage > 0 and block == 0 else 1
            name = f"s{stage}b{block}"
            y = layers.ZeroPadding2D(1)(x) if stride == 2 else x
            y = conv(filters, stride, f"{name}c1")(y)
            y = batch_norm(f"{name}n1")(y) if with_bn else y
            y = layers.ReLU()(y) if with_shortcut else y
            y = conv(filters, 1, f"{name}c2")(y)
            y = batch_norm(f"{name}n2")(y) if with_bn else y
            if with_shortcut:
                y = layers.ReLU()(layers.Add()([ScaledShortcut(filters, stride, 1.0)(x), y]))
            x = y
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x))


def measure(depth: int, batch_size: int, steps: int, rounds: int = 3) -> dict:
    prepare_tensorflow()  # then TensorFlow, imported here only
    import keras
    import numpy as np
    import tensorflow as tf

    from models.resnet import build_resnet

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch_size, 32, 32, 3)).astype("float32"))
    y = tf.constant(np.arange(batch_size) % 10)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variants = {
        "full": build_resnet(depth, 10),
        "no_batchnorm": _conv_stack(keras, depth, with_bn=False, with_shortcut=True),
        "convolutions_only": _conv_stack(keras, depth, with_bn=False, with_shortcut=False),
    }
    steps_fn = {}
    for name, model in variants.items():
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss, jit_compile=False)
        steps_fn[name] = lambda model=model: model.train_on_batch(x, y)
    forward = tf.function(lambda: variants["full"](x, training=True))
    steps_fn["forward_only"] = forward
    best = {name: float("inf") for name in steps_fn}
    for step in steps_fn.values():  # trace and warm up
        for _ in range(3):
            step()
    for _ in range(rounds):
        for name, step in steps_fn.items():
            started = time.perf_counter()
            for _ in range(steps):
                result = step()
            if hasattr(result, "numpy"):
                result.numpy()
            best[name] = min(best[name], (time.perf_counter() - started) / steps)
    full = best["full"]
    return {
        "depth": depth, "batch_size": batch_size,
        "ms_per_step": {name: round(1000 * seconds, 1) for name, seconds in best.items()},
        "images_per_second": {name: round(batch_size / seconds, 1) for name, seconds in best.items()},
        "share_convolutions": round(best["convolutions_only"] / full, 3),
        "share_batchnorm": round((full - best["no_batchnorm"]) / full, 3),
        "share_forward": round(best["forward_only"] / full, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    return step_benchmark("benchmarks.step_profile", __doc__, measure, argv, steps=10)


if __name__ == "__main__":
    sys.exit(run_command(main))
