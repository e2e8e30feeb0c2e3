"""One training run with He et al.'s CIFAR recipe, as a plain function: config + schedule + data -> RunResult.

Recipe (He et al. 2015): SGD, momentum 0.9, batch 128, weight decay 1e-4 (every parameter, in the network),
learning rate 0.1 divided by 10 at 50 % and 75 % of the run, 64k iterations (about 182 epochs on 45k images).
``epochs`` shortens a run; the milestones scale along. Without ``epochs`` a run keeps the 64k iterations whatever
``subset`` and ``batch_size`` are (more passes over fewer images; a larger batch sees more images), and the
learning rate stays 0.1 at any batch size. Depth >= 110 warms up at 0.01 for the first 400 iterations, as He et
al. did.
Knows Keras, not Optuna: the search sees a run only through ``on_epoch`` and the returned record.
"""
from __future__ import annotations

import math
import time
import zlib
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from common.machine import cpu_info
from models.resnet import build_resnet, learned_values, schedule_factors
from models.schedules import Schedule
from training import reuse
from training.checkpoint import CURVES, EpochCheckpoint, run_key
from training.config import (FLOAT16_MAX, WARMUP_DEPTH, WARMUP_ITERATIONS, WARMUP_LR, EpochHook, TrainConfig,
                             auto_precision)
from training.data import Dataset
from training.pipeline import batches, with_input_pipeline

# Keras re-raises an error from inside ``fit`` (a callback's: the epoch hook reporting to a lost database) ``from
# None``, which drops its cause: the driver's error that says the connection was lost, so the run's fault would
# read as its own and never be retried (search.objective.environment_fault walks the causes)
keras.config.disable_traceback_filtering()

EVALUATION_BATCH = 500  # inference only: any size gives the same accuracy; larger is faster
# a run takes the process's compiled model for its graph, re-initialised for its seed (training.reuse); False:
# every run builds and traces its own, as before issue 29 (benchmarks.trial_overhead --no-reuse)
REUSE_COMPILED = True


@dataclass
class RunResult:
    """The plain record of one run. Accuracies are fractions in [0, 1]; times in seconds."""

    depth: int
    dataset: str
    schedule: dict[str, Any]
    seed: int
    precision: str
    epochs_planned: int
    epochs_run: int = 0
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    final_val_accuracy: float | None = None
    test_accuracy: float | None = None
    wall_seconds: float = 0.0
    images_per_second: float = 0.0  # training steps only, steady state (after the first, compiling epoch)
    diverged: bool = False
    diverged_reason: str | None = None
    stopped_early: bool = False  # the epoch hook asked to stop (a pruned trial)
    resumed_from_epoch: int | None = None  # epochs restored from a checkpoint of an earlier, cut-short attempt
    learned_values: list[float] | None = None  # learned / skipinit: the per-block scalars after training

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_precision(precision: str) -> tuple[str, bool]:
    """(Keras dtype policy, XLA on?) for a precision name: XLA on a GPU; ``auto`` by ``auto_precision``."""
    capability = gpu_compute_capability()
    if precision == "auto":
        precision = auto_precision(capability, cpu_info()["isa"] if capability is None else [])
    return precision, capability is not None


def gpu_compute_capability() -> tuple[int, int] | None:
    """CUDA compute capability (major, minor) of the first GPU the backend sees; None without a GPU."""
    if keras.config.backend() == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            return None
        return tuple(tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0)))
    if keras.config.backend() == "jax":
        import jax

        if jax.default_backend() != "gpu":
            return None
        major, _, minor = str(getattr(jax.devices()[0], "compute_capability", "0.0")).partition(".")
        return int(major), int(minor or 0)
    return None


def learning_rate_at(config: TrainConfig, total_steps: int, step: int) -> float:
    """The recipe's learning rate for SGD step ``step`` (1-based) of ``total_steps``: ``learning_rate``, /10 after
    50 % and again after 75 % of the steps; at depth >= 110 at most 0.01 for the first 400 steps (a warm-up that
    caps whatever the drops say, so a short run never goes back up to 0.1 inside it)."""
    drops = sum(step > boundary for boundary in _drops(total_steps))
    value = config.learning_rate / 10 ** drops
    if _warms_up(config, total_steps) and step <= WARMUP_ITERATIONS:
        value = min(value, WARMUP_LR)
    return value


