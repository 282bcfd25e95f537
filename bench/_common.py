"""Helpers shared by the benchmarks: a cache folder, a scratch folder and the tabular benchmark of a grid.

The table trains every point of a grid once with the real engine and keeps each point's per-epoch
validation accuracy. The engine is deterministic (same config and seed, same history), so replaying a
point from the table gives exactly what a real trial would report, epoch by epoch.
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from hpstudy.trainables import Reporter, TrainConfig, train

BENCH = Path(__file__).resolve().parent
CACHE = BENCH / ".cache"


def cache_dir() -> Path:
    """bench/.cache/, ignored by git through its own .gitignore (as .pytest_cache does)."""
    CACHE.mkdir(exist_ok=True)
    ignore = CACHE / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# created by bench/_common.py\n*\n")
    return CACHE


def scratch_dir(prefix: str) -> Path:
    """A new temporary folder for one benchmark run, removed when the benchmark exits (on an error or
    Ctrl-C too): its studies' Ray, MLflow and checkpoint files take up to a GB per run.
    HPSTUDY_BENCH_KEEP=1 keeps it to look into."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.environ.get("HPSTUDY_BENCH_KEEP") != "1":
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def data_dir() -> str:
    return str(cache_dir() / "data")


def point_key(params: Mapping[str, Any]) -> str:
    return json.dumps({k: params[k] for k in sorted(params)}, sort_keys=True)


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


class StepRecorder(Reporter):
    """A Reporter that keeps every report's val_acc by its step (the pruner's view of a run)."""

    def __init__(self) -> None:
        self.val_acc: list[float] = []

    def report(self, metrics: dict[str, Any], checkpoint_dir) -> None:
        assert metrics["step"] == len(self.val_acc) + 1  # steps are 1, 2, 3, ... in order
        self.val_acc.append(metrics["val_acc"])

    def finish(self, result: dict[str, Any]) -> None:
        pass


def build_table(base: Mapping[str, Any], grid: Mapping[str, Sequence[Any]], threads: int,
                refresh: bool = False) -> dict[str, Any]:
    """Every grid point trained once (``base`` + point), cached as JSON keyed by the whole setting.

    Returns {"base", "grid", "torch", "seconds", "rows": {point_key: row}}; a row holds the point, the
    engine's status/reason, steps run and planned, steps per epoch, the per-epoch val_acc, and every
    report's val_acc by its step ("checks": the same as val_acc unless base sets checks_per_epoch).
    """
    # Threads are part of the key: the summation order, hence the last bits of every step, depends on them.
    setting = {"base": dict(base), "grid": {k: list(v) for k, v in grid.items()}, "threads": threads,
               "torch": torch.__version__}
    digest = hashlib.sha256(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"table-{digest}.json"
    if path.exists() and not refresh:
        table = json.loads(path.read_text())
        table["cached"] = str(path)
        return table
    rows: dict[str, Any] = {}
    started = time.perf_counter()
    for point in grid_points(grid):
        cfg = TrainConfig.from_dict({**base, **point, "threads": threads, "data_dir": data_dir(), "device": "cpu"})
        recorder = StepRecorder()
        result = train(cfg, recorder)
        rows[point_key(point)] = {
            "params": point, "status": result["status"], "reason": result["reason"],
            "steps": result["steps"], "steps_planned": result["steps_planned"],
            "steps_per_epoch": result["steps_planned"] // cfg.epochs,
            "val_acc": [h["val_acc"] for h in result["history"]],
            "checks": recorder.val_acc,
        }
    table = {**setting, "seconds": time.perf_counter() - started, "rows": rows}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(table, indent=1))
    os.replace(tmp, path)
    table["cached"] = None
    return table


def epochs_run(row: Mapping[str, Any]) -> float:
    """Epochs a point costs when run to its end: the engine's early stops count by steps run."""
    return row["steps"] / row["steps_per_epoch"]


def machine() -> str:
    return (f"{os.cpu_count()} CPUs, torch {torch.__version__}, load average "
            f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} at start (machine shared with other work)")
