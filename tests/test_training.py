import errno
import json
import math

import numpy as np
import pytest

from models.schedules import Schedule, preset
from training.data import load_dataset
from training.config import TrainConfig
from training.loop import learning_rate_at, learning_rate_schedule, run
from training.pipeline import batches
from commands.train import main


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", subset=400)


def test_short_run_on_real_digits_beats_chance_and_reports_every_epoch(digits, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    seen = []
    result = run(TrainConfig(depth=8, epochs=6, batch_size=32, precision="float32"), preset("paper-c10-r32"),
                 digits, on_epoch=lambda epoch, acc: seen.append((epoch, acc)), tensorboard=tmp_path / "run")
    scalars = {}
    for split in ("train", "validation"):  # TensorBoard's event files, per epoch
        events = EventAccumulator(str(tmp_path / "run" / split), size_guidance={"tensors": 0})
        events.Reload()
        scalars[split] = {tag: len(events.Tensors(tag)) for tag in events.Tags()["tensors"]}
    assert {"epoch_loss": 6, "epoch_accuracy": 6, "epoch_learning_rate": 6}.items() <= scalars["train"].items()
    assert scalars["validation"]["epoch_accuracy"] == 6
    assert [e for e, _ in seen] == [1, 2, 3, 4, 5, 6] and [a for _, a in seen] == result.val_accuracy
    assert result.epochs_run == 6 and not result.diverged
    assert result.final_val_accuracy > 0.3  # chance is 0.1
    assert result.images_per_second > 0 and result.wall_seconds > 0
    assert result.schedule == preset("paper-c10-r32").to_dict()
    json.dumps(result.to_dict())


def test_an_error_the_epoch_hook_raises_keeps_its_cause_through_keras(digits):
    """A storage fault in the epoch hook (the trial's report to a lost database) must still say what it is after
    ``fit``: Keras's traceback filtering would re-raise it ``from None`` and hide the cause."""
    from search.objective import environment_fault

    def lost(epoch, accuracy):
        try:
            raise OSError(errno.EIO, "Input/output error")
        except OSError as fault:
            raise RuntimeError("the storage's wrapper") from fault

    with pytest.raises(RuntimeError) as raised:
        run(TrainConfig(depth=8, epochs=1, batch_size=64, precision="float32"), None, digits, on_epoch=lost)
    assert isinstance(raised.value.__cause__, OSError)
    assert environment_fault(raised.value).startswith("OSError: [Errno 5]")


def test_same_seed_same_run_other_seed_other_run(digits):
    config = TrainConfig(depth=8, epochs=1, batch_size=64, precision="float32", seed=3)
    a, b = run(config, None, digits), run(config, None, digits)
    c = run(TrainConfig(depth=8, epochs=1, batch_size=64, precision="float32", seed=4), None, digits)
    assert a.train_loss == b.train_loss and a.val_accuracy == b.val_accuracy
    assert a.train_loss != c.train_loss


def test_nan_loss_marks_the_run_diverged_without_raising(digits):
    result = run(TrainConfig(depth=8, epochs=3, batch_size=64, precision="float32", learning_rate=1e12),
                 preset("baseline"), digits)
    assert result.diverged and "loss" in result.diverged_reason and "float16" not in result.diverged_reason
    assert result.epochs_run < 3 or not math.isfinite(result.train_loss[-1])
    assert result.final_val_accuracy is None


def test_a_float16_overflow_names_the_precision_in_its_diverged_reason(digits):
    # f = 80 over ResNet-8's 3 blocks: activations near 80^3 = 5e5, past float16's 65504 from the first step
    result = run(TrainConfig(depth=8, epochs=1, batch_size=64, precision="mixed_float16"),
                 Schedule("constant", {"value": 80.0}), digits)
    assert result.diverged and result.precision == "mixed_float16"
    assert "65504" in result.diverged_reason and "--precision mixed_bfloat16" in result.diverged_reason


def test_hook_can_stop_the_run_and_the_record_says_so(digits):
    result = run(TrainConfig(depth=8, epochs=3, batch_size=64, precision="float32"), None, digits,
                 on_epoch=lambda epoch, accuracy: epoch == 1)
    assert result.stopped_early and result.epochs_run == 1 and len(result.val_accuracy) == 1


def test_hook_exception_stops_the_run(digits):
    class Stop(Exception):
        pass

    def stop(epoch, accuracy):
        raise Stop(epoch)

    with pytest.raises(Stop):
        run(TrainConfig(depth=8, epochs=3, batch_size=64, precision="float32"), None, digits, on_epoch=stop)


def _passes(stream, count, steps):
    taken = [labels.numpy().tolist() for _, labels in stream.take(count * steps)]
    return [sum(taken[k * steps:(k + 1) * steps], []) for k in range(count)]


def test_training_batches_cover_every_image_once_a_pass_and_reshuffle():
    images = np.arange(10, dtype=np.uint8).reshape(10, 1, 1, 1).repeat(2, axis=1)
    labels = np.arange(10, dtype=np.int32)
    steps = math.ceil(10 / 4)  # the last batch of a pass holds the 2 images left over
    first, second = _passes(batches(images, labels, 4, shuffle_seed=3), 2, steps)
    assert sorted(first) == sorted(second) == list(range(10)) and first != second
    assert _passes(batches(images, labels, 4, shuffle_seed=3), 2, steps) == [first, second]  # seeded
    assert _passes(batches(images, labels, 4, shuffle_seed=4), 1, steps) != [first]
    batch_images, batch_labels = next(iter(batches(images, labels, 4, shuffle_seed=3)))
    assert batch_images.dtype == "uint8" and list(batch_images[:, 0, 0, 0].numpy()) == list(batch_labels.numpy())
    in_order = [labels.numpy().tolist() for _, labels in batches(images, labels, 4)]
    assert in_order == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # validation and test: one pass, in order


def test_learning_rate_drops_at_half_and_three_quarters_and_warms_up_deep_nets():
    lr = learning_rate_schedule(TrainConfig(depth=32), 1000)
    assert [float(lr(s)) for s in (0, 499, 501, 749, 751, 999)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    deep = learning_rate_schedule(TrainConfig(depth=110), 64000)
    assert [float(deep(s)) for s in (0, 399, 401, 31999, 32001, 48001)] == pytest.approx(
        [0.01, 0.01, 0.1, 0.1, 0.01, 0.001])


@pytest.mark.parametrize("total", [401, 500, 533, 600, 700, 800])
def test_a_short_deep_run_never_goes_back_up_to_the_full_rate_inside_its_warm_up(total):
    # 401-800 steps put the /10 drop at 50 % inside the 400-step warm-up; values stay paired with their steps
    config = TrainConfig(depth=110)
    lr = learning_rate_schedule(config, total)
    rates = [float(lr(iteration)) for iteration in range(total)]  # Keras's iteration = SGD step - 1
    assert rates == pytest.approx([learning_rate_at(config, total, step) for step in range(1, total + 1)])
    assert max(rates[:400]) <= 0.01 and rates[0] == pytest.approx(0.01)
    assert rates[400:] == sorted(rates[400:], reverse=True)  # after the warm-up, only drops
    assert rates[-1] == pytest.approx(0.001)


def test_default_length_is_he_et_al_64k_iterations():
    assert TrainConfig().epochs_for(45000) == 182
    assert TrainConfig(epochs=3).epochs_for(45000) == 3


def test_train_command_prints_one_json_record(capsys):
    assert main(["--depth", "8", "--dataset", "digits", "--subset", "200", "--epochs", "1", "--batch-size", "64",
                 "--precision", "float32", "--test"]) == 0
    record = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert record["epochs_run"] == 1 and 0 <= record["test_accuracy"] <= 1


@pytest.mark.parametrize("argv, message", [
    (["--depth", "31"], "depth"),
    (["--dataset", "mnist"], "dataset"),
    (["--schedule", "nope"], "schedule"),
    (["--schedule", "missing.json"], "cannot read"),
    (["--epochs", "0"], "epochs"),
    (["--precision", "float8"], "precision"),
])
def test_train_command_usage_errors_exit_2_with_one_line(argv, message):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "commands.train", *argv], capture_output=True, text=True,
                          cwd=str(__import__("pathlib").Path(__file__).parents[1]), timeout=120)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], done.stderr


