"""K arms of a search trained as one Keras network (issue 29, part 2): horizontally fused training.

Each arm is exactly the network ``models.resnet.build_resnet(depth, num_classes, schedule_k)`` builds, with its
own weights, its own BatchNorm and its own shortcut factors; ``build_arms`` draws arm k's initial weights as a
fresh build right after ``keras.utils.set_random_seed(seed_k)`` does (``training.loop.compiled_model``'s order),
so arm k starts where a single run with seed k starts. ``FusedArms`` puts the K arms side by side in one functional
model: arms that share a seed share one input (the search's case: same data order and augmentation), arms with
their own seed read their own input (the confirm stage's case). Its loss is the sum of the arms' losses, each the
single network's loss (mean cross-entropy plus the arm's own weight decay), so the gradient of arm k's weights is
exactly that of its single run: nothing but the scalar sum crosses between arms.

Why K sub-networks in one graph, not grouped convolutions over a stacked channel axis nor ops over a stacked arm
axis: (1) equivalence by construction: arm k runs the very kernels, shapes and reduction order of its single run,
so a fused arm equals its separate run bitwise on this CPU (tests/test_fused.py; a grouped convolution computes with
other kernels and could only match to floating-point order); (2) measured here (TF 2.21 with oneDNN, 2-core Xeon):
one grouped 3x3 convolution for K = 4 arms of 32 channels (batch 128, 16x16) took 1423 ms forward and backward,
the four arms' separate convolutions 15.6 ms (the grouped gradient falls back to a generic kernel), and Keras 3 has
no per-arm batched convolution for a stacked arm axis; (3) what fusion saves is per-step host work (Python, the
executor's dispatch, tf.data), which one graph of K sub-networks saves as well, and the executor may run the arms'
independent ops at once. On this CPU there is little of it to save: the step is compute-bound (ResNet-8 on
digits trained 790-1040 images/s at batch 32 and 920 at batch 128, one run alone), and K fused arms trained
0.84-1.18x the images/s of K runs in a row (``benchmarks.fused_speed``). On a GPU, XLA compiles the same graph;
whether grouped kernels would beat it there is ``benchmarks.gpu_check``'s question (part 4 measures this model).

Masking: ``active`` is a non-trainable vector (1 per arm); an arm whose entry is 0 adds ``where(active, loss, 0)``
= exactly 0 to the total, never 0 * its loss (a diverged arm's loss is NaN, and 0 * NaN = NaN). Its own gradient
may then be NaN, but only its own weights read it. Keras 3 API only.
"""
from __future__ import annotations

from typing import Callable, Sequence

import keras
from keras import ops

from common.errors import UsageError
from models.resnet import build_resnet, schedule_factors
from models.schedules import Schedule

__all__ = ["FusedArms", "build_arms", "arm_name", "seed_groups"]


def arm_name(arm: int) -> str:
    """The name of arm ``arm``'s network inside the fused model (and the prefix of its logged metrics)."""
    return f"arm{arm}"


def seed_groups(seeds: Sequence[int]) -> tuple[list[int], list[int]]:
    """(the distinct seeds in order of first appearance, the group index of each arm): arms of one seed share one
    input stream."""
    distinct = list(dict.fromkeys(int(seed) for seed in seeds))
    return distinct, [distinct.index(int(seed)) for seed in seeds]


def build_arms(depth: int, num_classes: int, schedules: Sequence[Schedule | Sequence[float] | None],
               seeds: Sequence[int], input_shape: tuple[int, int, int] = (32, 32, 3), variable_factors: bool = False,
               seed_with: Callable[[int], None] = keras.utils.set_random_seed) -> list[keras.Model]:
    """One ``build_resnet`` network per arm, named ``arm_name(k)``, built under the current dtype policy right
    after ``seed_with(seeds[k])`` (``keras.utils.set_random_seed``): the initial weights of a single run with that
    seed. ``variable_factors``: the shortcut factors are variables (``build_resnet``; same initial weights)."""
    if len(schedules) != len(seeds) or not seeds:
        raise UsageError(f"fused arms: one seed per schedule, got {len(seeds)} seeds for {len(schedules)} schedules")
    arms = []
    for arm, (schedule, seed) in enumerate(zip(schedules, seeds)):
        schedule_factors(depth, schedule)  # checks the factors (UsageError)
        seed_with(int(seed))
        arms.append(build_resnet(depth, num_classes, schedule, input_shape=input_shape, name=arm_name(arm),
                                 variable_factors=variable_factors))
    return arms


