"""The GPU check: one short run on one GPU that measures what the GPU settings rest on, as JSON.

    python -m pip install -e ".[gpu]" && python -m benchmarks.gpu_check --output gpu-check.json

At most --budget seconds (default 360). In order, each part in processes of its own:
 1. TensorFlow, ResNet-32, batch 128, XLA, the full training pipeline (``model.fit``, uint8 input, in-graph
    augmentation): images/s and peak GPU memory for float32, mixed_float16 and mixed_bfloat16, and for the
    precision ``auto`` picks also with ``steps_per_execution`` 16.
 2. Concurrent trials, as ``search.run --trials-per-gpu K`` runs them (K processes, one GPU, memory growth):
    aggregate images/s (every timed image over the wall time from the first timed epoch's start to the last one's
    end; the trials start their timed epochs together) for K = 1, 2, 4, 8, and each one's peak memory.
 3. The same as 1 under JAX, when JAX sees the GPU.
 4. Fused arms (``training.fused``: K trials as one network, issue 29), TensorFlow, ResNet-32, batch 128 an arm:
    aggregate images/s, compile seconds and peak memory for K = 1, 2, 4, 8 in mixed_bfloat16 and float32, XLA on
    and off (in that order of priority), and each K's ratio to K = 1 of its setting; its own --fused-budget
    (default 200 s; 0 skips it). Goal: >= 5x aggregate for K = 8 against one trial at a time. ``fuse_auto``: the
    width ``--fuse auto`` would choose by these figures (``fuse_auto_choice``).
Parts that the budget leaves no time for are listed under ``skipped``. Goals on an H100-class GPU: >= 30k img/s
for one trial and >= 100k img/s aggregate (a 182-epoch ResNet-32 trial in under 5 minutes). On a machine without
a GPU it exits 2.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from common.cli import ArgumentParser, positive_int, run_command
from common.errors import UsageError
from common.files import write_json_atomic
from common.machine import cpu_info, gpu_count, package_versions
from models.schedules import preset
from search.workers import worker_environment
from training.config import TrainConfig
from training.data import Dataset

DEPTH, BATCH, SCHEDULE = 32, 128, "paper-c10-r32"
STEPS = 200  # training steps an epoch; epoch 1 compiles, the best of the next EPOCHS - 1 counts
EPOCHS = 4
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
CONCURRENCY = (1, 2, 4, 8)
STEPS_PER_EXECUTION = 16
GOALS = {"one_trial_images_per_second": 30_000, "aggregate_images_per_second": 100_000, "fused_k8_ratio": 5.0}
FUSED_KS, FUSED_STEPS = (1, 8, 4, 2), 50  # K = 1 first: the reference of each setting's ratios
FUSED_SETTINGS = (("mixed_bfloat16", True), ("float32", True), ("mixed_bfloat16", False), ("float32", False))


# ---------------------------------------------------------------- inside a measuring process (imports TensorFlow)

def timed_fit(precision: str, steps_per_execution: int = 1, barrier: tuple[Path, int, int] | None = None) -> dict:
    """Train ResNet-32 on synthetic uint8 images through ``training.loop``'s compiled model; time the epochs.

    ``barrier`` = (folder, rank, count): after the compiling epoch, wait until all ``count`` processes got there,
    so that the timed epochs of concurrent trials overlap.
    """
    import keras  # TensorFlow: imported in the measuring process only
    import numpy as np

    from training.loop import compiled_model
    from training.pipeline import batches

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (STEPS * BATCH, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, STEPS * BATCH).astype(np.int32)
    data = Dataset("synthetic", 10, images, labels, images[:0], labels[:0], images[:0], labels[:0])
    config = TrainConfig(depth=DEPTH, epochs=EPOCHS, batch_size=BATCH, precision=precision,
                         steps_per_execution=steps_per_execution)
    started = time.time()
    model, policy = compiled_model(config, preset(SCHEDULE), data)
    spans: list[list[float]] = []

    def end_epoch(epoch, logs):
        spans[-1].append(time.time())
        if barrier is not None and epoch == 0:
            _wait_for_all(*barrier)

    timer = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: spans.append([time.time()]),
                                           on_epoch_end=end_epoch)
    model.fit(batches(images, labels, BATCH, shuffle_seed=0), steps_per_epoch=STEPS, epochs=EPOCHS, shuffle=False,
              verbose=0, callbacks=[timer])
    timed = spans[1:]
    return {"backend": keras.config.backend(), "precision": policy, "steps_per_execution": steps_per_execution,
            "images_per_second": round(STEPS * BATCH / min(end - start for start, end in timed), 1),
            "compile_seconds": round(spans[0][1] - started, 1), "peak_memory_mb": _peak_memory_mb(),
            "window": [timed[0][0], timed[-1][1]]}


def _wait_for_all(folder: Path, rank: int, count: int, timeout: float = 300) -> None:
    (folder / f"ready-{rank}").touch()
    deadline = time.time() + timeout
    while len(list(folder.glob("ready-*"))) < count and time.time() < deadline:
        time.sleep(0.05)


def _peak_memory_mb() -> float | None:
    import keras

    if keras.config.backend() == "tensorflow":
        import tensorflow as tf

        return round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, 1)
    if keras.config.backend() == "jax":
        import jax

        stats = jax.local_devices()[0].memory_stats() or {}
        return round(stats["peak_bytes_in_use"] / 2**20, 1) if "peak_bytes_in_use" in stats else None
    return None


def measure_precisions() -> None:
    """Part 1 or 3, in this process: one JSON line per setting, printed as soon as it is measured."""
    import keras  # TensorFlow: imported in the measuring process only

    from training.loop import gpu_compute_capability, resolve_precision

    if gpu_compute_capability() is None:
        raise UsageError(f"gpu_check: Keras's {keras.config.backend()} backend sees no GPU")
    settings = [(precision, 1) for precision in PRECISIONS]
    settings.append((resolve_precision("auto")[0], STEPS_PER_EXECUTION))
    for precision, steps_per_execution in settings:
        _reset_peak_memory()
        print(json.dumps(timed_fit(precision, steps_per_execution)), flush=True)


def measure_fused() -> None:
    """Part 4, in this process: one JSON line per (precision, XLA, K), printed as soon as it is measured."""
    import keras  # TensorFlow: imported in the measuring process only
    import numpy as np

    from training.fused import fused_model, fused_streams
    from training.loop import gpu_compute_capability

    if gpu_compute_capability() is None:
        raise UsageError(f"gpu_check: Keras's {keras.config.backend()} backend sees no GPU")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (FUSED_STEPS * BATCH, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, FUSED_STEPS * BATCH).astype(np.int32)
    data = Dataset("synthetic", 10, images, labels, images[:0], labels[:0], images[:0], labels[:0])
    for precision, xla in FUSED_SETTINGS:
        for k in FUSED_KS:
            keras.backend.clear_session()
            _reset_peak_memory()
            config = TrainConfig(depth=DEPTH, epochs=EPOCHS, batch_size=BATCH, precision=precision)
            started = time.time()
            model, policy = fused_model([config] * k, [preset(SCHEDULE)] * k, data, EPOCHS, jit_compile=xla)
            spans: list[list[float]] = []
            timer = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: spans.append([time.time()]),
                                                   on_epoch_end=lambda epoch, logs: spans[-1].append(time.time()))
            model.fit(fused_streams(data, BATCH, [0], [0] * k, 0)[0], steps_per_epoch=FUSED_STEPS, epochs=EPOCHS,
                      shuffle=False, verbose=0, callbacks=[timer])
            best = min(end - start for start, end in spans[1:])
            print(json.dumps({"arms": k, "precision": policy, "xla": xla,
                              "images_per_second": round(k * FUSED_STEPS * BATCH / best, 1),
                              "compile_seconds": round(spans[0][1] - started, 1),
                              "peak_memory_mb": _peak_memory_mb()}), flush=True)


def _reset_peak_memory() -> None:
    import keras

    if keras.config.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.reset_memory_stats("GPU:0")


# ---------------------------------------------------------------- the orchestrating process (no TensorFlow)

class Budget:
    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def _child(arguments: list[str]) -> list[str]:
    return [sys.executable, "-m", "benchmarks.gpu_check", *arguments]


def run_precisions(backend: str, budget: Budget, part: str = "precisions") -> tuple[list[dict], str | None]:
    """Part 1 (tensorflow) or 3 (jax), or 4 (``part`` fused): the records measured before the budget ran out, and
    why it stopped."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_FORCE_GPU_ALLOW_GROWTH": "true",
           "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    try:
        done = subprocess.run(_child(["--part", part]), env=env, capture_output=True, text=True,
                              timeout=max(budget.left(), 1))
        output, problem = done.stdout, None if done.returncode == 0 else _last_line(done.stderr, done.returncode)
    except subprocess.TimeoutExpired as timeout:
        output, problem = _text(timeout.stdout), "budget ran out"
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")], problem


