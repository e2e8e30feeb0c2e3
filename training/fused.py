"""K training runs at once as one fused network (``models.fused``): ``run_fused(configs, schedules, data) ->
[RunResult]``, one record per arm as if it had been trained alone by ``training.loop.run``.

The recipe is ``training.loop``'s: SGD with momentum and its learning-rate schedule (shared: the arms differ only
in seed and schedule), the uint8 input stream ``batches`` with normalisation and augmentation inside the step,
validation every epoch. Arms that share a seed share one data stream and one augmentation (the search's trials);
arms with their own seed each get their own stream and augmentation, stacked as inputs of the fused model (the
confirm stage's seeds). Arm k starts from the initial weights ``compiled_model`` gives a single run with its seed.

Per arm, per epoch: its training loss and accuracy, its validation accuracy, then ``on_epoch(arm, epoch,
accuracy)``; True stops that arm (``stopped_early``). A NaN or infinite loss marks an arm diverged. Either way the
arm is masked (its loss leaves the sum through ``where``: its NaN never reaches another arm) and its weights at that
epoch are kept aside and put back at the end, so its record (test accuracy, learned values, ``final_weights``) is
that of its single run. The run ends when no arm is left. Masked, not dropped (yet): dropping means a fused graph
of the arms left, traced (compiled by XLA on a GPU) before the next step; a masked arm costs its share of every step
left. Measured on the 2-core CPU (``benchmarks.fused_speed``, 2026-12-03): a trace costs 1.4-20 s (K and depth), a
masked arm what training it alone costs (about 4 ms an image for ResNet-32): they break even after 1-10 epochs of
512-1293 images, well under one epoch of CIFAR's 45k-image split. So dropping pays for long runs, masking only for
the tiny trials; but fusion itself does not pay on this CPU (same figures), and on a GPU the masked arm's share and
the XLA compile are ``benchmarks.gpu_check``'s to measure. The follow-up: drop when the epochs left times the arm's
measured epoch share exceed the measured trace time.

A process keeps its compiled fused models (``lent_fused``, as ``training.reuse`` keeps single ones): a fused run on a
graph traced before rebuilds each arm's network under its seed (no tracing) and copies its variables in.

``checkpoint_dir``: the whole fused state (every arm, the mask, the optimizer) and every arm's record after each
epoch, in one ``training.checkpoint.EpochCheckpoint``; a killed run resumes there, replays the restored epochs
through ``on_epoch``, and goes on on the same data streams. ``arm_checkpoints``: per arm, its single run's own
checkpoint (``training.arm_state``), which ``training.loop.run`` alone resumes.
"""
from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np
from keras import layers

from common.errors import UsageError
from models.fused import FusedArms, arm_name, build_arms, seed_groups
from models.resnet import learned_values
from models.schedules import Schedule
from training import arm_state, loop, reuse
from training.checkpoint import CURVES, EpochCheckpoint, run_key
from training.config import TrainConfig
from training.data import Dataset
from training.pipeline import PadCropFlip, batches, with_input_pipeline

__all__ = ["ArmHook", "REUSE_FUSED", "clear", "fused_model", "fused_streams", "lent_fused", "run_fused"]

ArmHook = Callable[[int, int, float], bool | None]  # (arm 0.., epoch 1.., validation accuracy) -> True to stop it
_STATUS = ("diverged", "diverged_reason", "stopped_early", "epochs_run")
# run_fused takes the process's compiled fused model for its graph, re-initialised (``lent_fused``), as
# training.loop does for single runs; False: every fused run builds and traces its own
REUSE_FUSED = True
CACHE_SIZE = 2  # compiled fused models a process keeps (least recently used goes first)
_cache: OrderedDict = OrderedDict()
_lock = threading.Lock()


def _configs(configs: TrainConfig | Sequence[TrainConfig], count: int) -> list[TrainConfig]:
    configs = [configs] * count if isinstance(configs, TrainConfig) else list(configs)
    if len(configs) != count:
        raise UsageError(f"fused arms: {len(configs)} configurations for {count} schedules")
    if any(replace(config, seed=0) != replace(configs[0], seed=0) for config in configs):
        raise UsageError("fused arms: the arms' configurations may differ only in their seed (one shared recipe)")
    return configs