def test_auto_precision_follows_the_device(monkeypatch):
    from training import loop
    from training.config import CPU_BF16_VALIDATED, auto_precision

    # bfloat16 from compute capability 8.0 (A100, H100, H200, L4), float16 before it (V100, T4); XLA on a GPU
    assert auto_precision((9, 0), []) == auto_precision((8, 0), []) == "mixed_bfloat16"
    assert auto_precision((7, 5), []) == auto_precision((7, 0), []) == "mixed_float16"
    # a CPU: float32 where bf16 is emulated; bf16 only on native-bf16 chips, and only once validated
    assert auto_precision(None, ["avx2", "fma"]) == auto_precision(None, ["avx2", "avx512f"]) == "float32"
    native = "mixed_bfloat16" if CPU_BF16_VALIDATED else "float32"
    assert auto_precision(None, ["avx2", "avx512_bf16"]) == auto_precision(None, ["amx_bf16"]) == native
    monkeypatch.setattr(loop, "gpu_compute_capability", lambda: (8, 6))
    assert loop.resolve_precision("auto") == ("mixed_bfloat16", True)
    assert loop.resolve_precision("float32") == ("float32", True)
    monkeypatch.setattr(loop, "gpu_compute_capability", lambda: (7, 0))
    assert loop.resolve_precision("auto") == ("mixed_float16", True)
    monkeypatch.setattr(loop, "gpu_compute_capability", lambda: None)
    monkeypatch.setattr(loop, "cpu_info", lambda: {"model": "x", "cores": 2, "isa": ["avx2", "fma"]})
    assert loop.resolve_precision("auto") == ("float32", False)


