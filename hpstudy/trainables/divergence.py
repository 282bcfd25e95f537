"""Stop a run at the step it goes wrong, instead of after a wasted epoch (or a hundred)."""

from __future__ import annotations

import math
from collections import deque
from typing import Any


class DivergenceMonitor:
    """Watches per-step training loss and batch accuracy.

    Rules (a threshold of 0 disables its rule):
    - a non-finite loss stops at once;
    - loss above ``loss_factor`` x the first step's loss stops at once;
    - after ``chance_steps`` steps, if the last ``chance_steps`` batches are at chance accuracy
      (< 1.5 / num_classes) and their mean loss is not 1% below the first step's, the run has stalled
      (dead units, or an lr far too small to move in the trial's budget).

    Thresholds measured (see README, "Divergence"): healthy runs peaked at 3.3x their first loss
    (RMSprop lr 0.01 on LeNet-5, which then reaches 91%) and 5.1x (a BatchNorm CNN, SGD lr 0.05, then
    90%); Adam at lr 0.1 on the ReLU models jumps to >2000x at step 2. Hence the default factor 10. The tanh LeNet-5 saturates instead of exploding: Adam at
    lr 0.1 peaks at 2-3.8x and ends at 25-65% accuracy, which no loss rule can tell from RMSprop's
    early spike; an Optuna pruner stops it at the first epoch boundary.
    """

    def __init__(self, num_classes: int, loss_factor: float, chance_steps: int):
        self.num_classes = num_classes
        self.loss_factor = loss_factor
        self.chance_steps = chance_steps
        self.step = 0
        self.first_loss: float | None = None
        self._window: deque[tuple[float, float]] = deque(maxlen=max(1, chance_steps))

    def update(self, loss: float, correct: int, count: int) -> str | None:
        """Record one step; return the reason to stop, or None."""
        self.step += 1
        if not math.isfinite(loss):
            return f"diverged: loss={loss} at step {self.step}"
        if self.first_loss is None:
            self.first_loss = loss
        if self.loss_factor and loss > self.loss_factor * self.first_loss:
            return (f"diverged: loss={loss:.4g} exceeds {self.loss_factor:g} x the first loss "
                    f"{self.first_loss:.4g} at step {self.step}")
        if self.chance_steps:
            self._window.append((loss, correct / max(1, count)))
            if self.step >= self.chance_steps and len(self._window) == self.chance_steps:
                accuracy = sum(a for _, a in self._window) / len(self._window)
                mean_loss = sum(l for l, _ in self._window) / len(self._window)
                if accuracy < 1.5 / self.num_classes and mean_loss > 0.99 * self.first_loss:
                    return (f"stalled: accuracy {accuracy:.3f} at chance and loss {mean_loss:.4g} not "
                            f"below its start {self.first_loss:.4g} after step {self.step}")
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "first_loss": self.first_loss, "window": [list(w) for w in self._window]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        self.first_loss = state["first_loss"]
        self._window.clear()
        self._window.extend(tuple(w) for w in state["window"])