def run_concurrent(count: int, precision: str, budget: Budget) -> dict:
    """Part 2 for one K: K trial processes started together; their aggregate images/s."""
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as folder:
        children = []
        for rank in range(count):
            env = {**worker_environment(rank, count, gpus=1), "KERAS_BACKEND": "tensorflow"}
            arguments = ["--part", "trial", "--precision", precision, "--barrier", folder, "--rank", str(rank),
                         "--of", str(count)]
            children.append(subprocess.Popen(_child(arguments), env=env, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True))
        records, problems = [], []
        for child in children:
            try:
                out, err = child.communicate(timeout=max(budget.left(), 1))
            except subprocess.TimeoutExpired:
                child.kill()
                out, err = child.communicate()
                problems.append("budget ran out")
                continue
            lines = [line for line in out.splitlines() if line.startswith("{")]
            if child.returncode == 0 and lines:
                records.append(json.loads(lines[-1]))
            else:
                problems.append(_last_line(err, child.returncode))
    result = {"trials": count, "precision": precision}
    if problems or len(records) < count:
        return {**result, "error": "; ".join(sorted(set(problems))) or "a trial printed no record"}
    # every image of every timed epoch, over the wall time from the first timed epoch's start to the last one's end
    start, end = min(r["window"][0] for r in records), max(r["window"][1] for r in records)
    images = count * (EPOCHS - 1) * STEPS * BATCH
    return {**result, "images_per_second": round(images / (end - start), 1), "seconds": round(end - start, 2),
            "per_trial_images_per_second": [r["images_per_second"] for r in records],
            "peak_memory_mb": [r["peak_memory_mb"] for r in records]}


