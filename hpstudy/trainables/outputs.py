"""Files a finished run leaves behind: history CSV, learning curves, per-class table, result JSON."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from hpstudy.pyplot import pyplot

HISTORY_FIELDS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s",
                  "images_per_s")


def write_history_csv(history: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(history)


def plot_curves(history: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Train/val loss and accuracy against epoch, side by side, in one PNG."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    # Fixed margins: tight_layout costs a third of the time per figure, and every trial draws one.
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.85 if title else 0.9, wspace=0.22)
    for split in ("train", "val"):
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], marker=".", label=split)
        ax_acc.plot(epochs, [h[f"{split}_acc"] for h in history], marker=".", label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def per_class_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    test = result["test"]
    return [{"class": name, "precision": test["precision"][i], "recall": test["recall"][i],
             "f1": test["f1"][i], "support": test["support"][i]} for i, name in enumerate(result["classes"])]


def write_per_class_csv(result: dict[str, Any], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=("class", "precision", "recall", "f1", "support"))
        writer.writeheader()
        writer.writerows(per_class_rows(result))


def write_confusion_csv(result: dict[str, Any], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *result["classes"]])
        for name, row in zip(result["classes"], result["test"]["confusion_matrix"]):
            writer.writerow([name, *row])


def write_run_outputs(result: dict[str, Any], out: Path, curves: bool = True) -> list[Path]:
    """All of a run's files in ``out``; returns their paths. ``curves=False`` skips the PNG: a study's
    trials leave it out, since MLflow charts every trial's epochs itself and the study report draws all
    trials in one figure, and matplotlib takes about 0.3 s per figure here, a third of a short trial's
    overhead (bench/service_overhead.py)."""
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = {name: out / name for name in ("history.csv", "curves.png", "per_class.csv",
                                            "confusion_matrix.csv", "result.json")}
    write_history_csv(result["history"], files["history.csv"])
    if result["history"] and curves:
        cfg = result["config"]
        plot_curves(result["history"], files["curves.png"],
                    f"{cfg['model']} on {cfg['dataset']}, {cfg['optimizer']} lr={cfg['lr']:g} bs={cfg['batch_size']}")
    else:
        del files["curves.png"]  # not asked for, or diverged inside the first epoch: no curve to draw
    write_per_class_csv(result, files["per_class.csv"])
    write_confusion_csv(result, files["confusion_matrix.csv"])
    files["result.json"].write_text(json.dumps(result, indent=1))
    return list(files.values())