def fused_model(configs: Sequence[TrainConfig], schedules: Sequence[Schedule], data: Dataset,
                epochs: int, jit_compile: bool | None = None, variable_factors: bool = False) -> tuple[FusedArms, str]:
    """The fused arms behind one input pipeline per seed (normalisation, augmentation seeded as a single run's),
    compiled with the recipe's optimizer; and the dtype policy. ``jit_compile``: XLA on or off (default: as
    ``training.loop`` decides, on with a GPU); ``variable_factors``: the arms' factors are variables (reuse)."""
    config = configs[0]
    policy, jit = loop.resolve_precision(config.precision)
    jit = jit if jit_compile is None else jit_compile
    if policy == "mixed_float16":  # the loss scale skips every arm's step when one arm's gradient overflows
        raise UsageError("fused arms: mixed_float16 is not supported (its loss scale couples the arms); use float32 "
                         "or mixed_bfloat16")
    distinct, groups = seed_groups([c.seed for c in configs])
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        arms = build_arms(config.depth, data.num_classes, schedules, [c.seed for c in configs],
                          tuple(data.x_train.shape[1:]), variable_factors=variable_factors)
        normalise = layers.Normalization(mean=np.asarray(data.mean), variance=np.square(data.std), name="normalise")
        augment = [PadCropFlip(4, seed=seed, name=f"augment{group}") for group, seed in enumerate(distinct)]
        model = FusedArms.of(arms, groups, lambda group, x: augment[group](normalise(x)))
    finally:
        keras.config.set_dtype_policy(previous)
    total_steps = loop.steps_per_epoch(config, data) * epochs
    optimizer = keras.optimizers.SGD(loop.learning_rate_schedule(config, total_steps), momentum=config.momentum)
    model.compile(optimizer, metrics=[["accuracy"] for _ in arms], jit_compile=jit,
                  steps_per_execution=config.steps_per_execution)
    return model, policy


def fused_streams(data: Dataset, batch_size: int, seeds: Sequence[int], groups: Sequence[int], skip: int):
    """Training: one shuffled stream per seed group, zipped; validation: one ordered pass for every arm."""
    import tensorflow as tf  # tf.data, as training.pipeline.batches uses it

    trains = []
    for seed in seeds:  # tf.data's shuffle reads TensorFlow's global seed too, which a single run's seeding set
        reuse.seed_keeping_kernels(seed)
        trains.append(batches(data.x_train, data.y_train, batch_size, shuffle_seed=seed, skip=skip))
    train = tf.data.Dataset.zip(tuple(trains)).map(
        lambda *pairs: (tuple(pair[0] for pair in pairs), tuple(pairs[group][1] for group in groups)))
    return train, _ordered(data.x_val, data.y_val, len(seeds), groups)


def _ordered(images: np.ndarray, labels: np.ndarray, inputs: int, groups: Sequence[int]):
    """One ordered pass (validation, test), the same images on every input and the same labels for every arm."""
    return batches(images, labels, loop.EVALUATION_BATCH).map(
        lambda x, y: (tuple(x for _ in range(inputs)), tuple(y for _ in groups)))


class _Entry:
    def __init__(self, model: FusedArms):
        self.model, self.busy = model, True
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        self.optimizer_start = [np.array(variable.numpy()) for variable in model.optimizer.variables]


def clear() -> None:
    """Forget every compiled fused model of this process."""
    with _lock:
        _cache.clear()
    arm_state.clear()