def tree_first(value):
    """The one element of a one-element list or tuple, else ``value`` itself."""
    return value[0] if isinstance(value, (list, tuple)) and len(value) == 1 else value


class FusedArms(keras.Model):
    """The K arms as one functional model: inputs one image batch per seed group, outputs each arm's logits.

    Build it with ``FusedArms.of(arms, groups, preprocess)``. ``compute_loss`` sums the arms' losses, each masked
    by ``active`` with ``where``; each arm's own loss is tracked as ``arm{k}_loss`` (the single run's ``loss``).
    """

    def __init__(self, inputs, outputs, arm_count: int, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.arm_count = int(arm_count)
        self.active = self.add_weight(shape=(self.arm_count,), initializer="ones", trainable=False, dtype="float32",
                                      name="active")
        self.arm_losses = [keras.losses.SparseCategoricalCrossentropy(from_logits=True) for _ in range(arm_count)]
        self.arm_loss_trackers = [keras.metrics.Mean(name=f"{arm_name(arm)}_loss") for arm in range(arm_count)]

    @classmethod
    def of(cls, arms: Sequence[keras.Model], groups: Sequence[int],
           preprocess: Callable[[int, object], object] | None = None, input_dtype: str = "uint8",
           name: str = "fused") -> "FusedArms":
        """The fused model of ``arms``: arm k reads input ``groups[k]``; ``preprocess(group, tensor)`` (e.g.
        normalisation and augmentation) runs once per group, shared by its arms."""
        if len(groups) != len(arms) or sorted(set(groups)) != list(range(max(groups) + 1)):
            raise ValueError(f"fused arms: groups {list(groups)} must number 0.. for each of {len(arms)} arms")
        shape = arms[0].input_shape[1:]
        inputs = [keras.Input(shape, dtype=input_dtype, name=f"pixels{group}") for group in range(max(groups) + 1)]
        fed = [preprocess(group, x) if preprocess else x for group, x in enumerate(inputs)]
        outputs = [arm(fed[group]) for arm, group in zip(arms, groups)]
        return cls(inputs, outputs, len(arms), name=name)

    def arms(self) -> list[keras.Model]:
        """The arms' networks, arm 0 first."""
        by_name = {layer.name: layer for layer in self.layers}
        return [by_name[arm_name(arm)] for arm in range(self.arm_count)]

    def set_active(self, arm: int, active: bool) -> None:
        values = ops.convert_to_numpy(self.active).copy()
        values[arm] = 1.0 if active else 0.0
        self.active.assign(values)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Sum over arms of where(active, arm's loss, 0); an arm's loss as ``Trainer.compute_loss`` makes a single
        network's: its cross-entropy (mean over the batch) and its own regularisation terms, summed."""
        del x, sample_weight, training
        if self.arm_count == 1:  # Keras hands a single output over unwrapped
            y, y_pred = [tree_first(y)], [tree_first(y_pred)]
        total = []
        for arm, network in enumerate(self.arms()):
            parts = [self.arm_losses[arm](y[arm], y_pred[arm]),
                     *(self._aggregate_additional_loss(term) for term in network.losses)]
            loss = ops.sum(parts) if len(parts) > 1 else parts[0]
            self.arm_loss_trackers[arm].update_state(loss, sample_weight=ops.shape(y[arm])[0])
            total.append(ops.where(self.active[arm] > 0.5, loss, ops.zeros_like(loss)))
        return ops.sum(total) if len(total) > 1 else total[0]

    @property
    def metrics(self):  # noqa: D102 - the arms' losses among the model's metrics (reset every epoch)
        return [*super().metrics, *self.arm_loss_trackers]
