"""How many trials a worker should train at once (``--fuse auto`` on a GPU): a short measured probe.

Fusion pays where one trial leaves the device idle (a GPU running a small CIFAR ResNet launch-bound); on this
project's CPUs the step is compute-bound and K fused arms trained 1.0-1.3x the images/s of K runs in a row
(benchmarks/README.md), so the search does not probe there. The probe trains ``STEPS`` steps of one run, then of
K fused arms for each K in ``WIDTHS``, each twice (the first execution traces and compiles; the second is timed),
on the worker's own compiled models (``training.loop.lent_model``, ``training.fused.lent_fused``): the search's
later trials reuse them, so the compile is not thrown away when the probe picks a K it measured. It picks the K
with the highest aggregate images/s over one trial at a time, if that ratio is at least ``PAYS``; else 1.
"""
from __future__ import annotations

from typing import Sequence

from models.schedules import Schedule
from training import loop
from training.config import TrainConfig
from training.data import Dataset
from training.fused import fused_streams, lent_fused
from training.pipeline import batches

WIDTHS = (2, 4, 8)
STEPS = 30  # timed steps per candidate width: a few seconds of a GPU, after its compile
# a pruned arm is masked, not dropped, so it costs its share until its batch ends: with the rung pruner about half
# of a batch's arm-epochs train arms that will be pruned, so fusion must gain this much to be worth it
PAYS = 1.5


def measured_width(config: TrainConfig, data: Dataset, widths: Sequence[int] = WIDTHS, steps: int = STEPS,
                   pays: float = PAYS) -> tuple[int, dict[int, float]]:
    """(the width to train at, {K: aggregate images/s of K fused arms over one run's}) for ``config`` on ``data``;
    ``steps`` timed training steps each."""
    epochs = config.epochs_for(len(data.y_train))
    baseline = Schedule("constant", {"value": 1.0})
    with loop.lent_model(config, baseline, data, epochs) as (model, _):
        stream = batches(data.x_train, data.y_train, config.batch_size, shuffle_seed=config.seed)
        single = _images_per_second(model, stream, steps, config.batch_size)
    ratios = {}
    for width in widths:
        configs, schedules = [config] * width, [baseline] * width
        with lent_fused(configs, schedules, data, epochs) as (model, _):
            stream, _ = fused_streams(data, config.batch_size, [config.seed], [0] * width, 0)
            ratios[width] = width * _images_per_second(model, stream, steps, config.batch_size) / single
    paying = [width for width in widths if ratios[width] >= pays]
    return (max(paying, key=ratios.get) if paying else 1), ratios


def _images_per_second(model, stream, steps: int, batch_size: int) -> float:
    """One model's training images/s over ``steps`` steps, after as many untimed ones (tracing, compiling)."""
    timer = _Timer()
    model.fit(stream, steps_per_epoch=steps, epochs=2, shuffle=False, callbacks=[timer], verbose=0)
    return timer.steady_images_per_second(steps * batch_size)


class _Timer(loop.EpochTimer):
    def on_epoch_end(self, epoch, logs=None):
        self.end_epoch_timing()