@contextmanager
def lent_fused(configs: Sequence[TrainConfig], schedules: Sequence[Schedule], data: Dataset, epochs: int,
               jit_compile: bool | None = None):
    """(model, policy): the process's compiled fused model for this graph (``training.loop.reuse_key`` of every
    arm, the seed groups), put into the state a fresh ``fused_model`` gives it, or with ``REUSE_FUSED`` off (or
    the cached one busy) a fresh one. Re-initialising builds each arm's network again under its seed (no
    tracing: about 0.15 s a ResNet-8, 0.35 s a ResNet-32 on 2 CPU cores) and copies its variables in."""
    _, groups = seed_groups([c.seed for c in configs])
    key = (tuple(loop.reuse_key(c, s, data, epochs) for c, s in zip(configs, schedules)), tuple(groups), jit_compile)
    with _lock:
        entry = _cache.get(key) if REUSE_FUSED else None
        lent = entry is not None and not entry.busy
        if lent:
            entry.busy = True
            _cache.move_to_end(key)
    if lent:
        try:
            _reinitialise(entry, configs, schedules, data)
        except BaseException:
            with _lock:
                _cache.pop(key, None)
            raise
    else:
        entry = _Entry(fused_model(configs, schedules, data, epochs, jit_compile, variable_factors=True)[0])
        with _lock:
            if REUSE_FUSED and key not in _cache:
                _cache[key] = entry
                while len(_cache) > CACHE_SIZE:
                    _cache.popitem(last=False)
    try:
        yield entry.model, loop.resolve_precision(configs[0].precision)[0]
    finally:
        entry.busy = False


def _reinitialise(entry: _Entry, configs: Sequence[TrainConfig], schedules: Sequence[Schedule],
                  data: Dataset) -> None:
    model, config = entry.model, configs[0]
    distinct, _ = seed_groups([c.seed for c in configs])
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(loop.resolve_precision(config.precision)[0])
    try:  # the very draws of a fresh build, Python's generator left where a build leaves it
        fresh = build_arms(config.depth, data.num_classes, schedules, [c.seed for c in configs],
                           tuple(data.x_train.shape[1:]), variable_factors=True, seed_with=reuse.seed_keeping_kernels)
    finally:
        keras.config.set_dtype_policy(previous)
    for arm, new in zip(model.arms(), fresh):
        if [v.shape for v in arm.weights] != [v.shape for v in new.weights]:
            raise RuntimeError("fused reuse: a cached arm's variables differ from a fresh build's")
        for variable, value in zip(arm.weights, new.weights):
            variable.assign(value)
    for group, seed in enumerate(distinct):
        augment = model.get_layer(f"augment{group}")
        augment.seed = seed
        augment.seed_generator.state.assign(keras.random.SeedGenerator(seed).state.value)
    model.active.assign(np.ones(model.arm_count, "float32"))
    for variable, value in zip(model.optimizer.variables, entry.optimizer_start):
        variable.assign(value)


