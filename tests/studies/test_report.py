"""The study report, on real Optuna SQLite studies built trial by trial (no training)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hpstudy.studies.report import (best_trial_summary, edge_warnings, log_report_to_mlflow, results_table,
                                    trials_frame, write_report)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = ("curves.png", "best_confusion.png", "importances.png", "progress.png")
CLASSES = ["cat", "dog", "bird"]
# Grid studies search numbers as categorical choices (GridSampler); random/TPE ones as ranges.
GRID = {"lr": CategoricalDistribution([0.001, 0.01, 0.1]), "batch_size": CategoricalDistribution([32, 64]),
        "seed": IntDistribution(0, 9)}
RANGES = {"lr": FloatDistribution(1e-4, 1.0, log=True), "optimizer": CategoricalDistribution(["sgd", "adam"]),
          "seed": IntDistribution(0, 9)}
DIVERGED = "diverged: loss=8175 exceeds 10 x the first loss 2.313 at step 2"
PRUNED = "pruned by MedianPruner at epoch 2: val_acc 0.31"


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> str:
    """One SQLite file for the module's studies (each test its own study name): creating the schema
    once saves about a second per test."""
    return f"sqlite:///{tmp_path_factory.mktemp('optuna')}/s.db"


def make_study(storage: str, name: str, table=("lr", "batch_size"), mlflow=None, direction="maximize"):
    study = optuna.create_study(storage=storage, study_name=name, direction=direction)
    study.set_user_attr("hpstudy", {
        "definition": f"{name}-definition", "table": list(table) if table else None, "metric": "val_acc",
        "direction": direction, "settings": {"sampler": "grid", "pruner": "median", "epochs": 3, "seeds": [0]},
        "mlflow": mlflow})
    return study


def history(best: float, epochs: int, loss: float = 1.0) -> list[dict]:
    """Val accuracy rising to `best` at the last epoch, so the best over epochs is `best`."""
    return [{"epoch": e, "train_loss": loss / e, "train_acc": best * e / epochs + 0.01, "val_loss": loss / e + 0.1,
             "val_acc": best * e / epochs, "lr": 0.01, "epoch_time_s": 1.0, "images_per_s": 800.0}
            for e in range(1, epochs + 1)]


def held_out(acc: float) -> dict:
    return {"test_loss": 0.25, "test_acc": acc, "precision": [0.9, 0.8, 0.7], "recall": [0.85, 0.75, 0.65],
            "f1": [0.874, 0.774, 0.674], "support": [10, 12, 8],
            "confusion_matrix": [[9, 1, 0], [2, 9, 1], [0, 3, 5]]}


def add(study, params: dict, value: float | None = None, *, dists=GRID, epochs: int = 3, status: str = "completed",
        reason: str = "", state: TrialState = TrialState.COMPLETE, test_acc: float | None = None):
    hist = history(value if value is not None else 0.3, epochs, loss=8175.0 if status == "diverged" else 1.0)
    attrs = {"history": hist, "status": status, "reason": reason, "classes": CLASSES}
    if state == TrialState.COMPLETE:
        attrs["test"] = held_out(test_acc if test_acc is not None else value - 0.005)
    study.add_trial(create_trial(
        params=params, distributions={k: dists[k] for k in params}, state=state,
        value=value if state == TrialState.COMPLETE else None,
        intermediate_values={h["epoch"]: h["val_acc"] for h in hist}, user_attrs=attrs))


def table_lines(table: str) -> list[str]:
    return [line for line in table.splitlines() if line.startswith("|")]


GRID_VALUES = {(0.001, 32): 0.9012, (0.001, 64): 0.8875, (0.01, 32): 0.9634, (0.01, 64): 0.9588,
               (0.1, 32): 0.9812, (0.1, 64): 0.9701}


@pytest.fixture(scope="module")
def grid_study(storage):
    study = make_study(storage, "grid")
    for (lr, bs), value in GRID_VALUES.items():
        add(study, {"lr": lr, "batch_size": bs, "seed": 0}, value)
    return study


@pytest.fixture(scope="module")
def failures_study(storage):
    """A 3x2 lr x batch_size grid with a pruned cell, a diverged cell, a cell where one of two seeds
    diverged, a running trial and an empty cell."""
    study = make_study(storage, "failures")
    add(study, {"lr": 0.001, "batch_size": 32, "seed": 0}, 0.90)
    add(study, {"lr": 0.001, "batch_size": 64, "seed": 0}, state=TrialState.PRUNED, status="pruned", reason=PRUNED,
        epochs=2)
    add(study, {"lr": 0.01, "batch_size": 32, "seed": 0}, 0.95)
    add(study, {"lr": 0.1, "batch_size": 32, "seed": 0}, 0.96)
    for params in ({"lr": 0.1, "batch_size": 32, "seed": 1}, {"lr": 0.1, "batch_size": 64, "seed": 0},
                   {"lr": 0.1, "batch_size": 64, "seed": 1}):
        add(study, params, state=TrialState.PRUNED, status="diverged", reason=DIVERGED, epochs=1)
    study.add_trial(create_trial(state=TrialState.RUNNING, params={"lr": 0.01, "batch_size": 64, "seed": 0},
                                 distributions={k: GRID[k] for k in ("lr", "batch_size", "seed")}))
    return study


@pytest.fixture(scope="module")
def failures_report(failures_study, tmp_path_factory) -> tuple[Path, list[Path]]:
    """Its report, written once for the tests that read it (the figures take about a second)."""
    out = tmp_path_factory.mktemp("out") / "report"
    return out, write_report(failures_study, out)


def test_grid_table_cells_best_trial_and_edge_warning(grid_study):
    table = results_table(grid_study)
    assert table_lines(table) == [
        "| lr \\ batch_size | 32 | 64 |",
        "|---|---|---|",
        "| 0.001 | 90.12 | 88.75 |",
        "| 0.01 | 96.34 | 95.88 |",
        "| 0.1 | 98.12 | 97.01 |",
    ]
    assert "best validation accuracy over epochs, %" in table
    assert "±" not in table  # one trial per cell: no mean, no footnote

    summary = best_trial_summary(grid_study)
    assert "#4" in summary and "98.12" in summary and "lr=0.1 batch_size=32 seed=0" in summary
    assert "97.62" in summary  # its test accuracy

    # lr (3 values) sits at its upper edge; batch_size has only 2 values; seed never warns.
    assert edge_warnings(grid_study) == [
        "best lr=0.1 is at the upper edge of the searched range [0.001, 0.1]: the optimum may lie beyond it"]


def test_no_table_rows_best_first(storage):
    study = make_study(storage, "configs", table=None)
    for (lr, bs), value in GRID_VALUES.items():
        add(study, {"lr": lr, "batch_size": bs, "seed": 0}, value)
    rows = table_lines(results_table(study))
    assert rows[0] == ("| lr | batch_size | best val acc, % (mean ± std over seeds) | test acc, % | trials "
                       "| states |")
    assert [r.split(" | ")[:3] for r in rows[2:]] == [
        ["| 0.1", "32", "98.12"], ["| 0.1", "64", "97.01"], ["| 0.01", "32", "96.34"],
        ["| 0.01", "64", "95.88"], ["| 0.001", "32", "90.12"], ["| 0.001", "64", "88.75"]]


def test_no_table_mean_std_over_seeds_and_minimize(storage):
    study = make_study(storage, "seeds", table=None)
    for seed, (sgd, adam) in enumerate([(0.90, 0.95), (0.92, 0.97)]):
        add(study, {"lr": 0.05, "optimizer": "sgd", "seed": seed}, sgd, dists=RANGES, test_acc=sgd)
        add(study, {"lr": 0.001, "optimizer": "adam", "seed": seed}, adam, dists=RANGES, test_acc=adam)
    add(study, {"lr": 0.5, "optimizer": "sgd", "seed": 0}, None, dists=RANGES, state=TrialState.PRUNED,
        status="pruned", reason=PRUNED, epochs=2)
    rows = table_lines(results_table(study))
    assert rows[0].startswith("| lr | optimizer | best val acc")  # seed is averaged over, not a column
    assert rows[2:] == ["| 0.001 | adam | 96.00 ± 1.00 | 96.00 ± 1.00 | 2 | 2 completed |",
                        "| 0.05 | sgd | 91.00 ± 1.00 | 91.00 ± 1.00 | 2 | 2 completed |",
                        "| 0.5 | sgd | pruned | — | 1 | 1 pruned |"]
    # Ranges searched as distributions warn too; 3 distinct lr values, the best (0.001) is the lowest.
    assert edge_warnings(study) == [
        "best lr=0.001 is at the lower edge of the searched range [0.001, 0.5]: the optimum may lie beyond it"]

    low = make_study(storage, "minimize", table=None, direction="minimize")
    add(low, {"lr": 0.05, "optimizer": "sgd", "seed": 0}, 0.2, dists=RANGES)
    add(low, {"lr": 0.001, "optimizer": "adam", "seed": 0}, 0.1, dists=RANGES)
    assert table_lines(results_table(low))[2].startswith("| 0.001 | adam | 10.00")


def test_repeated_seeds_give_mean_std_cells(storage):
    study = make_study(storage, "repeats")
    for seed, value in enumerate([0.97, 0.98, 0.99]):
        add(study, {"lr": 0.01, "batch_size": 32, "seed": seed}, value)
    for seed, value in enumerate([0.95, 0.96]):
        add(study, {"lr": 0.01, "batch_size": 64, "seed": seed}, value)
    # An interrupted trial the runner re-queued (its rerun is the 0.93 one) is not counted as a failure.
    study.add_trial(create_trial(state=TrialState.FAIL, params={"lr": 0.1, "batch_size": 32, "seed": 0},
                                 distributions={k: GRID[k] for k in ("lr", "batch_size", "seed")},
                                 user_attrs={"status": "failed", "reason": "interrupted", "requeued_as": 7}))
    add(study, {"lr": 0.1, "batch_size": 32, "seed": 0}, 0.93)
    table = results_table(study)
    assert table_lines(table)[2:] == ["| 0.01 | 98.00 ± 0.82 | 95.50 ± 0.50 |", "| 0.1 | 93.00 | — |"]
    footnote = next(line for line in table.splitlines() if line.startswith("Cells over several trials"))
    assert "(which differ in seed)" in footnote
    assert "n per cell: lr=0.01, batch_size=32: 3; lr=0.01, batch_size=64: 2; other cells: 1." in footnote


def test_pruned_and_diverged_cells_and_reasons(failures_study, failures_report):
    table = results_table(failures_study)
    assert table_lines(table)[2:] == ["| 0.001 | 90.00 | pruned |", "| 0.01 | 95.00 | running |",
                                      "| 0.1 | 96.00 | diverged |"]
    assert "lr=0.1, batch_size=32: 1 (+1 diverged)" in table

    frame = trials_frame(failures_study)
    assert [r["status"] for r in frame] == ["completed", "pruned", "completed", "completed", "diverged",
                                            "diverged", "diverged", "running"]
    assert frame[1] == {"number": 1, "state": "PRUNED", "status": "pruned", "reason": PRUNED, "lr": 0.001,
                        "batch_size": 64, "seed": 0, "value": None, "test_acc": None, "epochs_run": 2}
    assert frame[7]["state"] == "RUNNING" and frame[7]["epochs_run"] == 0

    report = (failures_report[0] / "report.md").read_text()
    failures = report.split("## Pruned, diverged and failed trials")[1].split("## All trials")[0]
    assert PRUNED in failures and DIVERGED in failures
    assert len(table_lines(failures)) == 2 + 4  # header, rule, 1 pruned and 3 diverged trials
    assert "| 7 | RUNNING | running | 0.01 | 64 | 0 | — | — | 0 |" in report


def test_write_report_writes_figures_and_tables(failures_report):
    out, files = failures_report
    assert [p.name for p in files] == ["report.md", *FIGURES]
    for name in FIGURES:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000, name
    report = (out / "report.md").read_text()
    assert report.startswith("# Study `failures`: failures-definition")
    assert "| lr \\ batch_size | 32 | 64 |\n|---|---|---|\n| 0.001 | 90.00 | pruned |" in report
    assert "| class | precision | recall | F1 | support |" in report
    assert "| dog | 0.800 | 0.750 | 0.774 | 12 |" in report
    for name in FIGURES:
        assert f"]({name})" in report
    assert "- best lr=0.1 is at the upper edge of the searched range [0.001, 0.1]" in report


def test_importances_skipped_with_a_single_trial(storage, tmp_path):
    study = make_study(storage, "single")
    add(study, {"lr": 0.01, "batch_size": 32, "seed": 0}, 0.95)
    files = write_report(study, tmp_path / "single")
    assert [p.name for p in files] == ["report.md", "curves.png", "best_confusion.png", "progress.png"]
    report = (tmp_path / "single" / "report.md").read_text()
    assert "Parameter importances: not drawn (needs at least 2 complete trials; the study has 1)." in report
    assert "## Edge warnings\n\nnone" in report


@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")  # inside mlflow's store
def test_log_report_to_mlflow(storage, failures_study, failures_report, tmp_path):
    from mlflow import MlflowClient

    _, files = failures_report
    assert log_report_to_mlflow(failures_study, files) is False  # no mlflow info in the study

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("report-test", artifact_location=str(tmp_path / "artifacts"))
    parent = client.create_run(experiment_id).info.run_id
    study = make_study(storage, "logged", mlflow={"tracking_uri": uri, "experiment_id": experiment_id,
                                                  "parent_run_id": parent})
    assert log_report_to_mlflow(study, files) is True
    logged = {Path(a.path).name for a in client.list_artifacts(parent, "report")}
    assert logged == {"report.md", *FIGURES}
    assert len(client.search_runs([experiment_id])) == 1  # no run was started


def test_comparison_table_puts_studies_side_by_side(tmp_path, capsys):
    from hpstudy.studies.report import comparison_table

    storage = f"sqlite:///{tmp_path}/cmp.db"
    studies = []
    for definition, values in (("mlp-optimizers", {"sgd": 0.90, "adam": 0.95}),
                               ("simple-cnn-optimizers", {"sgd": 0.60, "adam": 0.70})):
        study = optuna.create_study(storage=storage, study_name=definition, direction="maximize")
        study.set_user_attr("hpstudy", {"definition": definition, "metric": "val_acc", "direction": "maximize"})
        for optimizer, value in values.items():
            study.add_trial(optuna.trial.create_trial(
                params={"optimizer": optimizer}, value=value,
                distributions={"optimizer": optuna.distributions.CategoricalDistribution(["sgd", "adam"])}))
        studies.append(study)
    table = comparison_table(studies, "optimizer")
    assert "| optimizer \\ study | mlp (mnist-small) | simple_cnn (cifar10) |" in table
    assert "| adam | 95.00 | 70.00 |" in table and "| sgd | 90.00 | 60.00 |" in table
    with pytest.raises(ValueError, match="did not search 'lr'"):
        comparison_table(studies, "lr")
    # The CLI takes the studies after one flag or with the flag repeated, as optuna's CLI users write it.
    from hpstudy.cli import main

    for names in (["--study-name", "mlp-optimizers", "simple-cnn-optimizers"],
                  ["--study-name", "mlp-optimizers", "--study-name", "simple-cnn-optimizers"]):
        assert main(["compare", *names, "--storage", storage]) == 0
        assert capsys.readouterr().out.strip() == table.strip()
