import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.machine import cpu_info, is_x86, native_bf16, onednn_enabled, prepare_tensorflow

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_info_reads_the_model_and_the_instruction_sets_that_matter(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n"
                       "flags\t\t: fpu sse2 avx fma avx2 bmi2 sha_ni\n\nprocessor\t: 1\n")
    info = cpu_info(cpuinfo)
    assert info["model"] == "AMD EPYC 7B13" and info["isa"] == ["avx2", "fma"] and info["cores"] >= 1
    assert not native_bf16(info["isa"])
    assert native_bf16(["avx2", "avx512f", "avx512_bf16"]) and native_bf16(["amx_bf16"])
    assert cpu_info(tmp_path / "missing")["isa"] == []


@pytest.mark.skipif(not is_x86(), reason="oneDNN is asked for on x86 CPUs only")
def test_onednn_is_on_for_every_x86_cpu_unless_the_user_says_no(monkeypatch):
    assert onednn_enabled()  # this process: conftest prepared TensorFlow as every command does
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS")
    prepare_tensorflow()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    prepare_tensorflow()
    assert os.environ["TF_ENABLE_ONEDNN_OPTS"] == "0"


@pytest.mark.skipif((Path(sys.executable).parent / "nvidia-smi").exists(), reason="nvidia-smi beside Python")
def test_gpu_check_on_a_machine_without_a_gpu_exits_2_with_one_line(tmp_path):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # no nvidia-smi, as on a CPU machine
    output = tmp_path / "gpu-check.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--output", str(output)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and "needs a GPU" in lines[0], done.stderr
    assert not output.exists()


def test_tensorflow_starts_quietly_unless_asked_to_talk():
    code = "from common.machine import prepare_tensorflow; prepare_tensorflow(); import tensorflow as tf; tf.constant(1)"
    env = {key: value for key, value in os.environ.items() if key not in ("TF_CPP_MIN_LOG_LEVEL",)}
    quiet = subprocess.run([sys.executable, "-c", code], env={**env, "SHORTCUT_SEARCH_VERBOSITY": "0"},
                           capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0 and quiet.stderr.strip() == "", quiet.stderr  # absl, oneDNN, CUDA notices: gone
    loud = subprocess.run([sys.executable, "-c", code + "; print(tf.__version__)"],
                          env={**env, "SHORTCUT_SEARCH_VERBOSITY": "1"}, capture_output=True, text=True, timeout=300)
    assert loud.returncode == 0 and loud.stdout.strip()  # -v imports the same TensorFlow, with its notices


def test_every_command_takes_quiet_and_verbose():
    from common.log import verbosity_in as _verbosity_in

    assert [_verbosity_in(argv) for argv in (["--depth", "8"], ["-v"], ["-vv", "--x"], ["-q"], ["--verbose"])] == [
        0, 1, 2, -1, 1]
