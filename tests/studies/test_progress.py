"""The progress line printed as each trial ends: counts, the trial's outcome, the best so far."""

import optuna
import pytest
from optuna.trial import TrialState

from hpstudy.studies.optuna_tune import StudyBridge
from hpstudy.studies.progress import progress_line


@pytest.mark.parametrize("direction, best", [("maximize", "best 0.9000 (trial 1)"), ("minimize", "best 0.2000 (trial 0)")])
def test_progress_line_counts_and_best_so_far(direction, best):
    study = optuna.create_study(direction=direction)
    for value in (0.2, 0.9, 0.9):  # a tie: the earlier trial is the best, as in the report
        trial = study.ask()
        trial.suggest_float("lr", 0.001, 0.1)
        study.tell(trial, value)
    pruned = study.ask()
    pruned.set_user_attr("reason", "pruned by MedianPruner at epoch 1")
    study.tell(pruned, state=TrialState.PRUNED)
    study.ask()  # still running
    line = progress_line(StudyBridge(study=study, suggest=lambda t: {}, base={}, target=8), pruned.number)
    assert line.startswith("[4/8 done: 3 complete, 1 pruned, 0 failed; 1 running] trial 3 ")
    assert ": pruned (pruned by MedianPruner at epoch 1) | " in line
    assert line.endswith(best)


def test_progress_line_before_any_trial_completes_has_no_best():
    study = optuna.create_study()
    trial = study.ask()
    study.tell(trial, state=TrialState.FAIL)
    line = progress_line(StudyBridge(study=study, suggest=lambda t: {}, base={}, target=2), 0)
    assert line == "[1/2 done: 0 complete, 0 pruned, 1 failed; 0 running] trial 0 : fail"
