"""What one training run needs besides the schedule and the data: plain values, no Keras.

Kept apart from the loop so that commands validate their arguments and the search stores its configuration
without loading TensorFlow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from common.errors import UsageError
from models.schedules import block_count

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
HE_ITERATIONS = 64_000
WARMUP_DEPTH, WARMUP_ITERATIONS, WARMUP_LR = 110, 400, 0.01

EpochHook = Callable[[int, float], bool | None]  # (epoch 1.., validation accuracy 0..1) -> True to stop the run


@dataclass(frozen=True)
class TrainConfig:
    """What one training run needs besides the schedule and the data.

    Attributes:
        depth: 6n+2 (20, 32, 56, 110, ...).
        epochs: passes over the training split; ``None`` = He et al.'s 64k iterations at this batch size.
        batch_size: images per SGD step.
        precision: ``auto`` (mixed_float16 + XLA on a GPU, float32 on CPU), ``float32``, ``mixed_float16``,
            ``mixed_bfloat16``.
        seed: seeds weights, data order and augmentation (``keras.utils.set_random_seed``).
        learning_rate, momentum: SGD's; weight decay 1e-4 is part of the network (models/resnet.py).
    """

    depth: int = 32
    epochs: int | None = None
    batch_size: int = 128
    precision: str = "auto"
    seed: int = 0
    learning_rate: float = 0.1
    momentum: float = 0.9

    def __post_init__(self) -> None:
        block_count(self.depth)
        if self.epochs is not None and self.epochs <= 0:
            raise UsageError(f"epochs: must be > 0, got {self.epochs}")
        if self.batch_size <= 0:
            raise UsageError(f"batch-size: must be > 0, got {self.batch_size}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision: unknown {self.precision!r}; choose one of {', '.join(PRECISIONS)}")

    def epochs_for(self, train_images: int) -> int:
        """Epochs of this run: ``epochs``, or He et al.'s 64k iterations rounded up to whole epochs."""
        if self.epochs is not None:
            return self.epochs
        return math.ceil(HE_ITERATIONS / math.ceil(train_images / self.batch_size))


