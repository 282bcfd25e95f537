"""How long the `hpstudy` commands that train nothing take, each a fresh process as a user runs them:
`--help`, `studies`, `spaces`, `report` and `compare`, against two references timed in the same run,
alternating: the interpreter's own start (`python -c pass`) and a start that imports torch (`python -c
"import torch"`, which every one of these commands paid before session 16).

`report` and `compare` read a small study file made here with Optuna alone (two studies of two trials,
with the attributes `hpstudy run` writes); `report` draws its figures, as it does for a real study.

    python bench/cli_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna

from _common import machine, scratch_dir


def make_studies(storage: str) -> None:
    optimizer = optuna.distributions.CategoricalDistribution(["sgd", "adam"])
    for name, values in (("a", (0.90, 0.95)), ("b", (0.60, 0.70))):
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
        study.set_user_attr("hpstudy", {"definition": "mlp-optimizers", "metric": "val_acc", "direction": "maximize"})
        for choice, value in zip(("sgd", "adam"), values):
            study.add_trial(optuna.trial.create_trial(params={"optimizer": choice}, value=value,
                                                      distributions={"optimizer": optimizer},
                                                      user_attrs={"status": "completed"}))


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    elapsed = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command, alternating (default 5)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root = scratch_dir("hpstudy-cli-start-")
    storage = f"sqlite:///{root}/studies.db"
    make_studies(storage)
    hpstudy = str(Path(sys.executable).with_name("hpstudy"))
    commands = {
        "python -c pass (reference)": [sys.executable, "-c", "pass"],
        "python -c 'import torch' (reference)": [sys.executable, "-c", "import torch"],
        "hpstudy --help": [hpstudy, "--help"],
        "hpstudy studies": [hpstudy, "studies"],
        "hpstudy spaces": [hpstudy, "spaces"],
        "hpstudy report": [hpstudy, "report", "--study-name", "a", "--storage", storage, "--out", str(root / "report")],
        "hpstudy compare": [hpstudy, "compare", "--study-name", "a", "b", "--storage", storage],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.runs):
        for name, command in commands.items():
            times[name].append(timed(command, root))
    print(f"machine: {machine()}; {args.runs} runs of each, alternating; medians [min-max]")
    for name, values in times.items():
        print(f"  {name:38s} {statistics.median(values):5.2f} s [{min(values):.2f}-{max(values):.2f}]")
    bare, torch_start, help_ = (statistics.median(times[k]) for k in
                                ("python -c pass (reference)", "python -c 'import torch' (reference)", "hpstudy --help"))
    print(f"RESULT hpstudy --help {help_:.2f} s against the interpreter's own start {bare:.2f} s and a start that "
          f"imports torch {torch_start:.2f} s")


if __name__ == "__main__":
    main()
