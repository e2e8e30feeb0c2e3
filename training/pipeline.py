"""The input pipeline: uint8 batches from tf.data, then normalisation and He et al.'s augmentation as Keras layers
inside the compiled step.

Images travel as uint8 and are normalised and augmented by the model itself, so on a GPU the work happens on the
device (4x less host-to-device traffic than float32) and on a CPU it adds no separate input thread competing with
the training step for the same cores. Keras's own RandomCrop draws one offset per batch; He et al. crop every
image independently, hence ``PadCropFlip``.

``batches`` feeds ``Model.fit`` one endless, reshuffled stream for the whole run instead of NumPy arrays: with
arrays Keras builds a new tf.data iterator every epoch, and tearing the previous one down stalled the first step
after each validation by 5-9 s on a 2-core CPU (ResNet-20 on 5000 CIFAR images: 14-17 s epochs against 9 s).
"""
from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from models.resnet import portable_network


@keras.saving.register_keras_serializable(package="resnet_shortcut")
class PadCropFlip(layers.Layer):
    """Training-time augmentation of He et al.: zero-pad ``pad`` pixels, random crop back, random h-flip.

    Each image gets its own offset (0..2*pad in each direction) and its own coin for the flip; at inference the
    layer passes images through unchanged. Seeded through a Keras ``SeedGenerator``.
    """

    def __init__(self, pad: int = 4, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.pad, self.seed = int(pad), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=None):
        if not training:
            return images
        batch, height, width, channels = ops.shape(images)
        padded_height, padded_width = height + 2 * self.pad, width + 2 * self.pad
        padded = ops.pad(images, [[0, 0], [self.pad, self.pad], [self.pad, self.pad], [0, 0]])
        offsets = keras.random.randint((batch, 2), 0, 2 * self.pad + 1, seed=self.seed_generator)
        rows = offsets[:, :1] + ops.arange(height)[None, :]
        cols = offsets[:, 1:] + ops.arange(width)[None, :]
        flip = keras.random.uniform((batch, 1), seed=self.seed_generator) < 0.5
        cols = ops.where(flip, ops.flip(cols, axis=1), cols)  # a flipped crop reads its columns backwards
        # one gather of whole pixels: flat index of (image, row, col) in the padded batch
        image = ops.arange(batch)[:, None, None]
        index = (image * padded_height + rows[:, :, None]) * padded_width + cols[:, None, :]
        pixels = ops.reshape(padded, (-1, channels))
        return ops.reshape(ops.take(pixels, ops.reshape(index, (-1,)), axis=0), (batch, height, width, channels))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "pad": self.pad, "seed": self.seed}


def batches(images: np.ndarray, labels: np.ndarray, batch_size: int, shuffle_seed: int | None = None,
            skip: int = 0):
    """A ``tf.data.Dataset`` of ``(uint8 images, labels)`` batches for ``fit`` / ``evaluate``.

    With ``shuffle_seed`` (training) it is endless and reshuffled on every pass, last partial batch included: give
    ``fit`` ``steps_per_epoch=math.ceil(len(labels) / batch_size)`` and every epoch is exactly one pass. Without
    it (validation, test) it is one pass in order. Batches are gathered by shuffled index, so the images are held
    once and never copied through a shuffle buffer. ``skip`` drops that many batches from the start (a resumed
    run: the stream goes on where the cut-short run stopped; only indices are shuffled, so skipping is cheap).
    """
    import tensorflow as tf

    with tf.device("/cpu:0"):  # tf.data runs on the host; on a GPU machine only the batches travel
        images, labels = tf.constant(images), tf.constant(labels)
    order = tf.data.Dataset.range(len(labels))
    if shuffle_seed is not None:
        order = order.shuffle(len(labels), seed=shuffle_seed, reshuffle_each_iteration=True)
    order = order.batch(batch_size)
    if shuffle_seed is not None:
        order = order.repeat()
    if skip:
        order = order.skip(skip)
    stream = order.map(lambda index: (tf.gather(images, index), tf.gather(labels, index)),
                       num_parallel_calls=2, deterministic=True)
    options = tf.data.Options()
    # as in Keras's own array adapter: no graph rewrites, which would serialise the captured images
    options.experimental_optimization.apply_default_optimizations = False
    # No autotuning thread: it sleeps up to a minute between rounds, and deleting the iterator waited for it
    # (the end of a 47 s run took 38 s more). A gather of one batch is cheap; two in flight keep the step fed.
    options.autotune.enabled = False
    return stream.prefetch(2).with_options(options)


def with_input_pipeline(network: keras.Model, mean: np.ndarray, std: np.ndarray, seed: int | None = None,
                        augment: bool = True) -> keras.Model:
    """``network`` behind uint8 input, per-channel normalisation (pixel units) and, in training, augmentation.

    Normalising before padding makes the padding the mean colour, as in He et al.'s Torch code.
    """
    inputs = keras.Input(network.input_shape[1:], dtype="uint8", name="pixels")
    x = layers.Normalization(mean=np.asarray(mean), variance=np.square(std), name="normalise")(inputs)
    if augment:
        x = PadCropFlip(4, seed=seed, name="augment")(x)
    return keras.Model(inputs, network(x), name=f"{network.name}_pipeline")


def deployable_model(model: keras.Model) -> keras.Model:
    """The inference network of a trained ``with_input_pipeline`` model: uint8 images in, normalisation, the
    network rebuilt from Keras's built-in layers (``models.resnet.portable_network``), float32 logits out; no
    augmentation layer, no optimizer. ``keras.saving.load_model`` reads it in a process that never imports this
    project."""
    network = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    normalise = model.get_layer("normalise")
    inputs = keras.Input(model.input_shape[1:], dtype="uint8", name="pixels")
    x = layers.Normalization(mean=np.asarray(normalise.mean).reshape(-1), variance=np.asarray(normalise.variance)
                             .reshape(-1), name="normalise", dtype="float32")(inputs)
    return keras.Model(inputs, portable_network(network)(x), name=network.name)


def save_deployable(source: str | Path, destination: str | Path) -> None:
    """Read the training model saved at ``source`` (a ``.keras`` file with its optimizer) and write its
    ``deployable_model`` to ``destination`` (``.keras``)."""
    deployable_model(keras.saving.load_model(source, compile=False)).save(destination)