def learning_rate_schedule(config: TrainConfig, total_steps: int):
    """``learning_rate_at`` as a Keras schedule: piecewise constant, each value paired with the step it starts
    after (Keras counts steps from 0: step s of ``learning_rate_at`` is optimizer iteration s - 1)."""
    changes = {*_drops(total_steps), *([WARMUP_ITERATIONS] if _warms_up(config, total_steps) else [])}
    boundaries = sorted(b for b in changes if b >= 1)
    values = [learning_rate_at(config, total_steps, step) for step in (1, *(b + 1 for b in boundaries))]
    return keras.optimizers.schedules.PiecewiseConstantDecay([b - 1 for b in boundaries], values)


def _drops(total_steps: int) -> list[int]:
    return [round(total_steps * 0.5), round(total_steps * 0.75)]


def _warms_up(config: TrainConfig, total_steps: int) -> bool:
    return config.depth >= WARMUP_DEPTH and total_steps > WARMUP_ITERATIONS


def steps_per_epoch(config: TrainConfig, data: Dataset) -> int:
    """Training steps in one pass over ``data``'s training images, the last partial batch included."""
    return math.ceil(len(data.y_train) / config.batch_size)


def compiled_model(config: TrainConfig, schedule: Schedule | None, data: Dataset,
                   epochs: int | None = None, variable_factors: bool = False) -> tuple[keras.Model, str]:
    """The network behind the input pipeline, compiled with the recipe's optimizer; and its dtype policy.

    Seeds Keras first, so the same seed gives the same initial weights and augmentation stream.
    ``variable_factors``: the shortcut factors are variables of the graph (``build_resnet``), for reuse.
    """
    policy, jit = resolve_precision(config.precision)
    keras.utils.set_random_seed(config.seed)
    previous_policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        network = build_resnet(config.depth, data.num_classes, schedule, variable_factors=variable_factors)
        model = with_input_pipeline(network, data.mean, data.std, seed=config.seed)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    total_steps = steps_per_epoch(config, data) * (epochs or config.epochs_for(len(data.y_train)))
    optimizer = keras.optimizers.SGD(learning_rate_schedule(config, total_steps), momentum=config.momentum)
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=jit, steps_per_execution=config.steps_per_execution)
    return model, policy


def reuse_key(config: TrainConfig, schedule: Schedule, data: Dataset, epochs: int) -> tuple:
    """What decides a run's traced graph, all but the seed and the factors: the key of ``training.reuse``."""
    policy, jit = resolve_precision(config.precision)
    _, learned = schedule_factors(config.depth, schedule)
    pixels = (tuple(data.x_train.shape[1:]), str(data.x_train.dtype), data.num_classes,
              np.asarray(data.mean, "float64").tobytes(), np.asarray(data.std, "float64").tobytes())
    return (config.depth, pixels, config.batch_size, policy, jit, config.steps_per_execution, learned,
            steps_per_epoch(config, data) * epochs, config.learning_rate, config.momentum)


@contextmanager
def lent_model(config: TrainConfig, schedule: Schedule, data: Dataset, epochs: int):
    """(model, policy) for one run: the process's compiled model for its graph, in the state a fresh
    ``compiled_model`` gives it (``training.reuse``), or with ``REUSE_COMPILED`` off a fresh one."""
    if not REUSE_COMPILED:
        yield compiled_model(config, schedule, data, epochs)
        return
    factors, _ = schedule_factors(config.depth, schedule)
    build = lambda: compiled_model(config, schedule, data, epochs, variable_factors=True)[0]  # noqa: E731
    with reuse.lend(reuse_key(config, schedule, data, epochs), build, config.seed, factors) as model:
        yield model, resolve_precision(config.precision)[0]