def test_a_run_cut_short_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_run(digits, tmp_path, capsys):
    config = TrainConfig(depth=8, epochs=4, batch_size=64, precision="float32", seed=2)
    whole = run(config, preset("paper-c10-r32"), digits)

    def cut_after_epoch_2(epoch, accuracy):
        if epoch == 2:
            raise KeyboardInterrupt  # as Ctrl-C or a dying worker between epochs
    with pytest.raises(KeyboardInterrupt):
        run(config, preset("paper-c10-r32"), digits, on_epoch=cut_after_epoch_2, checkpoint_dir=tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["state.npz"]  # kept for the next attempt, no temporary

    seen = []
    resumed = run(config, preset("paper-c10-r32"), digits, on_epoch=lambda e, a: seen.append(e),
                  checkpoint_dir=tmp_path)
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_run == 4
    assert seen == [1, 2, 3, 4]  # restored epochs are replayed to the hook, then training goes on
    np.testing.assert_allclose(resumed.train_loss, whole.train_loss, rtol=1e-4)
    np.testing.assert_allclose(resumed.val_accuracy, whole.val_accuracy, atol=1 / len(digits.y_val))
    assert (tmp_path / "state.npz").is_file()  # its caller removes it once the result is recorded

    # another run's state (here another budget) or a truncated one is discarded with a warning: the run starts over
    short = TrainConfig(depth=8, epochs=1, batch_size=64, precision="float32", seed=2)
    capsys.readouterr()
    assert run(short, preset("paper-c10-r32"), digits, checkpoint_dir=tmp_path).resumed_from_epoch is None
    assert "belongs to another run" in capsys.readouterr().err
    state = (tmp_path / "state.npz").read_bytes()
    (tmp_path / "state.npz").write_bytes(state[:len(state) // 2])
    assert run(short, preset("paper-c10-r32"), digits, checkpoint_dir=tmp_path).resumed_from_epoch is None
    assert "cannot be read" in capsys.readouterr().err
    from training.checkpoint import EpochCheckpoint  # a bare array, or a record that is not a mapping: the same
    for bad in (lambda file: np.save(file, np.arange(3)), lambda file: np.savez(file, record=np.asarray("[1]"))):
        with open(tmp_path / "state.npz", "wb") as file:
            bad(file)
        assert EpochCheckpoint(tmp_path, "k").restore(None) is None and not (tmp_path / "state.npz").exists()


def test_learned_arms_train_their_scalars_and_report_them(digits):
    config = TrainConfig(depth=8, epochs=2, batch_size=32, precision="float32")
    learned = run(config, preset("learned"), digits)
    skipinit = run(config, preset("skipinit"), digits)
    fixed = run(config, preset("paper-c10-r32"), digits)
    assert fixed.learned_values is None
    assert len(learned.learned_values) == 3 and all(abs(v - 1.0) > 1e-3 for v in learned.learned_values)
    assert len(skipinit.learned_values) == 3 and all(v != 0 for v in skipinit.learned_values)
    assert skipinit.train_loss[-1] < skipinit.train_loss[0] and not learned.diverged  # both train
    assert json.loads(json.dumps(learned.to_dict()))["learned_values"] == learned.learned_values
