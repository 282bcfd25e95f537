"""`hpstudy train` as a user runs it: good runs write their files, bad input writes nothing."""

import os
import subprocess
import sys

import optuna
import pytest

from hpstudy.cli import main

TINY = ["--dataset", "synthetic", "--model", "mlp", "--model-arg", "hidden=[16]", "--train-size", "128",
        "--val-size", "64", "--test-size", "64", "--batch-size", "32", "--epochs", "2", "--threads", "1"]


def run_cli(args, data_dir):
    return main(["train", *args, "--data-dir", data_dir])


BAD_INPUTS = {
    "unknown dataset": (["--dataset", "imagenet-22k"], "dataset: unknown dataset 'imagenet-22k' (choose from: mnist, mnist-small"),
    "unknown model": (["--model", "gpt2"], "model: unknown model 'gpt2' (choose from:"),
    "unknown optimizer": (["--optimizer", "lion"], "optimizer: unknown optimizer 'lion' (choose from: sgd, momentum"),
    "unknown scheduler": (["--scheduler", "poly"], "scheduler: unknown scheduler 'poly' (choose from: constant"),
    "unknown init": (["--init", "orthogonal"], "init: unknown init 'orthogonal' (choose from: default, xavier_uniform"),
    "lr zero": (["--lr", "0"], "lr: must be > 0 (got 0.0)"),
    "lr negative": (["--lr", "-0.1"], "lr: must be > 0"),
    "lr not a number": (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    "batch size zero": (["--batch-size", "0"], "batch_size: must be >= 1"),
    "batch size above training set": (["--dataset", "mnist-small", "--batch-size", "4001"],
                                      "batch_size: 4001 is larger than the training set (4000 images)"),
    "epochs zero": (["--epochs", "0"], "epochs: must be >= 1"),
    "val fraction one": (["--val-fraction", "1"], "val_fraction: must be inside (0, 1)"),
    "val fraction negative": (["--val-fraction", "-0.2"], "val_fraction: must be inside (0, 1)"),
    "model cannot take input": (["--dataset", "mnist-small", "--model", "vgg16"],
                                "model: model vgg16 needs inputs of at least 32x32"),
    "offline dataset missing": (["--dataset", "mnist", "--no-download"], "mnist: files missing in"),
    "unknown flag": (["--colour", "red"], "unrecognized arguments: --colour red"),
    "train size too big": (["--dataset", "mnist-small", "--train-size", "9000"], "train_size: 9000 is more than"),
    "momentum for adam": (["--optimizer", "adam", "--momentum", "0.9"], "momentum: not used by optimizer adam"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_nothing_written(case, tmp_path, capsys, data_dir):
    args, expected = BAD_INPUTS[case]
    out = tmp_path / "out"
    code = run_cli(["--out", str(out), *args], data_dir)
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if not line.startswith(("INFO", "WARNING"))]
    assert len(lines) == 1 and lines[0].startswith("hpstudy: error: "), err
    assert expected in lines[0]
    assert not out.exists()


def test_read_only_output_directory(tmp_path, capsys, data_dir):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):
        pytest.skip("running as a user who can write anywhere (root)")
    assert run_cli([*TINY, "--out", str(locked / "run")], data_dir) == 2
    assert "out: cannot write to" in capsys.readouterr().err


def test_output_path_below_a_file(tmp_path, capsys, data_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert run_cli([*TINY, "--out", str(blocker / "run")], data_dir) == 2
    assert "out: cannot write to" in capsys.readouterr().err
    assert blocker.read_text() == "x"


def test_run_writes_its_files_then_refuses_to_overwrite_then_resumes(tmp_path, capsys, data_dir):
    out = tmp_path / "run"
    assert run_cli([*TINY, "--out", str(out)], data_dir) == 0
    printed = capsys.readouterr().out
    assert printed.count("\nepoch ") == 2 and "test_acc" in printed
    for name in ("history.csv", "curves.png", "per_class.csv", "confusion_matrix.csv", "result.json"):
        assert (out / name).stat().st_size > 0
    assert len((out / "history.csv").read_text().splitlines()) == 3  # header + 2 epochs
    assert run_cli([*TINY, "--out", str(out)], data_dir) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert run_cli([*TINY[:-4], "--epochs", "3", "--threads", "1", "--out", str(out), "--resume"], data_dir) == 0
    printed = capsys.readouterr().out
    assert "epoch   3" in printed and "epoch   1" not in printed
    assert len((out / "history.csv").read_text().splitlines()) == 4


def test_console_command_end_to_end(tmp_path, data_dir):
    # The real entry point in a fresh process, as a user types it.
    proc = subprocess.run([sys.executable, "-m", "hpstudy", "train", *TINY, "--data-dir", data_dir,
                           "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "epoch   2" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "hpstudy", "train", "--lr", "-1", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.strip() == "hpstudy: error: lr: must be > 0 (got -1.0)"
    assert not (tmp_path / "x").exists()


def test_the_installed_executable_prints_everything_and_passes_its_exit_code_on(tmp_path, capsys):
    # `hpstudy` ends with os._exit after the atexit handlers (skipping the interpreter's teardown): all
    # output must still arrive, through a pipe too, and the exit code must be main()'s.
    executable = os.path.join(os.path.dirname(sys.executable), "hpstudy")
    assert main(["studies"]) == 0
    in_process = capsys.readouterr().out
    proc = subprocess.run([executable, "studies"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == in_process and len(in_process.splitlines()) > 5
    bad = subprocess.run([executable, "run", "no-such-study"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("hpstudy: error: ") and len(bad.stderr.splitlines()) == 1


def test_the_executable_waits_for_a_running_non_daemon_thread(tmp_path):
    # A thread the interpreter would wait for (an executor left open) must finish: the quick exit is
    # skipped then.
    done = tmp_path / "done"
    code = ("import sys, threading\n"
            "from hpstudy.cli import command\n"
            # It ends once the main thread has ended, i.e. only in an interpreter's own exit.
            f"threading.Thread(target=lambda: (threading.main_thread().join(), open({str(done)!r}, 'w').close())).start()\n"
            "sys.argv = ['hpstudy', 'spaces']\n"
            "command()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert done.exists()


def test_commands_that_train_nothing_do_not_import_torch(tmp_path):
    # `--help`, `studies`, `spaces`, `report` and `compare` read definitions and studies only; importing
    # torch took 1.5 s of `hpstudy --help`'s 2 s (and `report` imported it through the runner's planning).
    storage = f"sqlite:///{tmp_path}/studies.db"
    for name, value in (("a", 0.9), ("b", 0.8)):
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
        study.set_user_attr("hpstudy", {"definition": "mlp-optimizers", "metric": "val_acc", "direction": "maximize"})
        study.add_trial(optuna.trial.create_trial(
            params={"optimizer": "sgd"}, value=value, user_attrs={"status": "completed"},
            distributions={"optimizer": optuna.distributions.CategoricalDistribution(["sgd", "adam"])}))
    code = ("import contextlib, io, sys\n"
            "from hpstudy.cli import main\n"
            f"for args in (['studies'], ['spaces'], ['report', '--study-name', 'a', '--storage', {storage!r}, '--out', "
            f"{str(tmp_path / 'report')!r}], ['compare', '--study-name', 'a', '--study-name', 'b', '--storage', {storage!r}]):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        assert main(args) == 0, args\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['--help'])\n"
            "print(sorted(name for name in ('torch', 'torchvision', 'ray') if name in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "[]"
    assert (tmp_path / "report" / "report.md").exists()
