import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from models.resnet import WEIGHT_DECAY, LearnedScale, ScaledShortcut, build_resnet, learned_values, shortcut_factors
from models.schedules import PRESETS, Schedule, preset
from training.config import FLOAT16_MAX


@pytest.mark.parametrize("depth, approx_params", [(20, 0.27e6), (32, 0.46e6), (56, 0.85e6)])
def test_parameter_counts_equal_the_baseline_for_every_schedule(depth, approx_params):
    baseline = build_resnet(depth, 10)
    assert baseline.count_params() == pytest.approx(approx_params, rel=0.02)
    trainable = sum(int(np.prod(w.shape)) for w in baseline.trainable_weights)
    for name in PRESETS:
        model = build_resnet(depth, 10, preset(name))
        extra = (depth - 2) // 2 if preset(name).learned else 0  # one learned scalar per block
        assert model.count_params() == baseline.count_params() + extra
        assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == trainable + extra


def test_model_carries_the_schedule_values():
    model = build_resnet(56, 10, preset("paper-c10-r56"))
    assert shortcut_factors(model) == pytest.approx(preset("paper-c10-r56").values(56))


def _block_tensors(model, block):
    """(block input, residual branch output, pre-ReLU sum) of one block, on one batch."""
    add = model.get_layer(f"block{block}_add")
    residual = model.get_layer(f"block{block}_bn2").output
    block_input = model.get_layer(f"block{block - 1}_out").output if block > 1 else model.get_layer("stem_relu").output
    return keras.Model(model.input, [block_input, residual, add.output])


@pytest.mark.parametrize("block", [2, 4])  # ResNet-20: block 4 opens stage 2 (stride 2, 16 -> 32 channels)
def test_f_scales_the_shortcut_inside_the_block(block):
    factors = [0.5 + 0.1 * i for i in range(9)]
    model = build_resnet(20, 10, factors)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    inp, residual, total = (np.asarray(t) for t in _block_tensors(model, block)(x))
    if block == 4:  # option A: even pixels, channels zero-padded 8 before and 8 after
        inp = np.pad(inp[:, ::2, ::2, :], [(0, 0), (0, 0), (0, 0), (8, 8)])
    np.testing.assert_allclose(total, factors[block - 1] * inp + residual, rtol=1e-5, atol=1e-5)


def test_f_zero_differs_from_the_baseline_and_f_one_equals_it_on_the_same_weights():
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 3)).astype("float32")
    baseline = build_resnet(20, 10)
    ones = build_resnet(20, 10, [1.0] * 9)
    zeros = build_resnet(20, 10, [0.0] * 9)
    ones.set_weights(baseline.get_weights())
    zeros.set_weights(baseline.get_weights())
    np.testing.assert_array_equal(ones.predict(x, verbose=0), baseline.predict(x, verbose=0))
    assert np.abs(zeros.predict(x, verbose=0) - baseline.predict(x, verbose=0)).max() > 1e-3


def test_stride_two_conv_is_centred_on_the_pixels_the_shortcut_keeps():
    """An impulse at an odd pixel must not reach the downsampled output through the conv's centre tap only."""
    model = build_resnet(20, 10)
    pad = model.get_layer("block4_pad")
    conv = model.get_layer("block4_conv1")
    assert pad.padding == ((1, 1), (1, 1)) and conv.padding == "valid" and conv.strides == (2, 2)
    # output pixel (i, j) of the padded stride-2 conv is centred on input pixel (2i, 2j), the one x[::2, ::2] keeps
    kernel = np.zeros((3, 3, 16, 32), "float32")
    kernel[1, 1, 0, 0] = 1.0  # centre tap only
    probe = keras.Sequential([keras.Input((32, 32, 16)), keras.layers.ZeroPadding2D(1),
                              keras.layers.Conv2D(32, 3, strides=2, padding="valid", use_bias=False)])
    probe.layers[-1].set_weights([kernel])
    x = np.random.default_rng(0).normal(size=(1, 32, 32, 16)).astype("float32")
    np.testing.assert_allclose(np.asarray(probe(x))[0, :, :, 0], x[0, ::2, ::2, 0], rtol=1e-6)
    shortcut = ScaledShortcut(32, 2, 1.0)(x)
    np.testing.assert_allclose(np.asarray(shortcut)[0, :, :, 8], x[0, ::2, ::2, 0])