def run(config: TrainConfig, schedule: Schedule | None, data: Dataset, on_epoch: EpochHook | None = None,
        test: bool = False, verbose: int = 0, checkpoint_dir: str | Path | None = None,
        save_model: str | Path | None = None, tensorboard: str | Path | None = None) -> RunResult:
    """Train a ResNet of ``config.depth`` with ``schedule`` on ``data``; validate every epoch.

    ``on_epoch(epoch, val_accuracy)`` is called after each epoch with validation data; when it returns True the
    run stops there (``stopped_early``), and an exception it raises propagates. A NaN or infinite loss ends the run with
    ``diverged=True`` instead of raising; so does a run that learned and ends at chance level with a finite loss
    (``mark_collapse``: its reason starts "collapsed"). ``test=True`` also measures test accuracy at the end.
    The network is the process's compiled one for this graph when there is one (``lent_model``, ``REUSE_COMPILED``),
    re-initialised for ``config.seed``: the same numbers as a fresh build, without tracing again.

    With ``checkpoint_dir`` (the run's own folder) the run saves its whole state there after every epoch
    (``training.checkpoint``) and first resumes from a state an earlier, cut-short attempt of the same run left:
    the restored epochs are replayed through ``on_epoch``, training goes on from the next one on the same data
    stream, and the result is that of an uninterrupted run up to floating-point order. The state stays when the
    run ends: the caller removes it once the result is recorded (a kill in between then costs nothing).

    ``tensorboard``: a run folder for TensorBoard (Keras's callback): loss, accuracy, validation loss and
    accuracy, and the learning rate, per epoch.

    ``save_model``: where a run that trained to its end (neither stopped nor diverged) saves its model, a
    ``.keras`` file of the network behind its input pipeline (uint8 images in, logits out), with the schedule in
    its config and the optimizer's state; ``keras.saving.load_model`` reads it once ``training.loop`` is imported.
    """
    schedule = schedule or Schedule("constant", {"value": 1.0})
    started = time.perf_counter()
    epochs = config.epochs_for(len(data.y_train))
    with lent_model(config, schedule, data, epochs) as (model, policy):
        result = RunResult(config.depth, data.name, schedule.to_dict(), config.seed, policy, epochs)
        checkpoint = None
        if checkpoint_dir is not None:
            key = run_key({**asdict(config), "precision": policy}, schedule.to_dict(), data_fingerprint(data))
            checkpoint = EpochCheckpoint(checkpoint_dir, key)
        recorder = _Recorder(result, on_epoch, len(data.y_train), policy, checkpoint)
        done = recorder.resume(model) if checkpoint is not None else 0
        has_validation = len(data.y_val) > 0
        if done < epochs and not result.stopped_early:
            steps = steps_per_epoch(config, data)
            model.fit(batches(data.x_train, data.y_train, config.batch_size, shuffle_seed=config.seed,
                              skip=done * steps),
                      steps_per_epoch=steps, epochs=epochs, initial_epoch=done,
                      shuffle=False,  # the stream reshuffles itself every pass
                      validation_data=batches(data.x_val, data.y_val, EVALUATION_BATCH) if has_validation else None,
                      callbacks=[recorder, *_tensorboard(tensorboard)], verbose=verbose)
        if not (result.diverged or result.stopped_early) and result.epochs_run >= epochs:
            mark_collapse(result, data)
        if test and not result.diverged:
            test_batches = batches(data.x_test, data.y_test, EVALUATION_BATCH)
            result.test_accuracy = float(model.evaluate(test_batches, verbose=0, return_dict=True)["accuracy"])
        result.learned_values = learned_values(model)
        if save_model is not None and not (result.diverged or result.stopped_early):
            model.save(save_model)
        result.wall_seconds = time.perf_counter() - started
        result.final_val_accuracy = result.val_accuracy[-1] if result.val_accuracy and not result.diverged else None
        result.images_per_second = recorder.images_per_second()
    return result


COLLAPSE_QUANTILE = 0.9999  # a guess's accuracy stays below the chance floor but for 1 run in 10 000


def chance_floor(data: Dataset) -> float:
    """The validation accuracy no better than a guess: the larger of the majority class's share of the validation
    labels (a network that predicts one class) and the ``COLLAPSE_QUANTILE`` binomial quantile of guessing one of
    ``num_classes`` at random over that many images (CIFAR-10's 5000: 11.6 %; 180 digits: 18.9 %)."""
    from scipy import stats  # the training loop needs SciPy only here

    count = len(data.y_val)
    if not count:
        return 0.0
    majority = float(np.bincount(np.asarray(data.y_val).astype(int).ravel()).max() / count)
    guess = float(stats.binom.ppf(COLLAPSE_QUANTILE, count, 1 / max(data.num_classes, 1)) / count)
    return max(majority, guess)


def mark_collapse(result: RunResult, data: Dataset) -> None:
    """A run that learned (an epoch's validation accuracy above ``chance_floor``) and ends at or below it collapsed
    with a finite loss: marked diverged, with a reason starting "collapsed", so that every consumer of a diverged
    run (the search's pruning and ranking, the confirm stage's verdict, evaluate) treats it as one. A run that
    never rose above the floor (a budget too short to learn) is left as it is."""
    if len(result.val_accuracy) < 2:
        return
    floor, final = chance_floor(data), result.val_accuracy[-1]
    best = max(result.val_accuracy[:-1])
    if final <= floor < best:
        epoch = result.val_accuracy.index(best) + 1
        result.diverged = True
        result.diverged_reason = (f"collapsed: validation accuracy fell from {best:.4f} (epoch {epoch}) to "
                                  f"{final:.4f} at the end, at chance level (at or below {floor:.4f}: the majority "
                                  f"class's share of the {len(data.y_val)} validation images, or the "
                                  f"{COLLAPSE_QUANTILE:.2%} quantile of a random guess among {data.num_classes} "
                                  f"classes) with a finite loss")


