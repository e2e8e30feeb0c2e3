"""The machine a run is on (CPU model, cores, instruction sets, GPUs) and the TensorFlow settings that follow.

``prepare_tensorflow`` must run before TensorFlow is imported: TensorFlow reads ``TF_ENABLE_ONEDNN_OPTS`` once.
Its pip builds turn oneDNN on by default only on CPUs with AVX-512 VNNI/BF16 or AMX; everywhere else they train on
Eigen, which ran ResNet-32 at 89 img/s on a 2-core AVX2 EPYC against 209 img/s with oneDNN (issue 12). So this
project asks for oneDNN on every x86 CPU; a user's explicit ``TF_ENABLE_ONEDNN_OPTS=0`` still wins.
"""
from __future__ import annotations

import importlib.abc
import importlib.metadata
import importlib.util
import logging
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from common.log import verbosity

# instruction sets that decide speed and precision: FMA/AVX2 (Eigen's and oneDNN's float32 kernels), AVX-512,
# and native bfloat16 arithmetic (without it bf16 is emulated and slower than float32)
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
X86 = ("x86_64", "amd64", "i386", "i686")
PACKAGES = ("keras", "tensorflow", "optuna", "numpy", "jax")  # whose versions a study and a figure record
# compute capability from which a GPU has bfloat16 tensor cores (A100 and later: A10, L4, H100, H200, ...)
BF16_COMPUTE_CAPABILITY = (8, 0)


def is_x86() -> bool:
    return platform.machine().lower() in X86


def cpu_info(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    """``{"model": str, "cores": n, "isa": [...]}``: the CPU's name, the cores this process may use, and which
    of ``ISA_FLAGS`` it has (empty where ``/proc/cpuinfo`` is missing, e.g. on macOS)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"model": model, "cores": cores, "isa": [flag for flag in ISA_FLAGS if flag in flags]}


def package_versions() -> dict[str, str]:
    """The installed versions of ``PACKAGES`` (those that are installed)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def native_bf16(isa: list[str] | set[str]) -> bool:
    """True when the CPU computes bfloat16 in hardware (AVX-512 BF16 or AMX); elsewhere it is emulated."""
    return any(flag in isa for flag in NATIVE_BF16_FLAGS)


def gpu_count() -> int:
    """NVIDIA GPUs that ``nvidia-smi -L`` lists (0 without the tool), found without importing TensorFlow."""
    if not shutil.which("nvidia-smi"):
        return 0
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in listing.splitlines())


def prepare_tensorflow(verbose: bool | None = None) -> None:
    """Settings that must precede TensorFlow's import: oneDNN on x86, and, unless ``verbose`` (default: the
    command was given -v, ``$SHORTCUT_SEARCH_VERBOSITY`` > 0), a quiet start-up and no Python warnings about
    retracing (expected when every trial builds a new model).

    TensorFlow 2.21 writes its start-up notices (absl's "All log messages before absl::InitializeLog()", oneDNN's,
    "Could not find cuda drivers") to the process's stderr while it is imported, before any log level it reads
    applies; so the import itself runs with file descriptor 2 on /dev/null (``_QuietImport``). A failed import
    still raises its Python exception, printed after stderr is back. ``verbose`` shows everything.
    """
    if is_x86():
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    if verbose is None:
        verbose = verbosity() > 0
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` as Python would, then runs its first import with stderr on /dev/null."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: later imports are cached anyway
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        sys.stderr.flush()
        saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        try:
            self.loader.exec_module(module)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)


def onednn_enabled() -> bool:
    """Whether the imported TensorFlow runs its oneDNN kernels (False under another backend)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return False
    return bool(_pywrap_util_port.IsMklEnabled())
