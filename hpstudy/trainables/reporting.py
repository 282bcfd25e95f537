"""The one seam through which a training run reports: the same engine runs under Ray Tune, under a
plain Optuna objective and in ``hpstudy train``, each with its own Reporter."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

# The objective of every study: the best validation accuracy over a trial's epochs.
METRIC = "val_acc"
DIRECTION = "maximize"


class StopTrial(Exception):
    """Raised by a Reporter to end the run early (e.g. an Optuna pruner said so); carries the reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Reporter(Protocol):
    """What the engine calls. A reporter that subclasses this inherits ``check_stop`` (never stops)."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        """Once per epoch; ``checkpoint_dir`` once that epoch's checkpoint is on disk, None when none was due
        (``checkpoint_every_s``). With checks_per_epoch > 1 also inside
        each epoch, with ``partial`` set, no checkpoint, and val metrics of a validation sample. Every
        report has ``step``, its number counting all reports (the pruner's step). May raise StopTrial."""

    def finish(self, result: dict[str, Any]) -> None:
        """Once at the end, with the final result (status, reason, test metrics, history)."""

    def check_stop(self) -> None:
        """After every training step and before every validation batch and report: may end the run at once
        (a runner that stopped the trial while it trained on after its last report; it expects no further
        report). This default never does."""


class PrintReporter(Reporter):
    """One line per epoch on stdout, the way a classic training script prints."""

    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        if metrics.get("partial"):
            print(f"  check {metrics['step']:3d} (epoch {metrics['epoch']})  train_loss {metrics['train_loss']:.4f}  "
                  f"val_acc {metrics['val_acc']:.4f} (sample)", flush=True)
            return
        print(f"epoch {metrics['epoch']:3d}  train_loss {metrics['train_loss']:.4f}  "
              f"train_acc {metrics['train_acc']:.4f}  val_loss {metrics['val_loss']:.4f}  "
              f"val_acc {metrics['val_acc']:.4f}  lr {metrics['lr']:.3g}  "
              f"{metrics['epoch_time_s']:.2f}s  {metrics['images_per_s']:.0f} img/s", flush=True)

    def finish(self, result: dict[str, Any]) -> None:
        if result["status"] != "completed":
            print(f"stopped: {result['reason']}", flush=True)
        test = result.get("test")
        if test:
            print(f"test_loss {test['test_loss']:.4f}  test_acc {test['test_acc']:.4f}  "
                  f"params {result['param_count']:,}", flush=True)


class NullReporter(Reporter):
    def report(self, metrics: dict[str, Any], checkpoint_dir: Path | None) -> None:
        pass

    def finish(self, result: dict[str, Any]) -> None:
        pass