def test_keras_file_round_trip_keeps_the_schedule(tmp_path):
    model = build_resnet(20, 10, preset("paper-c10-r32"))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert shortcut_factors(loaded) == pytest.approx(preset("paper-c10-r32").values(20))


@pytest.mark.parametrize("name", ["baseline", "learned", "skipinit"])
def test_weight_decay_reaches_every_parameter_but_the_learned_scalars(name):
    import tensorflow as tf

    model = build_resnet(8, 10, preset(name))
    rng = np.random.default_rng(0)
    for variable in model.trainable_variables:  # away from the initial zeros and ones
        variable.assign(rng.normal(size=variable.shape).astype("float32"))
    with tf.GradientTape() as tape:
        penalty = tf.add_n(model.losses)
    gradients = tape.gradient(penalty, model.trainable_variables)
    learned = {id(layer.scale) for layer in model.layers if isinstance(layer, LearnedScale)}
    assert len(learned) == (3 if preset(name).learned else 0)
    kinds = set()
    for variable, gradient in zip(model.trainable_variables, gradients):
        if id(variable) in learned:
            assert gradient is None  # SGD's coupled decay is weight_decay * w; the learned scalars have none
        else:
            np.testing.assert_allclose(gradient, WEIGHT_DECAY * variable.numpy(), rtol=1e-5, atol=1e-9)
            kinds.add(variable.path.rsplit("/", 1)[-1])
    assert {"kernel", "gamma", "beta", "bias"} <= kinds  # convolutions, BatchNorm and the dense layer


def test_skipinit_starts_as_its_stem_passed_through_the_shortcuts():
    model = build_resnet(8, 10, preset("skipinit"))
    assert learned_values(model) == [0.0, 0.0, 0.0]
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    stem, last = keras.Model(model.input, [model.get_layer("stem_relu").output,
                                           model.get_layer("block3_out").output])(x, training=False)
    expected = np.asarray(stem)[:, ::2, ::2, :][:, ::2, ::2, :]  # blocks 2 and 3 enter stages 2 and 3: stride 2
    expected = np.pad(expected, [(0, 0), (0, 0), (0, 0), (24, 24)])  # option A: 16 -> 32 -> 64 channels
    np.testing.assert_allclose(np.asarray(last), expected, atol=1e-6)


def test_keras_file_round_trip_of_a_learned_model_keeps_its_scalars(tmp_path):
    for name in ("learned", "skipinit"):
        model = build_resnet(8, 10, preset(name))
        for index, layer in enumerate(layer for layer in model.layers if isinstance(layer, LearnedScale)):
            layer.scale.assign(0.7 + 0.1 * index)  # as after training
        model.save(tmp_path / f"{name}.keras")
        loaded = keras.saving.load_model(tmp_path / f"{name}.keras")
        x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
        np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
        assert learned_values(loaded) == pytest.approx([0.7, 0.8, 0.9])


def test_logits_are_float32_under_mixed_precision():
    previous = keras.config.dtype_policy()
    try:
        keras.config.set_dtype_policy("mixed_float16")
        model = build_resnet(8, 10, preset("paper-c10-r32"))
        assert model.get_layer("block2_conv1").compute_dtype == "float16"
        assert model.output.dtype == "float32"
        out = model(np.zeros((1, 32, 32, 3), "float32"))
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
    finally:
        keras.config.set_dtype_policy(previous)


