"""One line in the terminal whenever a trial ends: done / running / pruned / failed, and the best so far."""

from __future__ import annotations

from optuna.trial import TrialState
from ray.tune.callback import Callback

from hpstudy.studies.definition import superseded
from hpstudy.studies.optuna_tune import StudyBridge


class ProgressPrinter(Callback):
    def __init__(self, bridge: StudyBridge):
        self.bridge = bridge

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._print(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._print(trial)

    def _print(self, trial) -> None:
        print(progress_line(self.bridge, int(trial.config["optuna_trial_number"])), flush=True)


def progress_line(bridge: StudyBridge, number: int) -> str:
    study = bridge.study
    trials = study.get_trials(deepcopy=False)
    counts = {state: 0 for state in TrialState}
    for t in trials:
        if not superseded(t):
            counts[t.state] += 1
    done = counts[TrialState.COMPLETE] + counts[TrialState.PRUNED] + counts[TrialState.FAIL]
    this = trials[number]
    outcome = this.state.name.lower() if this.value is None else f"{this.state.name.lower()} {this.value:.4f}"
    reason = this.user_attrs.get("reason")
    line = (f"[{done}/{bridge.target} done: {counts[TrialState.COMPLETE]} complete, "
            f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed; "
            f"{counts[TrialState.RUNNING]} running] trial {number} {_params(this.params)}: {outcome}")
    if reason:
        line += f" ({reason})"
    try:
        best = study.best_trial
        line += f" | best {best.value:.4f} (trial {best.number})"
    except ValueError:
        pass  # no completed trial yet
    return line


def _params(params: dict) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
