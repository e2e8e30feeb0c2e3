"""What one training run needs besides the schedule and the data: plain values, no Keras.

Kept apart from the loop so that commands validate their arguments and the search stores its configuration
without loading TensorFlow.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from common.errors import UsageError
from common.machine import BF16_COMPUTE_CAPABILITY, native_bf16
from models.schedules import block_count

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
HE_ITERATIONS = 64_000
WARMUP_DEPTH, WARMUP_ITERATIONS, WARMUP_LR = 110, 400, 0.01

# Whether mixed_bfloat16 has been shown to train as well as float32 on a CPU with native bf16; only then does
# ``auto`` use it there. A paired real-CIFAR run (ResNet-20, 10k images, 12 epochs, seeds 1-3; benchmarks/README.md)
# found it lower on every seed (test accuracy -2.5, -1.1, -6.2 pt) for 1.0-1.7x the speed, so not yet.
CPU_BF16_VALIDATED = False
FLOAT16_MAX = 65504.0  # float16's largest finite value: activations past it become inf, then NaN

EpochHook = Callable[[int, float], bool | None]  # (epoch 1.., validation accuracy 0..1) -> True to stop the run


@dataclass(frozen=True)
class TrainConfig:
    """What one training run needs besides the schedule and the data.

    Attributes:
        depth: 6n+2 (20, 32, 56, 110, ...).
        epochs: passes over the training split; ``None`` = He et al.'s 64k iterations at this batch size.
        batch_size: images per SGD step.
        precision: ``auto`` (see ``auto_precision``; XLA on a GPU), ``float32``, ``mixed_float16``,
            ``mixed_bfloat16``.
        seed: seeds weights, data order and augmentation (``keras.utils.set_random_seed``).
        learning_rate, momentum: SGD's; weight decay 1e-4 is part of the network (models/resnet.py).
        steps_per_execution: training steps per call into the compiled graph (Keras ``compile``); > 1 saves
            host round trips, which matters for small networks on a fast GPU. Same training either way.
    """

    depth: int = 32
    epochs: int | None = None
    batch_size: int = 128
    precision: str = "auto"
    seed: int = 0
    learning_rate: float = 0.1
    momentum: float = 0.9
    steps_per_execution: int = 1

    def __post_init__(self) -> None:
        block_count(self.depth)
        if self.epochs is not None and self.epochs <= 0:
            raise UsageError(f"epochs: must be > 0, got {self.epochs}")
        if self.batch_size <= 0:
            raise UsageError(f"batch-size: must be > 0, got {self.batch_size}")
        if self.steps_per_execution <= 0:
            raise UsageError(f"steps-per-execution: must be > 0, got {self.steps_per_execution}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"precision: unknown {self.precision!r}; choose one of {', '.join(PRECISIONS)}")

    def epochs_for(self, train_images: int) -> int:
        """Epochs of this run: ``epochs``, or He et al.'s 64k iterations rounded up to whole epochs."""
        if self.epochs is not None:
            return self.epochs
        return math.ceil(HE_ITERATIONS / math.ceil(train_images / self.batch_size))




def auto_precision(gpu_capability: tuple[int, int] | None, cpu_isa: list[str] | set[str]) -> str:
    """The Keras dtype policy that ``--precision auto`` stands for on a device.

    On a GPU (``gpu_capability`` = its CUDA compute capability): ``mixed_bfloat16`` from 8.0 on (A100, A10, L4,
    H100, H200, ...), whose tensor cores compute bfloat16 at float16's speed with float32's range; a schedule with
    factors above 1 compounds over the blocks (ResNet-56 at f = 1.5: activations of 3.3e5 at initialisation), which
    float16 (largest value 65504) turns into NaN. Older GPUs: ``mixed_float16``. On a CPU (``None``): float32,
    except where the chip computes bf16 natively (``cpu_isa`` has avx512_bf16 or amx_bf16) and
    ``CPU_BF16_VALIDATED``; elsewhere bf16 is emulated and slower than float32.
    """
    if gpu_capability is not None:
        return "mixed_bfloat16" if tuple(gpu_capability) >= BF16_COMPUTE_CAPABILITY else "mixed_float16"
    return "mixed_bfloat16" if CPU_BF16_VALIDATED and native_bf16(cpu_isa) else "float32"