def run_fused(configs: TrainConfig | Sequence[TrainConfig], schedules: Sequence[Schedule | None], data: Dataset,
              on_epoch: ArmHook | None = None, test: bool = False, verbose: int = 0,
              checkpoint_dir: str | Path | None = None, final_weights: list | None = None,
              callbacks: Sequence[keras.callbacks.Callback] = (),
              save_models: Sequence[str | Path | None] | None = None,
              arm_checkpoints: Sequence[str | Path | None] | None = None,
              arm_boards: Sequence[str | Path | None] | None = None) -> list[loop.RunResult]:
    """Train one arm per schedule at once (``configs``: one per arm, or one for all: equal but for the seed);
    one ``RunResult`` per arm, as ``training.loop.run`` would have returned for it alone.

    ``final_weights``: a list to receive, per arm, its network's weights (NumPy, ``network.weights`` order) at its
    end. ``wall_seconds`` is the fused run's; ``images_per_second`` each arm's own images over the fused epochs'
    steady training time (the aggregate is K times that). ``callbacks``: more Keras callbacks for ``fit``.
    ``save_models``: per arm, where an arm that trained to its end saves its network behind its input pipeline
    (a ``.keras`` file as ``training.loop.run``'s ``save_model``, without the optimizer's state), or None.
    ``arm_checkpoints``: per arm, a folder or None: after every epoch the arm trains to its end (diverged: not that
    epoch), before ``on_epoch``, its state as ``training.loop.run(configs[k], schedules[k], data,
    checkpoint_dir=folder)`` saves it, so that the arm retried alone there resumes where this run left it.
    ``arm_boards``: per arm, a TensorBoard run folder or None: the log its single run writes there
    (``training.arm_state.ArmBoards``).
    """
    schedules = [schedule or Schedule("constant", {"value": 1.0}) for schedule in schedules]
    configs = _configs(configs, len(schedules))
    config, started = configs[0], time.perf_counter()
    epochs = config.epochs_for(len(data.y_train))
    for name, folders in (("checkpoint", arm_checkpoints), ("TensorBoard", arm_boards)):
        if folders is not None and len(folders) != len(schedules):
            raise UsageError(f"fused arms: {len(folders)} arm {name} folders for {len(schedules)} arms")
    boards = [arm_state.ArmBoards(arm_boards)] if arm_boards is not None and any(arm_boards) else []
    with lent_fused(configs, schedules, data, epochs) as (model, policy):
        results = [loop.RunResult(config.depth, data.name, schedule.to_dict(), c.seed, policy, epochs)
                   for c, schedule in zip(configs, schedules)]
        checkpoint = None
        if checkpoint_dir is not None:
            key = run_key("fused", [{**asdict(c), "precision": policy} for c in configs],
                          [s.to_dict() for s in schedules], loop.data_fingerprint(data))
            checkpoint = EpochCheckpoint(checkpoint_dir, key)
        distinct, groups = seed_groups([c.seed for c in configs])
        singles = None  # before the streams: a template's build seeds Keras
        if arm_checkpoints is not None and any(folder is not None for folder in arm_checkpoints):
            singles = arm_state.ArmCheckpoints(model, configs, schedules, data, epochs, policy, groups, arm_checkpoints)
        recorder = _FusedRecorder(results, on_epoch, len(data.y_train), checkpoint, singles)
        done = recorder.resume(model) if checkpoint is not None else 0
        if done < epochs and recorder.any_active():
            steps = loop.steps_per_epoch(config, data)
            train, validation = fused_streams(data, config.batch_size, distinct, groups, done * steps)
            model.fit(train, steps_per_epoch=steps, epochs=epochs, initial_epoch=done, shuffle=False,
                      validation_data=validation if len(data.y_val) else None, callbacks=[recorder, *boards, *callbacks],
                      verbose=verbose)
        recorder.restore_kept()
        networks = model.arms()
        for arm, result in enumerate(results):
            if not (result.diverged or result.stopped_early) and result.epochs_run >= epochs:
                loop.mark_collapse(result, data)  # training.loop's rule for a collapsed run
        if test:
            stream = _ordered(data.x_test, data.y_test, len(distinct), groups)
            accuracy = model.evaluate(stream, verbose=0, return_dict=True)
            for arm, result in enumerate(results):
                if not result.diverged:
                    name = "accuracy" if len(results) == 1 else f"{arm_name(arm)}_accuracy"
                    result.test_accuracy = float(accuracy[name])
        for arm, result in enumerate(results):
            result.learned_values = learned_values(networks[arm])
            result.wall_seconds = time.perf_counter() - started
            result.final_val_accuracy = result.val_accuracy[-1] if result.val_accuracy and not result.diverged else None
            result.images_per_second = recorder.images_per_second()
            path = save_models[arm] if save_models is not None else None
            if path is not None and not (result.diverged or result.stopped_early):
                with_input_pipeline(networks[arm], data.mean, data.std, seed=configs[arm].seed).save(path)
            if final_weights is not None:
                final_weights.append([np.array(keras.ops.convert_to_numpy(w)) for w in networks[arm].weights
                                      if not w.path.endswith("/factor")])  # the factors: schedule, not weights
        return results


