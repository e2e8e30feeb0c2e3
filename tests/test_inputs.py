"""Every command refuses bad input before it writes anything: one ``error:`` line, exit code 2, the study file,
the artifact store and the checkpoints untouched, and no password in the line."""
import shutil
import socket

import optuna
import pytest

from common.cli import run_command
from conftest import TINY, fingerprint
from commands import confirm, evaluate, export, report, serve, slurm, train
from commands import run as search_run

LONG = "s" * 300
EVALUATE = ["--schedule", "paper-c10-r32", "--depth", "8", "--dataset", "digits", "--epochs", "1"]
TRAIN = ["--depth", "8", "--dataset", "digits", "--subset", "200", "--epochs", "1", "--precision", "float32"]


def listing(folder):
    """The folder's entries, but SQLite's -wal and -shm files, which any reader of a WAL database opens."""
    return sorted(path.name for path in folder.iterdir() if not path.name.endswith(("-wal", "-shm")))


def _busy_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


CASES = [
    # (command, its arguments ({db}: the study's file, {tmp}: the test's folder, {port}: a port in use), message)
    (search_run, [*TINY, "--artifact-dir", "{tmp}/a-file/store"], "artifact-dir: cannot create"),
    (search_run, [*TINY, "--tensorboard", "{tmp}/a-file/board"], "tensorboard: cannot create"),
    (search_run, [*TINY, "--study", LONG], "study: a name of 1 to 100"),
    (search_run, [*TINY, "--study", "x\ny"], "control characters"),
    (search_run, [*TINY, "--study", "digits-resnet8.confirm"], "belong to confirm stages"),
    (search_run, [*TINY, "--seed", "-1"], "seed: must lie in"),
    (search_run, [*TINY, "--timeout", "nan"], "timeout: must be a finite"),
    (search_run, [*TINY, "--heartbeat", "99999999999"], "heartbeat: at most 86400"),
    (search_run, [*TINY, "--storage", "mysql://me:hunter2@db.example/search"], "not a database this tool supports"),
    (search_run, [*TINY, "--storage", "postgresql://me:hun@ter2@db.example/search"], "holds an '@'"),
    (export, ["--output", "{tmp}/a-file/best.json"], "output: cannot create"),
    (export, ["--output", "{tmp}"], "is a folder"),
    (export, ["--study", "digits-resnet8.confirm"], "is a confirm stage"),
    (export, ["--storage", "sqlite:///{tmp}/empty.db"], "holds no study"),
    (export, ["--model", "{tmp}/a-file/best.keras"], "model: cannot create"),
    (evaluate, [*EVALUATE, "--output", "{tmp}/a-file/evaluation.json"], "output: cannot create"),
    (evaluate, [*EVALUATE, "--tensorboard", "{tmp}/a-file/board"], "tensorboard: cannot create"),
    (report, ["--output", "{tmp}/a-file/report.html"], "output: cannot create"),
    (serve, ["--port", "70000"], "port"),
    (serve, ["--port", "{port}"], "is not free"),
    (confirm, ["--study", "digits-resnet8", "--seeds", "1"], "at least 2"),
    (search_run, [*TINY, "--target-subset", "5000"], "target-subset: must be between"),
    (search_run, [*TINY, "--target-depth", "9"], "target-depth: must be of the form"),
    (search_run, [*TINY, "--baseline-seeds", "1001"], "baseline-seeds: at most 1000"),
    (confirm, ["--study", "digits-resnet8.confirm"], "is a confirm stage"),
    (confirm, ["--storage", "sqlite:///{tmp}/foreign.db", "--study", "foreign"], "was not made by shortcut-search run"),
    # found only after the work before issue 27: each is refused now before any
    (train, [*TRAIN, "--save-model", "{tmp}/a-file/m.keras"], "save-model: cannot create"),
    (train, [*TRAIN, "--tensorboard", "{tmp}/a-file/board"], "tensorboard: cannot create"),
    (train, [*TRAIN, "--seed", "-7"], "seed: must lie in"),
    (evaluate, [*EVALUATE, "--seed", "-7"], "seed: must lie in"),
    (evaluate, [*EVALUATE, "--output", "{tmp}/" + LONG + ".json"], "bytes long"),
    (evaluate, [*EVALUATE, "--storage", "sqlite:///{tmp}/empty.db", "--study", "x"], "is an empty file"),
    (evaluate, [*EVALUATE, "--study", "digits-resnet8", "--artifact-dir", "{tmp}/a-file/store"],
     "artifact-dir: cannot create"),
    (export, ["--output", "{tmp}/" + LONG + ".json"], "bytes long"),
    (export, ["--model", "{tmp}/" + LONG + ".keras"], "bytes long"),
    (export, ["--output", "{tmp}/" + LONG + "/best.json"], "bytes long"),
    (report, ["--output", "{tmp}/" + LONG + ".html"], "bytes long"),
    (search_run, [*TINY, "--storage", "sqlite:///{tmp}/empty.db"], "is an empty file"),
    (search_run, [*TINY, "--checkpoint-dir", "{tmp}/" + LONG], "bytes long"),
    (slurm, ["--no-submit", "--time", "banana", "--script", "{tmp}/s.sbatch", "--logs", "{tmp}/logs", "--", *TINY,
             "--storage", "journal:///{tmp}/s.journal"], "time: 'banana' is not a Slurm time limit"),
    (slurm, ["--no-submit", "--script", "{tmp}/s.sbatch", "--logs", "{tmp}/logs", "--", *TINY, "--storage",
             "journal:///rel.journal"], "relative to each task's working folder"),
    (slurm, ["--no-submit", "--script", "{tmp}/" + LONG + ".sbatch", "--logs", "{tmp}/logs", "--", *TINY,
             "--storage", "journal:///{tmp}/s.journal"], "bytes long"),
]


@pytest.mark.parametrize("command, argv, message", CASES,
                         ids=[f"{command.__name__.split('.')[-1]}-{i}" for i, (command, _, _) in enumerate(CASES)])
def test_bad_input_is_refused_before_anything_is_written(one_trial_study, tmp_path, capsys, command, argv,
                                                         message):
    db = tmp_path / "search.db"
    shutil.copy(one_trial_study, db)
    (tmp_path / "a-file").write_text("a file, where a folder is asked for")
    (tmp_path / "empty.db").touch()  # a zero-length file: no study, and it must stay so
    optuna.create_study(study_name="foreign", storage=f"sqlite:///{tmp_path / 'foreign.db'}")  # plain Optuna's
    files = {name: fingerprint(tmp_path / name) for name in ("search.db", "empty.db", "foreign.db")}
    present = listing(tmp_path)
    busy = _busy_port()
    argv = [arg.replace("{db}", str(db)).replace("{tmp}", str(tmp_path)).replace("{port}", str(busy.getsockname()[1]))
            for arg in argv]
    if "--storage" not in argv and command is not train:  # train keeps no study
        argv += ["--storage", f"sqlite:///{db}"]
    capsys.readouterr()
    try:
        assert run_command(command.main, argv) == 2
    finally:
        busy.close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert "hunter2" not in err[0] and "ter2" not in err[0]
    assert {name: fingerprint(tmp_path / name) for name in files} == files
    assert listing(tmp_path) == present  # no store, checkpoints or output made
