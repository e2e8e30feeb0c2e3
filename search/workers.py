"""Worker processes: one search in this process with Ctrl-C and SIGTERM recorded, or K processes on one study,
each with its GPU or its share of the CPU cores, supervised until they end."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Sequence

from common.log import log
from common.machine import gpu_count
from search.config import SearchConfig
from search.interrupts import EXIT_SIGNAL, interrupted_exit, signals_as_interrupt

if TYPE_CHECKING:
    from search.loop import Publisher

EXIT_FAILURES = 1
WORKER_FLAG = "--worker"  # WORKER_COMMAND --worker RANK: a worker process, its configuration on standard input


def run_worker(config: SearchConfig, epochs: int, rank: int = 0, data=None, study=None, storage=None,
               publisher: "Publisher | None" = None, invoked_at: float | None = None) -> int:
    """``run_search`` with Ctrl-C and SIGTERM turned into a recorded interrupt; the command's exit code.

    ``data``, ``study`` and ``storage`` are what the caller already opened (one worker, in-process); a worker
    process opens its own. ``invoked_at``: when the command started (``time.time()``), for the confirm stage.
    """
    from search.loop import environment_stop, run_search  # imports TensorFlow: the parent of K workers never trains

    try:
        with signals_as_interrupt():
            _, stopped = run_search(config, epochs, rank, data, study, storage, publisher, invoked_at)
    except KeyboardInterrupt as interrupt:
        return interrupted_exit(interrupt)
    except Exception as error:  # a worker process opening its study on a full disk: one line, exit 75
        if (stopped := environment_stop(error)) is None:
            raise
    if stopped:
        log.error(f"stopped: {stopped}")
        return getattr(stopped, "exit_code", EXIT_FAILURES)  # search.loop.Stopped: 75 when the environment failed
    return 0


def worker_environment(rank: int, workers: int, gpus: int) -> dict[str, str]:
    """Environment of worker ``rank``: its GPU (round robin, memory growth when shared), or its CPU threads."""
    env = dict(os.environ)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(rank % gpus)
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"  # several trials may share one GPU
        if workers > gpus:  # JAX (Keras's other backend) takes 75 % of the GPU at start unless told not to
            env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    else:
        # On CPU, K single-purpose processes beat one process with K times the threads (less synchronisation
        # inside each op); give each worker its share of the cores.
        threads = str(max(1, (os.cpu_count() or 1) // workers))
        env.update(TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS="1", OMP_NUM_THREADS=threads)
    return env


def worker_payload(config: SearchConfig, epochs: int, invoked_at: float) -> str:
    """What a worker process reads on standard input: the configuration, the resolved epochs and when the
    command started."""
    return json.dumps({**config.to_dict(), "epochs_resolved": epochs, "invoked_at": invoked_at})


def config_from_payload(text: str) -> tuple[SearchConfig, int, float]:
    payload = json.loads(text)
    epochs, invoked_at = payload.pop("epochs_resolved"), payload.pop("invoked_at")
    payload["scale_range"] = tuple(payload["scale_range"])
    return SearchConfig(**payload), epochs, invoked_at


def run_workers(config: SearchConfig, epochs: int, invoked_at: float, command: Sequence[str]) -> int:
    """Start ``config.workers`` processes of ``COMMAND --worker RANK`` on this machine and wait for them.
    ``command`` is the caller's way to start one worker (the search command's own command line: the library does
    not know the commands)."""
    gpus = gpu_count()
    payload = worker_payload(config, epochs, invoked_at)
    # the configuration (the storage URL with its password among it) travels through a pipe, never on the
    # command line, where ps shows it to every user of the machine
    children = [subprocess.Popen([*command, WORKER_FLAG, str(rank)], stdin=subprocess.PIPE,
                                 env=worker_environment(rank, config.workers, gpus), text=True)
                for rank in range(config.workers)]
    for child in children:
        child.stdin.write(payload)
        child.stdin.close()

    def forward(number, frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(number)

    previous = signal.signal(signal.SIGTERM, forward)
    received = None
    try:
        while any(child.poll() is None for child in children):
            try:
                time.sleep(0.5)
            except KeyboardInterrupt:  # Ctrl-C reaches the children too; wait for them to record it
                received = signal.SIGINT
    finally:
        signal.signal(signal.SIGTERM, previous)
    codes = [child.returncode for child in children]
    interrupted = [code for code in codes if code in EXIT_SIGNAL.values()]
    if interrupted or received is not None:
        return interrupted[0] if interrupted else EXIT_SIGNAL[signal.SIGINT]
    failed = [code for code in codes if code != 0]
    return (failed[0] if failed[0] > 0 else EXIT_FAILURES) if failed else 0