class _FusedRecorder(loop.EpochTimer):
    """Per arm: curves, divergence, the hook, masking and the weights kept at its end; training-only timing;
    the fused checkpoint."""

    def __init__(self, results: list[loop.RunResult], on_epoch: ArmHook | None, images_per_epoch: int,
                 checkpoint: EpochCheckpoint | None, singles: arm_state.ArmCheckpoints | None = None):
        super().__init__()
        self.results, self.on_epoch, self.images_per_epoch = results, on_epoch, images_per_epoch
        self.checkpoint, self.singles = checkpoint, singles
        self.kept: dict[int, list[np.ndarray]] = {}

    def any_active(self) -> bool:
        return any(not (r.diverged or r.stopped_early) for r in self.results)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.end_epoch_timing()
        ending = []
        for arm, result in enumerate(self.results):
            if result.diverged or result.stopped_early:
                continue
            name = arm_name(arm)
            accuracy = "accuracy" if len(self.results) == 1 else f"{name}_accuracy"  # one output: not prefixed
            loss = float(logs.get(f"{name}_loss", math.nan))
            result.epochs_run = epoch + 1
            result.train_loss.append(loss)
            result.train_accuracy.append(float(logs.get(accuracy, math.nan)))
            if not math.isfinite(loss):
                result.diverged = True
                result.diverged_reason = f"training loss became {loss} in epoch {epoch + 1}"
                ending.append(arm)
            elif f"val_{accuracy}" in logs:
                result.val_accuracy.append(float(logs[f"val_{accuracy}"]))
        for arm in ending:
            self._end(arm)
        for arm, result in enumerate(self.results if self.singles is not None else ()):
            if not (result.diverged or result.stopped_early):  # before the hook, as training.loop's _Recorder
                self.singles.save(arm, epoch + 1, {name: getattr(result, name) for name in CURVES})
        if self.checkpoint is not None:  # before the hook, which may raise an interrupt
            self._save_kept()  # first: an arm's kept weights never change, the state names those it holds
            self.checkpoint.save(self.model, epoch + 1, {"arms": [self._record(r) for r in self.results],
                                                         "kept": sorted(self.kept)})
        for arm, result in enumerate(self.results):
            if not (result.diverged or result.stopped_early) and len(result.val_accuracy) == epoch + 1 \
                    and self._stop_requested(arm, epoch + 1, result.val_accuracy[-1]):
                self._end(arm)
        if not self.any_active():
            self.model.stop_training = True

    def _end(self, arm: int) -> None:
        """Mask the arm and keep its weights of this epoch (training goes on for the others)."""
        self.model.set_active(arm, False)
        self.kept[arm] = [np.array(keras.ops.convert_to_numpy(w)) for w in self.model.arms()[arm].weights]

    def restore_kept(self) -> None:
        for arm, weights in self.kept.items():
            for variable, value in zip(self.model.arms()[arm].weights, weights):
                variable.assign(value)

    def _stop_requested(self, arm: int, epoch: int, accuracy: float) -> bool:
        if self.on_epoch is not None and self.on_epoch(arm, epoch, accuracy):
            self.results[arm].stopped_early = True
        return self.results[arm].stopped_early

    @staticmethod
    def _record(result: loop.RunResult) -> dict:
        return {name: getattr(result, name) for name in (*CURVES, *_STATUS)}

    def _kept_path(self) -> Path:
        return self.checkpoint.folder / "kept.npz"

    def _save_kept(self) -> None:
        if self.kept:
            arrays = {f"a{arm}_{i}": w for arm, weights in self.kept.items() for i, w in enumerate(weights)}
            self.checkpoint.folder.mkdir(parents=True, exist_ok=True)
            partial = self._kept_path().with_suffix(".tmp.npz")
            with open(partial, "wb") as file:  # whole and on disk before it replaces the previous one
                np.savez(file, **arrays)
                file.flush()
                os.fsync(file.fileno())
            partial.replace(self._kept_path())

    def resume(self, model: FusedArms) -> int:
        """Restore the checkpoint into ``model``, replay its epochs through the hook; the epochs restored."""
        self.set_model(model)
        record = self.checkpoint.restore(model)
        if record is None:
            return 0
        done = record["epochs"]
        if record["kept"]:
            with np.load(self._kept_path()) as saved:
                for arm in record["kept"]:
                    count = len(model.arms()[arm].weights)
                    self.kept[arm] = [saved[f"a{arm}_{i}"] for i in range(count)]
        for arm, (result, saved) in enumerate(zip(self.results, record["arms"])):
            for name in (*CURVES, *_STATUS):
                setattr(result, name, list(saved[name]) if name in CURVES else saved[name])
            result.resumed_from_epoch = done
            if result.diverged:
                continue
            stopped, result.stopped_early = result.stopped_early, False
            for epoch, accuracy in enumerate(list(result.val_accuracy), start=1):
                if self._stop_requested(arm, epoch, accuracy):  # the pruner may now stop it earlier
                    result.epochs_run = epoch
                    for name in CURVES:
                        del getattr(result, name)[epoch:]
                    break
            result.stopped_early = result.stopped_early or stopped
            if result.stopped_early and arm not in self.kept:
                self._end(arm)
        return done

    def images_per_second(self) -> float:
        return self.steady_images_per_second(self.images_per_epoch)
