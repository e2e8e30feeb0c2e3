"""Training speed of one configuration, as JSON: pipeline vs bare model step, schedule cost, FLOP/s, overhead.

    python -m benchmarks.train_speed --depth 32 --batch-size 128 --precision float32 --steps 30 --compare-baseline \
        --compare-torch

Keys: pipeline_images_per_second (full training step, uint8 input, normalisation and augmentation, through
model.fit), model_images_per_second (the bare network on pre-made float tensors), pipeline_ratio,
schedule_ratio (scaled / unscaled bare step, with --compare-baseline), gflops_per_second (analytic multiply-adds,
x2 FLOPs, x3 for training), trial_overhead_seconds (build + compile + first step),
epoch_seconds (estimated for the 45k split), peak_rss_mb, and the machine: cpu (model, cores, isa flags) and
onednn (TensorFlow's oneDNN kernels on). Bare-step timings alternate between the networks compared, so a noisy
neighbour slows both alike. --compare-torch times the PyTorch peer (benchmarks.torch_peer) in its own process
right after: torch_images_per_second and torch_ratio (this bare step / the peer's).
"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from typing import Sequence

from common.cli import ArgumentParser, positive_int, run_command
from common.errors import UsageError
from common.machine import cpu_info, onednn_enabled, prepare_tensorflow
from models.schedules import block_count, preset
from training.config import PRECISIONS, TrainConfig
from training.data import Dataset

SPLIT_IMAGES = 45_000
ROUNDS = 3  # timed repetitions of each measurement; the best counts


def multiply_adds(depth: int, num_classes: int = 10) -> int:
    """Multiply-adds of one forward pass of the CIFAR ResNet (convolutions and the dense layer)."""
    n = (depth - 2) // 6
    total = 32 * 32 * 9 * 3 * 16  # stem
    size, channels = 32, 16
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(n):
            stride = 2 if stage > 0 and block == 0 else 1
            size //= stride
            total += size * size * 9 * channels * filters + size * size * 9 * filters * filters
            channels = filters
    return total + 64 * num_classes


def _bare_step_seconds(networks, x, y, steps: int, rounds: int = 3) -> list[float]:
    """Seconds per step of each compiled network, timed in alternating rounds; the best round of each."""
    for network in networks:  # trace and warm up
        for _ in range(3):
            network.train_on_batch(x, y)
    best = [float("inf")] * len(networks)
    for _ in range(rounds):
        for i, network in enumerate(networks):
            started = time.perf_counter()
            for _ in range(steps):
                network.train_on_batch(x, y)
            best[i] = min(best[i], (time.perf_counter() - started) / steps)
    return best


def measure(depth: int, batch_size: int, precision: str, steps: int, compare_baseline: bool) -> dict:
    prepare_tensorflow()  # then TensorFlow, imported here only: --help and bad input stay fast
    import keras
    import numpy as np

    from models.resnet import build_resnet
    from training.loop import compiled_model, resolve_precision
    from training.pipeline import batches

    rng = np.random.default_rng(0)
    images = steps * batch_size
    pixels = rng.integers(0, 256, (images, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, images).astype(np.int32)
    data = Dataset("synthetic", 10, pixels, labels, pixels[:0], labels[:0], pixels[:0], labels[:0])
    config = TrainConfig(depth=depth, epochs=2, batch_size=batch_size, precision=precision)
    schedule = preset("paper-c10-r32")

    # fixed per-trial cost: build + compile + first step (TensorFlow's import and the data are once per worker)
    started = time.perf_counter()
    model, policy = compiled_model(config, schedule, data)
    model.train_on_batch(pixels[:batch_size], labels[:batch_size])
    overhead = time.perf_counter() - started

    # the full pipeline through fit: epoch 1 traces, the best of the next ROUNDS epochs counts (as for the bare
    # step below: the best round is the one least disturbed by the machine's other work)
    epoch_times = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: epoch_times.append(time.perf_counter()),
        on_epoch_end=lambda epoch, logs: epoch_times.__setitem__(-1, time.perf_counter() - epoch_times[-1]))
    model.fit(batches(pixels, labels, batch_size, shuffle_seed=0), steps_per_epoch=steps, epochs=1 + ROUNDS,
              shuffle=False, verbose=0, callbacks=[timer])
    pipeline = images / min(epoch_times[1:])

    # the bare network on pre-made normalised tensors, same optimizer and precision
    _, jit = resolve_precision(precision)
    keras.config.set_dtype_policy(policy)
    networks = [build_resnet(depth, 10, schedule)] + ([build_resnet(depth, 10)] if compare_baseline else [])
    keras.config.set_dtype_policy("float32")
    for network in networks:
        network.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                        keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=jit)
    x = keras.ops.convert_to_tensor(rng.normal(size=(batch_size, 32, 32, 3)).astype("float32"))
    y = keras.ops.convert_to_tensor(labels[:batch_size])
    seconds = _bare_step_seconds(networks, x, y, steps, ROUNDS)
    model_speed = batch_size / seconds[0]
    result = {
        "depth": depth, "batch_size": batch_size, "precision": policy, "xla": jit, "steps": steps,
        "pipeline_images_per_second": round(pipeline, 1),
        "model_images_per_second": round(model_speed, 1),
        "pipeline_ratio": round(pipeline / model_speed, 3),
        "gflops_per_second": round(2 * 3 * multiply_adds(depth) * model_speed / 1e9, 1),
        "trial_overhead_seconds": round(overhead, 2),
        "epoch_seconds": round(SPLIT_IMAGES / pipeline, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "backend": keras.config.backend(), "onednn": onednn_enabled(), "cpu": cpu_info(),
    }
    if compare_baseline:
        result["baseline_images_per_second"] = round(batch_size / seconds[1], 1)
        result["schedule_ratio"] = round(seconds[1] / seconds[0], 3)
    return result


def add_step_arguments(parser: ArgumentParser, steps: int = 30) -> None:
    """--depth, --batch-size and --steps, as every step-timing benchmark takes them."""
    parser.add_argument("--depth", type=int, default=32, help="network depth 6n+2 (default 32)")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="images per step (default 128)")
    parser.add_argument("--steps", type=positive_int, default=steps, help=f"timed steps per round (default {steps})")


def step_benchmark(module: str, doc: str, measure, argv: Sequence[str] | None, steps: int) -> int:
    """The command of a benchmark that times ``measure(depth, batch_size, steps)`` and prints its record as JSON."""
    parser = ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0])
    add_step_arguments(parser, steps)
    args = parser.parse_args(argv)
    block_count(args.depth)
    print(json.dumps(measure(args.depth, args.batch_size, args.steps)))
    return 0


def torch_peer(depth: int, batch_size: int, steps: int) -> dict:
    """``benchmarks.torch_peer``'s record, timed in a process of its own (no thread pool shared with TensorFlow)."""
    command = [sys.executable, "-m", "benchmarks.torch_peer", "--depth", str(depth), "--batch-size",
               str(batch_size), "--steps", str(steps)]
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        lines = finished.stderr.strip().splitlines() or [f"exit code {finished.returncode}"]
        raise UsageError(f"compare-torch: {lines[-1]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__.split("\n\n")[0])
    add_step_arguments(parser)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS, help="default auto")
    parser.add_argument("--compare-baseline", action="store_true",
                        help="also time the unscaled ResNet: schedule_ratio = scaled / unscaled speed")
    parser.add_argument("--compare-torch", action="store_true",
                        help="then time the PyTorch peer (akamaster resnet, channels_last; needs torch): "
                             "torch_ratio = this bare step / the peer's")
    args = parser.parse_args(argv)
    block_count(args.depth)
    result = measure(args.depth, args.batch_size, args.precision, args.steps, args.compare_baseline)
    if args.compare_torch:
        peer = torch_peer(args.depth, args.batch_size, args.steps)
        result.update(torch_images_per_second=peer["model_images_per_second"], torch_version=peer["version"],
                      torch_ratio=round(result["model_images_per_second"] / peer["model_images_per_second"], 3))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