def _tensorboard(folder: str | Path | None) -> list[keras.callbacks.Callback]:
    if folder is None:
        return []
    return [keras.callbacks.TensorBoard(str(folder), write_graph=False, update_freq="epoch", profile_batch=0)]


def data_fingerprint(data: Dataset) -> list:
    """What identifies a data set's splits for a checkpoint: name, sizes and a checksum of the labels' order."""
    return [data.summary(), *(zlib.crc32(labels.tobytes()) for labels in (data.y_train, data.y_val))]


class EpochTimer(keras.callbacks.Callback):
    """Keras callback: each epoch's training seconds (``train_seconds``), up to its last step (validation is not
    training); a subclass calls ``end_epoch_timing`` first thing in its ``on_epoch_end``."""

    def __init__(self):
        super().__init__()
        self.train_seconds: list[float] = []
        self._epoch_start = self._last_step_end = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self._last_step_end = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self._last_step_end = time.perf_counter()

    def end_epoch_timing(self) -> None:
        self.train_seconds.append(self._last_step_end - self._epoch_start)

    def steady_images_per_second(self, images_per_epoch: int) -> float:
        """Training images a second over the epochs after the first (which pays for tracing and compiling)."""
        steady = self.train_seconds[1:] or self.train_seconds
        return images_per_epoch * len(steady) / sum(steady) if steady and sum(steady) > 0 else 0.0


class _Recorder(EpochTimer):
    """Keras callback: per-epoch curves, training-only timing, divergence check, and the caller's hook."""

    def __init__(self, result: RunResult, on_epoch: EpochHook | None, images_per_epoch: int, policy: str,
                 checkpoint: EpochCheckpoint | None = None):
        super().__init__()
        self.result, self.on_epoch, self.images_per_epoch, self.policy = result, on_epoch, images_per_epoch, policy
        self.checkpoint = checkpoint

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.end_epoch_timing()
        loss = float(logs.get("loss", math.nan))
        self.result.epochs_run = epoch + 1
        self.result.train_loss.append(loss)
        self.result.train_accuracy.append(float(logs.get("accuracy", math.nan)))
        # Checked once an epoch, not every batch like keras.callbacks.TerminateOnNaN: a per-batch check copies
        # the loss to the host every step, and a NaN stays NaN in the epoch's running mean anyway.
        if not math.isfinite(loss):
            self.result.diverged = True
            self.result.diverged_reason = f"training loss became {loss} in epoch {epoch + 1}" + self._range_note()
            self.model.stop_training = True
            return
        if "val_accuracy" in logs:
            self.result.val_accuracy.append(float(logs["val_accuracy"]))
        if self.checkpoint is not None:  # before the hook, which may raise an interrupt
            self.checkpoint.save(self.model, epoch + 1, {name: getattr(self.result, name) for name in CURVES})
        if "val_accuracy" in logs and self._stop_requested(epoch + 1, self.result.val_accuracy[-1]):
            self.model.stop_training = True

    def resume(self, model: keras.Model) -> int:
        """Restore the checkpoint into ``model`` and replay its epochs through the hook; the epochs restored."""
        self.set_model(model)
        record = self.checkpoint.restore(model)
        if record is None:
            return 0
        done = record["epochs"]
        for name in CURVES:
            setattr(self.result, name, list(record[name]))
        self.result.epochs_run = self.result.resumed_from_epoch = done
        for epoch, accuracy in enumerate(self.result.val_accuracy, start=1):
            if self._stop_requested(epoch, accuracy):  # the pruner may now stop it where it had let it go on
                self.result.epochs_run = epoch
                for name in CURVES:
                    del getattr(self.result, name)[epoch:]
                break
        return done

    def _stop_requested(self, epoch: int, accuracy: float) -> bool:
        if self.on_epoch is not None and self.on_epoch(epoch, accuracy):
            self.result.stopped_early = True
        return self.result.stopped_early

    def _range_note(self) -> str:
        """Under float16 a NaN loss is more often the format's range than the schedule: say so."""
        if "float16" not in self.policy or "bfloat16" in self.policy:
            return ""
        return (f" under {self.policy}: activations past float16's largest value {FLOAT16_MAX:g} overflow "
                f"(shortcut factors above 1 compound over the blocks), so this may be the precision's limit rather "
                f"than the schedule's; rerun with --precision mixed_bfloat16 or float32 to tell")

    def images_per_second(self) -> float:
        return self.steady_images_per_second(self.images_per_epoch)