def test_scaled_shortcuts_compound_past_float16s_range_and_bfloat16_keeps_them_finite():
    """ResNet-56 with f = 1.5 (inside the default --scale-range) at initialisation, one training-mode pass: the last
    block's activations pass 65504 in float32, float16 turns the logits into NaN, bfloat16 stays finite. This is why
    --precision auto takes bfloat16 on the GPUs that have it."""
    images = np.random.default_rng(0).normal(size=(16, 32, 32, 3)).astype("float32")
    previous, seen = keras.config.dtype_policy(), {}
    for policy in ("float32", "mixed_float16", "mixed_bfloat16"):
        keras.utils.set_random_seed(0)
        keras.config.set_dtype_policy(policy)
        try:
            model = build_resnet(56, 10, Schedule("constant", {"value": 1.5}))
        finally:
            keras.config.set_dtype_policy(previous)
        last_block, logits = keras.Model(model.input, [model.get_layer("block27_out").output, model.output])(
            images, training=True)
        peak = np.max(np.abs(keras.ops.convert_to_numpy(keras.ops.cast(last_block, "float32"))))
        seen[policy] = peak, np.isfinite(keras.ops.convert_to_numpy(logits)).all()
    assert seen["float32"][0] > FLOAT16_MAX and seen["float32"][1]
    assert not seen["mixed_float16"][1]
    assert seen["mixed_bfloat16"][0] > FLOAT16_MAX and seen["mixed_bfloat16"][1]


def test_bad_factor_lists_are_refused():
    with pytest.raises(ValueError, match="9 finite factors"):
        build_resnet(20, 10, [1.0] * 8)
    with pytest.raises(ValueError, match="factors"):
        build_resnet(20, 10, [1.0] * 8 + [float("nan")])


JAX_STEP = """
import numpy as np, keras
assert keras.config.backend() == "jax"
from models.resnet import build_resnet, learned_values
from models.schedules import preset
from training.pipeline import with_input_pipeline
for name in ("paper-c10-r32", "learned", "skipinit"):
    net = build_resnet(8, 10, preset(name))
    model = with_input_pipeline(net, np.full(3, 127.0), np.full(3, 64.0), seed=0)
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    x = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    y = np.arange(16) % 10
    before = [np.array(w) for w in model.trainable_weights]
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"]), logs
    assert any(not np.allclose(a, np.array(b)) for a, b in zip(before, model.trainable_weights)), name
    if name != "paper-c10-r32":  # the learned scalars train under JAX too
        assert learned_values(model) != [{"learned": 1.0, "skipinit": 0.0}[name]] * 3, learned_values(model)
print("jax step ok", logs["loss"])
"""


def test_jax_backend_builds_and_takes_a_training_step():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", JAX_STEP], env=env, cwd=root, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "jax step ok" in done.stdout


def test_fused_batch_norm_computes_what_keras_batch_norm_computes():
    """Also the alarm for TensorFlow dropping tf.compat.v1.nn.fused_batch_norm: Keras's fallback keeps the biased
    moving variance, which fails the unbiased check below (and training is 25 % slower on a CPU)."""
    from models.resnet import BatchNorm

    x = np.random.default_rng(0).normal(2.0, 3.0, size=(8, 6, 6, 16)).astype("float32")
    ours = BatchNorm(momentum=0.9, epsilon=1e-5)
    reference = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)
    ours.build(x.shape)
    reference.build(x.shape)
    ours.gamma.assign(np.linspace(0.5, 1.5, 16))
    reference.gamma.assign(np.linspace(0.5, 1.5, 16))
    np.testing.assert_allclose(ours(x, training=True), reference(x, training=True), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours.moving_mean, reference.moving_mean, rtol=1e-5, atol=1e-6)
    n = 8 * 6 * 6  # the fused kernel keeps the unbiased batch variance, as PyTorch does
    unbiased = np.asarray(reference.moving_variance) * 0 + 0.9 + 0.1 * (
        (np.asarray(reference.moving_variance) - 0.9) / 0.1) * n / (n - 1)
    np.testing.assert_allclose(ours.moving_variance, unbiased, rtol=1e-4)
    np.testing.assert_allclose(ours(x, training=False), reference(x, training=False), rtol=1e-3, atol=1e-3)