def gpu_description() -> dict:
    fields = "name,compute_cap,memory.total,driver_version"
    try:
        line = subprocess.run(["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader,nounits", "-i", "0"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    values = [value.strip() for value in line.split(",")]
    return dict(zip(("name", "compute_capability", "memory_mb", "driver"), values)) if len(values) == 4 else {}


def jax_sees_a_gpu() -> bool:
    probe = "import jax, sys; sys.exit(0 if jax.default_backend() == 'gpu' else 1)"
    try:
        return subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def fused_ratios(records: list[dict]) -> list[dict]:
    """Each fused record with its ratio to K = 1 of the same precision and XLA setting."""
    alone = {(r["precision"], r["xla"]): r["images_per_second"] for r in records if r["arms"] == 1}
    reference = lambda r: alone.get((r["precision"], r["xla"]))  # noqa: E731
    return [{**r, "ratio_to_one": round(r["images_per_second"] / reference(r), 2) if reference(r) else None}
            for r in records]


def fuse_auto_choice(records: list[dict], precision: str) -> dict:
    """What ``--fuse auto`` would choose on this GPU by part 4's figures: the probe's rule (``training.fuse_probe``:
    the K of its widths with the best ratio to one trial, if at least ``PAYS``) at the precision ``auto`` picks,
    XLA on, as a search trains."""
    from training.fuse_probe import PAYS, WIDTHS  # imports TensorFlow (after every measuring process has ended)

    ratios = {r["arms"]: r["ratio_to_one"] for r in records
              if r["precision"] == precision and r["xla"] and r["arms"] in WIDTHS and r["ratio_to_one"]}
    paying = [k for k, ratio in ratios.items() if ratio >= PAYS]
    return {"precision": precision, "ratios": ratios, "pays": PAYS,
            "width": max(paying, key=ratios.get) if paying else 1}


def check(budget_seconds: float, fused_seconds: float = 0) -> dict:
    started, budget = time.monotonic(), Budget(budget_seconds)
    report = {"gpu": gpu_description(), "cpu": cpu_info(), "versions": package_versions(),
              "model": {"depth": DEPTH, "batch_size": BATCH, "schedule": SCHEDULE, "steps_an_epoch": STEPS},
              "goals": GOALS, "skipped": []}
    print("part 1: TensorFlow, one trial per precision ...", file=sys.stderr)
    single, problem = run_precisions("tensorflow", budget)
    report["single"] = single
    if problem:
        report["skipped"].append(f"part 1 incomplete: {problem}")
    if not single:  # TensorFlow did not train on the GPU at all: the other parts would not either
        report.update(concurrent=[], goals_met=None, seconds=round(time.monotonic() - started, 1))
        return report
    auto = next((r for r in single if r["steps_per_execution"] == STEPS_PER_EXECUTION), None)
    auto_precision = auto["precision"] if auto else "mixed_bfloat16"
    report["concurrent"] = []
    for count in CONCURRENCY:
        if budget.left() < 60:
            report["skipped"].append(f"part 2: {count} concurrent trials (budget)")
            continue
        print(f"part 2: {count} concurrent trial(s), {auto_precision} ...", file=sys.stderr)
        report["concurrent"].append(run_concurrent(count, auto_precision, budget))
    if not jax_sees_a_gpu():
        report["skipped"].append("part 3: JAX is not installed with GPU support")
    elif budget.left() < 90:
        report["skipped"].append("part 3: JAX (budget)")
    else:
        print("part 3: JAX, one trial per precision ...", file=sys.stderr)
        jax_records, problem = run_precisions("jax", budget)
        report["single"] += jax_records
        if problem:
            report["skipped"].append(f"part 3 incomplete: {problem}")
    report["fused"] = []
    if fused_seconds > 0:
        print("part 4: fused arms, ResNet-32, K = 1, 8, 4, 2 ...", file=sys.stderr)
        fused, problem = run_precisions("tensorflow", Budget(fused_seconds), part="fused")
        report["fused"] = fused_ratios(fused)
        report["fuse_auto"] = fuse_auto_choice(report["fused"], auto_precision)
        if problem:
            report["skipped"].append(f"part 4 incomplete: {problem}")
    best_one = max((r["images_per_second"] for r in report["single"]), default=0.0)
    best_many = max((r.get("images_per_second", 0.0) for r in report["concurrent"]), default=0.0)
    report["goals_met"] = {"one_trial": best_one >= GOALS["one_trial_images_per_second"],
                           "aggregate": best_many >= GOALS["aggregate_images_per_second"],
                           "fused_k8": any(r["arms"] == 8 and (r["ratio_to_one"] or 0) >= GOALS["fused_k8_ratio"]
                                           for r in report["fused"])}
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def _last_line(stderr: str, code: int) -> str:
    lines = [line for line in (stderr or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit code {code}"


def _text(output) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="gpu-check.json", help="JSON file to write (default gpu-check.json)")
    parser.add_argument("--budget", type=positive_int, default=360,
                        help="seconds the whole check may take; parts that do not fit are skipped (default 360)")
    internal = {"help": argparse.SUPPRESS}  # the parts it runs in processes of their own
    parser.add_argument("--fused-budget", type=int, default=200,
                        help="seconds for part 4, fused arms (default 200; 0 skips it)")
    parser.add_argument("--part", choices=("precisions", "trial", "fused"), **internal)
    parser.add_argument("--precision", **internal)
    parser.add_argument("--barrier", **internal)
    parser.add_argument("--rank", type=int, default=0, **internal)
    parser.add_argument("--of", type=int, default=1, **internal)
    args = parser.parse_args(argv)
    if args.part == "precisions":
        measure_precisions()
        return 0
    if args.part == "fused":
        measure_fused()
        return 0
    if args.part == "trial":
        print(json.dumps(timed_fit(args.precision, barrier=(Path(args.barrier), args.rank, args.of))))
        return 0

    if not gpu_count():
        raise UsageError("gpu_check needs a GPU and nvidia-smi lists none; run it on a machine with an NVIDIA GPU")
    report = check(args.budget, args.fused_budget)
    write_json_atomic(args.output, report)
    print(json.dumps(report))
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
