"""One line in the terminal whenever a trial ends: done / running / pruned / failed, and the best so far."""

from __future__ import annotations

from optuna.study import StudyDirection
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
    # From the trials read above: study.best_trial would query the storage again, while Tune's event
    # loop (and so the next trial) waits. Ties go to the earliest trial, as in the report.
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        pick = max if study.direction == StudyDirection.MAXIMIZE else min
        best = pick(complete, key=lambda t: t.value)
        line += f" | best {best.value:.4f} (trial {best.number})"
    return line


def _params(params: dict) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
