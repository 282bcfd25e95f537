"""Bad input across the CLI, as a user meets it: the `hpstudy` command in a fresh process, started in a
fresh empty working directory. Every case must give exit code 2, exactly one line on stderr that starts
"hpstudy: error:" and names the field, nothing on stdout, and nothing written: the working directory
stays empty (no hpstudy.db, mlflow.db, hpstudy-runs/, runs/), no storage file appears, and the
directories a case names stay as they were.

Cases already in tests/test_cli.py (train's unknown dataset/model/optimizer/scheduler/init, lr <= 0,
batch size 0, epochs 0, val fraction, a model the input cannot take, mnist offline with --no-download,
...) are not repeated here. `hpstudy run` cases that tests/studies/test_run.py checks in-process are
repeated here only where the issue lists them, since here they also get the stricter checks above.

The cases run two at a time in one module fixture: each is a fresh Python whose start-up (importing
torch and torchvision) alone takes 6-7 s on two cores, and the offline-dataset cases wait about 25 s for
torchvision's download to fail. Measured on the 2-core machine while it was shared with other test
runs: 5.7 minutes for the fixture at load average 3-6, 8 minutes at 10-15. The unreachable-server
checks are also timed in-process, where start-up does not blur them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import torch

# What a rejected `hpstudy run` would otherwise do if it were (wrongly) accepted: keep that small, so a
# regression shows up as a failed assertion rather than a long study. A case's own options come later
# and win (argparse keeps the last occurrence).
SMALL = ["--epochs", "1", "--train-size", "256", "--val-size", "128", "--test-size", "256", "--max-concurrent", "1"]
UNREACHABLE_PG = "postgresql+psycopg://u:p@127.0.0.1:1/db"
CASE_TIMEOUT_S = 90  # a fresh `hpstudy` imports torch, torchvision and Optuna first: 6-8 s on two idle cores


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    field: str  # the error line names this
    cwd: str = "fresh"  # "fresh": an empty directory; "ro": a read-only one
    absent: tuple[str, ...] = ()  # paths that must not exist afterwards


def run_case(*args, field, **kw) -> Case:
    return Case(("run", *args), field, **kw)


CASES: dict[str, Case] = {
    # --- storage URLs: malformed, unsupported, missing directories, not a database
    "storage sqlite:///:memory:": run_case("lenet5-sgd-lr-bs", "--storage", "sqlite:///:memory:", field="storage"),
    "mlflow in memory": run_case("lenet5-sgd-lr-bs", "--mlflow-tracking-uri", "sqlite:///:memory:",
                                 field="mlflow_tracking_uri"),
    "storage sqlite:/x.db": run_case("lenet5-sgd-lr-bs", "--storage", "sqlite:/x.db", field="storage",
                                     absent=("/x.db", "x.db")),
    "storage postgres//": run_case("lenet5-sgd-lr-bs", "--storage", "postgres//", field="storage"),
    "storage http://x": run_case("lenet5-sgd-lr-bs", "--storage", "http://x", field="storage"),
    "storage sqlite in a missing dir": run_case("lenet5-sgd-lr-bs", "--storage", "sqlite:////nonexistent/dir/x.db",
                                                field="storage", absent=("/nonexistent",)),
    "storage journal in a missing dir": run_case("lenet5-sgd-lr-bs", "--storage", "journal:///nonexistent/dir/x.log",
                                                 field="storage", absent=("/nonexistent",)),
    "storage sqlite without a file name": run_case("lenet5-sgd-lr-bs", "--storage", "sqlite:///", field="storage"),
    "storage is a directory": run_case("lenet5-sgd-lr-bs", "--storage", "sqlite:///{elsewhere}", field="storage"),
    "storage is not a database": run_case("lenet5-sgd-lr-bs", "--storage", "sqlite:///{junk}", field="storage"),
    # --- unreachable servers
    "unreachable postgres": run_case("lenet5-sgd-lr-bs", "--storage", UNREACHABLE_PG, field="storage"),
    "unreachable ray head": run_case("lenet5-sgd-lr-bs", "--ray-address", "127.0.0.1:1", field="ray_address"),
    "unreachable mlflow server": run_case("lenet5-sgd-lr-bs", "--data-dir", "{data}", *SMALL,
                                          "--mlflow-tracking-uri", "http://127.0.0.1:1",
                                          field="mlflow_tracking_uri"),
    "mlflow store in a read-only dir": run_case("lenet5-sgd-lr-bs", "--data-dir", "{data}", *SMALL,
                                                "--mlflow-tracking-uri", "sqlite:///{ro}/mlflow.db",
                                                field="mlflow_tracking_uri"),
    # --- unknown names
    "unknown definition": run_case("no-such-study", field="definition"),
    "unknown sampler": run_case("lenet5-sgd-lr-bs", "--sampler", "cmaes", field="sampler"),
    "unknown pruner": run_case("lenet5-sgd-lr-bs", "--pruner", "asha", field="pruner"),
    "continuing a study that does not exist": run_case("--study-name", "nope", field="definition"),
    # --- out-of-range numbers
    "n-trials 0": run_case("lenet5-sgd-lr-bs", "--n-trials", "0", field="n_trials"),
    "epochs 0": run_case("lenet5-sgd-lr-bs", "--epochs", "0", field="epochs"),
    "cpus-per-trial 0": run_case("lenet5-sgd-lr-bs", "--cpus-per-trial", "0", field="cpus_per_trial"),
    "max-concurrent 0": run_case("lenet5-sgd-lr-bs", "--max-concurrent", "0", field="max_concurrent"),
    "train-size 0": run_case("lenet5-sgd-lr-bs", "--data-dir", "{data}", "--train-size", "0", field="train_size"),
    # A define-by-run space: its point is drawn in memory for the checks, without Optuna's line about that.
    "tpe study, train-size above the data": run_case("lenet5-tpe", "--data-dir", "{data}", "--n-trials", "2",
                                                     "--train-size", "99999", field="train_size"),
    "checkpoint-every-s -1": run_case("lenet5-sgd-lr-bs", "--data-dir", "{data}", "--checkpoint-every-s", "-1",
                                      field="checkpoint_every_s"),
    "gpus on a machine without one": run_case("lenet5-sgd-lr-bs", "--gpus-per-trial", "1", field="gpus_per_trial"),
    # --- an empty search space: the only way to write one on the command line is an empty seed list
    # (definitions and their spaces are built in; a grid always has at least one point)
    "empty seed list": run_case("lenet5-sgd-lr-bs", "--seeds", "", field="--seeds"),
    # --- data and directories
    "dataset missing offline": run_case("simple-cnn-optimizers", "--data-dir", "{empty}", field="cifar10"),
    "read-only workdir": run_case("lenet5-sgd-lr-bs", "--data-dir", "{data}", *SMALL, "--workdir", "{ro}/runs",
                                  field="workdir"),
    "read-only working directory": run_case("lenet5-sgd-lr-bs", "--data-dir", "{data}", *SMALL,
                                            field="storage", cwd="ro"),
    # --- hpstudy train (what tests/test_cli.py does not cover)
    "train: read-only --out": Case(("train", "--dataset", "synthetic", "--model", "mlp", "--epochs", "1",
                                    "--out", "{ro}/run"), field="out"),
    "train: default out in a read-only working directory": Case(
        ("train", "--dataset", "synthetic", "--model", "mlp", "--epochs", "1"), field="out", cwd="ro"),
    "train: train-size 0": Case(("train", "--dataset", "synthetic", "--train-size", "0"), field="train_size"),
    "train: cifar10 missing offline": Case(("train", "--dataset", "cifar10", "--model", "simple_cnn",
                                            "--data-dir", "{empty}"), field="cifar10"),
    "train: malformed --model-arg": Case(("train", "--model-arg", "=3"), field="--model-arg"),
    # --- hpstudy report / compare
    "report: no such study": Case(("report", "--study-name", "nope", "--out", "report"), field="study-name"),
    "report: malformed storage": Case(("report", "--study-name", "a", "--storage", "http://x", "--out", "report"),
                                      field="storage"),
    "report: unreachable postgres": Case(("report", "--study-name", "a", "--storage", UNREACHABLE_PG,
                                          "--out", "report"), field="storage"),
    "report: read-only --out": Case(("report", "--study-name", "a", "--storage", "{studies}", "--out", "{ro}/report"),
                                    field="out"),
    "compare: no such study": Case(("compare", "--study-name", "a", "nope", "--storage", "{studies}"),
                                   field="study-name"),
    # `compare --help` says "two or more studies"
    "compare: one study": Case(("compare", "--study-name", "a", "--storage", "{studies}", "--by", "lr"),
                               field="study-name"),
    "compare: --by a parameter not searched": Case(("compare", "--study-name", "a", "b", "--storage", "{studies}",
                                                    "--by", "momentum"), field="by"),
}


@dataclass
class Outcome:
    code: int | None
    stdout: str
    stderr: str
    elapsed: float
    cwd: Path
    dirs: dict[str, Path]
    before: dict[str, str]  # fingerprints of the directories and files a case names


def _fingerprint(path: Path) -> str:
    if not path.exists():
        return "absent"
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return repr(sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*")))


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "HPSTUDY_DATA_DIR", "HPSTUDY_STORAGE")}
    env["HOME"] = str(home)  # the default data dir and any cache live outside the working directory
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.fixture(scope="module")
def read_only_dir(tmp_path_factory):
    """An empty directory nobody can write to, root included: a read-only tmpfs when this process may
    mount (root in a container), else an immutable directory (chattr +i), else mode 0555 for a non-root
    user. Root ignores permission bits, so mode 0555 alone would test nothing. None when root can do
    neither."""
    path = tmp_path_factory.mktemp("read-only")
    undo = None
    if os.geteuid() != 0:
        path.chmod(0o555)
        undo = lambda: path.chmod(0o755)  # noqa: E731
    elif subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)],
                        capture_output=True).returncode == 0:
        undo = lambda: subprocess.run(["umount", str(path)], check=True)  # noqa: E731
    elif subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        undo = lambda: subprocess.run(["chattr", "-i", str(path)], check=True)  # noqa: E731
    if undo is None or os.access(path, os.W_OK):
        if undo:
            undo()
        yield None  # the cases that need it are skipped, the others run
        return
    yield path
    undo()


@pytest.fixture(scope="module")
def studies_db(tmp_path_factory) -> Path:
    """Two existing studies, "a" and "b", each with one finished trial that searched lr."""
    path = tmp_path_factory.mktemp("studies") / "studies.db"
    for name in ("a", "b"):
        study = optuna.create_study(study_name=name, storage=f"sqlite:///{path}", direction="maximize")
        study.optimize(lambda t: t.suggest_float("lr", 1e-3, 1e-1, log=True), n_trials=1)
    return path


@pytest.fixture(scope="module")
def staged_data(data_dir) -> str:
    # Stage mnist-small once here, so concurrent cases never race to unpack it.
    from hpstudy.trainables.datasets import load_split

    load_split("mnist-small", True, data_dir)
    return data_dir


def _selected_cases(request) -> list[str]:
    return [item.callspec.params["case"] for item in request.session.items
            if item.module is request.module and hasattr(item, "callspec") and "case" in item.callspec.params]


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory, read_only_dir, studies_db, staged_data) -> dict[str, Outcome | None]:
    home = tmp_path_factory.mktemp("home")
    junk = tmp_path_factory.mktemp("junk") / "not-a-database.db"
    junk.write_bytes(b"this is not an SQLite file\n" * 100)

    def one(name: str) -> Outcome | None:
        case = CASES[name]
        if read_only_dir is None and (case.cwd == "ro" or any("{ro}" in a for a in case.args)):
            return None
        root = tmp_path_factory.mktemp("case")
        dirs = {"empty": root / "empty", "elsewhere": root / "elsewhere", "cwd": root / "cwd"}
        for d in dirs.values():
            d.mkdir()
        cwd = read_only_dir if case.cwd == "ro" else dirs["cwd"]
        values = {"data": staged_data, "empty": dirs["empty"], "elsewhere": dirs["elsewhere"],
                  "ro": read_only_dir, "studies": f"sqlite:///{studies_db}", "junk": junk}
        args = [a.format(**values) for a in case.args]
        watched = {**{k: v for k, v in dirs.items() if k != "cwd"}, "studies": studies_db, "junk": junk,
                   **({"ro": read_only_dir} if read_only_dir else {})}
        before = {k: _fingerprint(p) for k, p in watched.items()}
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "hpstudy", *args], cwd=cwd, env=_env(home),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=CASE_TIMEOUT_S)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # with anything it started (a Ray it should not have)
            out, err = proc.communicate()
            code = None
        elapsed = time.perf_counter() - started
        return Outcome(code, out, err, elapsed, cwd, {**watched, "cwd": cwd}, before)

    names = _selected_cases(request)
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(names, pool.map(one, names)))


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, outcomes):
    spec, got = CASES[case], outcomes[case]
    if got is None:
        pytest.skip("running as root where no read-only directory can be made (no mount, no chattr)")
    if case == "gpus on a machine without one" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    shown = f"exit {got.code} after {got.elapsed:.1f}s\nstdout: {got.stdout[-1500:]}\nstderr: {got.stderr[-3000:]}"
    assert got.code is not None, f"still running after {CASE_TIMEOUT_S}s; killed\n{shown}"
    assert got.code == 2, shown
    lines = got.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("hpstudy: error: "), shown
    assert spec.field in lines[0].removeprefix("hpstudy: error: "), shown
    assert got.stdout == "", shown
    # Nothing written: the working directory is empty, every named directory and file is as it was.
    assert sorted(p.name for p in got.cwd.iterdir()) == [], shown
    after = {k: _fingerprint(p) for k, p in got.dirs.items() if k in got.before}
    assert after == got.before, shown
    for path in spec.absent:
        assert not (got.cwd / path).exists(), f"{path} was created\n{shown}"


UNREACHABLE = {
    "storage": dict(storage=UNREACHABLE_PG),
    "ray_address": dict(ray_address="127.0.0.1:1"),
    "mlflow_tracking_uri": dict(mlflow_tracking_uri="http://127.0.0.1:1"),
}


@pytest.mark.parametrize("field", UNREACHABLE)
def test_unreachable_server_is_refused_within_seconds(field, tmp_path, monkeypatch, staged_data):
    """Timed in-process, where the imports are done (a fresh process's start-up is mostly torch): the
    check that finds a dead server must not wait for minutes (retries, back-off, ray.init's own wait)."""
    from hpstudy.studies.runner import RunSettings, plan_run
    from hpstudy.trainables.config import ConfigError

    monkeypatch.chdir(tmp_path)
    settings = RunSettings(**{"definition": "lenet5-sgd-lr-bs", "storage": f"sqlite:///{tmp_path}/hpstudy.db",
                              "mlflow_tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "data_dir": staged_data,
                              "epochs": 1, "overrides": {"train_size": 256, "val_size": 128, "test_size": 256},
                              **UNREACHABLE[field]})
    started = time.perf_counter()
    with pytest.raises(ConfigError) as raised:
        plan_run(settings)
    elapsed = time.perf_counter() - started
    assert raised.value.field == field, str(raised.value)
    assert elapsed < 10, f"took {elapsed:.1f}s to refuse {UNREACHABLE[field]}"  # 5 s probes, data read once
    assert list(tmp_path.iterdir()) == []


def test_grid_larger_than_n_trials_warns_and_runs(tmp_path, data_dir):
    """Not an error: one warning line with the number of grid points that will not run, then the study."""
    env = _env(tmp_path / "home")
    # A Ray temp dir of its own: `ray.init()` without an address joins a cluster that `ray start`
    # left on this machine (found through /tmp/ray/ray_current_cluster) instead of starting one.
    ray_tmp = tempfile.mkdtemp(prefix="hpf-", dir="/tmp")  # short: Ray's socket paths are length-limited
    env["RAY_TMPDIR"] = ray_tmp
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "hpstudy", "run", "lenet5-sgd-lr-bs", "--epochs", "1", "--train-size", "200",
             "--val-size", "100", "--test-size", "100", "--n-trials", "1", "--max-concurrent", "1",
             "--data-dir", data_dir], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("hpstudy: warning:")]
    assert warnings == ["hpstudy: warning: the grid has 6 points; --n-trials 1 leaves 5 of them unrun"], proc.stderr
    study = optuna.load_study(study_name="lenet5-sgd-lr-bs", storage=f"sqlite:///{tmp_path}/hpstudy.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    assert "Best trial" in proc.stdout
