"""Optuna drives, Ray Tune executes.

Ray's own OptunaSearch creates its study with a NopPruner, cannot take a grid, and keeps the study to
itself. Here the study lives in the user's storage and keeps its sampler and pruner:

- ``OptunaSearcher`` (a Tune Searcher) asks the study for each new trial (enqueued trials first, then
  the sampler: grid, TPE, random, QMC), and tells it the outcome;
- ``OptunaPruningScheduler`` (a Tune TrialScheduler) reports each epoch's value (and each check's
  inside an epoch) to the Optuna trial and asks the study's pruner; "prune" stops the Ray trial at
  once, freeing its worker.
Both share one ``StudyBridge`` holding the Ray-trial-id -> Optuna-trial map. Everything runs in the
driver process. Several drivers may share a study (PostgreSQL or journal storage): each creates its
trials under the study lock and tags them with its lease (see drivers.py), so counts and grid points
stay exact and a dead driver's trials are re-queued once.
"""

from __future__ import annotations

import contextlib
import json
import logging
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Callable

import optuna
from optuna.trial import TrialState
from ray.tune.callback import Callback
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from hpstudy.studies.definition import REQUEUED, superseded
from hpstudy.studies.drivers import DRIVER_ATTR, live_drivers
from hpstudy.studies.samplers import GRID_POINT
from hpstudy.studies.storage import set_trial_attrs
from hpstudy.trainables.config import ConfigError, TrainConfig
from hpstudy.trainables.reporting import METRIC
from hpstudy.trainables.trainable import RESUME_KEY

log = logging.getLogger(__name__)



@dataclass
class StudyBridge:
    study: optuna.Study
    suggest: Callable[[optuna.Trial], dict[str, Any]]
    base: dict[str, Any]  # fixed TrainConfig fields (dataset, model, epochs, threads, data_dir, ...)
    target: int  # trials the study should end with (grid size x seeds, or n_trials x seeds)
    repeat_seeds: tuple[int, ...] = ()  # non-grid samplers: queue each sampled configuration per seed
    lock: Any = field(default_factory=contextlib.nullcontext)  # storage.StudyLock shared with other drivers
    driver_id: str | None = None  # this driver's lease id, tagged on every trial it starts
    trials: dict[str, optuna.Trial] = field(default_factory=dict)  # Ray trial id -> Optuna trial
    histories: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)  # per epoch
    reported: dict[str, set[int]] = field(default_factory=dict)  # steps whose value Optuna holds, per trial
    prune_reasons: dict[str, str] = field(default_factory=dict)
    # Writes other callbacks make off Tune's thread that must land before a trial is told (e.g. its MLflow
    # run id: a told trial takes no more attributes).
    pending_writes: dict[str, list[futures.Future]] = field(default_factory=dict)

    def remaining(self, trials: list[optuna.trial.FrozenTrial] | None = None) -> int:
        """Trials still to start: the target minus trials that count (finished, running, queued).
        ``trials``: the study's trials, if the caller has just read them."""
        trials = self.study.get_trials(deepcopy=False) if trials is None else trials
        return self.target - sum(not superseded(t) for t in trials)

    def has_work(self, trials: list[optuna.trial.FrozenTrial] | None = None) -> bool:
        """A trial to start: the target is not reached, or a trial is queued (enqueued, re-queued)."""
        trials = self.study.get_trials(deepcopy=False) if trials is None else trials
        return self.remaining(trials) > 0 or any(t.state == TrialState.WAITING for t in trials)

    def running(self, mine: bool) -> list[int]:
        """Numbers of RUNNING trials of this driver (mine) or of the other drivers."""
        return [t.number for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if (t.user_attrs.get(DRIVER_ATTR) == self.driver_id) == mine]


class OptunaSearcher(Searcher):
    def __init__(self, bridge: StudyBridge):
        super().__init__()
        self.bridge = bridge

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # metric and direction come from the study

    # Tune's searcher snapshots are not needed: the Optuna storage holds the whole search state.
    def save(self, checkpoint_path: str) -> None:
        pass

    def restore(self, checkpoint_path: str) -> None:
        pass

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        bridge = self.bridge
        while True:
            with bridge.lock:  # counting and creating a trial must not interleave with other drivers
                # The trials are read once for both steps (each read costs Tune's loop, and so the next
                # trial, a few ms), and again only if dead drivers' trials were re-queued.
                trials = bridge.study.get_trials(deepcopy=False)
                if recover_interrupted(bridge.study, from_dead_drivers_besides=bridge.driver_id, trials=trials):
                    trials = bridge.study.get_trials(deepcopy=False)
                if not bridge.has_work(trials):
                    # Nothing to start now. Trials other drivers still run are waited for outside
                    # Tune (run_study), where no idle actor holds a CPU their trials may need.
                    return Searcher.FINISHED
                trial = bridge.study.ask()  # WAITING (enqueued) trials first, then the sampler
                # Both tags in one commit, through the storage: nothing reads them from `trial`'s cache.
                # (An invalid configuration's FAIL trial also keeps the id of the Tune trial that asked.)
                set_trial_attrs(bridge.study, trial._trial_id,
                                {DRIVER_ATTR: bridge.driver_id, "ray_trial_id": trial_id})
                params = bridge.suggest(trial)
                valid = self._check(trial, {**bridge.base, **params})
                if valid and bridge.repeat_seeds and "seed_of" not in trial.user_attrs:
                    # A freshly sampled configuration: the same configuration runs once per other seed.
                    for seed in bridge.repeat_seeds:
                        if seed != params["seed"]:
                            bridge.study.enqueue_trial({**trial.params, "seed": seed},
                                                       user_attrs={"seed_of": trial.number})
            if not valid:
                continue
            values = {**bridge.base, **params}
            bridge.trials[trial_id] = trial
            bridge.histories[trial_id] = {}
            bridge.reported[trial_id] = set()
            config = {**values, "optuna_trial_number": trial.number}
            if trial.user_attrs.get(RESUME_KEY):
                config[RESUME_KEY] = trial.user_attrs[RESUME_KEY]
                self._carry_over_reports(trial_id, trial)
            return config

    def _carry_over_reports(self, trial_id: str, trial: optuna.Trial) -> None:
        # The engine resumes after its checkpoint and reports only later epochs: copy the earlier ones
        # from the interrupted trial, so pruners and dashboards see the whole curve.
        previous = self.bridge.study.get_trials(deepcopy=False)[trial.user_attrs["retry_of"]]
        for step, value in sorted(previous.intermediate_values.items()):
            trial.report(value, step)
        self.bridge.reported[trial_id] = set(previous.intermediate_values)

    def _check(self, trial: optuna.Trial, values: dict[str, Any]) -> bool:
        try:
            TrainConfig.from_dict(values)
            return True
        except ConfigError as exc:  # a sampled combination the engine rejects: record it, ask again
            set_trial_attrs(self.bridge.study, trial._trial_id,
                            {"status": "failed", "reason": f"invalid configuration: {exc}"})
            self.bridge.study.tell(trial, state=TrialState.FAIL)
            return False


    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        bridge = self.bridge
        trial = bridge.trials.pop(trial_id, None)
        if trial is None:
            return
        # Done long before as a rule. A failed write raises where its writer is closed, not here.
        futures.wait(bridge.pending_writes.pop(trial_id, ()))
        history = [row for _, row in sorted(bridge.histories.pop(trial_id, {}).items())]
        bridge.reported.pop(trial_id, None)
        final = _final_result(result)
        attrs: dict[str, Any] = {"history": history}
        if final is not None:
            attrs = {"history": final["history"], "test": final["test"], "classes": final["classes"],
                     "param_count": final["param_count"], "status": final["status"],
                     "reason": final["reason"] or "", "node_id": final.get("node_id"),
                     "resumed_from_epoch": final.get("resumed_from_epoch", 0)}
        if error:
            attrs.update(status="failed", reason="the trainable raised (after Ray's retries); see the Ray trial log")
            state, value = TrialState.FAIL, None
        elif trial_id in bridge.prune_reasons:
            attrs.update(status="pruned", reason=bridge.prune_reasons.pop(trial_id))
            state, value = TrialState.PRUNED, None
        elif final is not None and final["status"] == "completed":
            state, value = TrialState.COMPLETE, _best(attrs["history"], bridge.study.direction)
        elif final is not None:  # diverged or stalled inside an epoch: pruned, with the engine's reason
            state, value = TrialState.PRUNED, None
        else:
            # Stopped without a final result (driver shutting down): it stays RUNNING for
            # recover_interrupted(), which re-queues it with its checkpoint.
            state, value = None, None
        set_trial_attrs(bridge.study, trial._trial_id, attrs)  # one commit, not eight: the next trial waits
        if state is not None:
            bridge.study.tell(trial, value, state=state)


class OptunaPruningScheduler(FIFOScheduler):
    """Reports every epoch (and every check inside one, with checks_per_epoch > 1) to Optuna and applies
    the study's pruner there."""

    def __init__(self, bridge: StudyBridge):
        super().__init__()
        self.bridge = bridge

    def on_trial_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        bridge = self.bridge
        optuna_trial = bridge.trials.get(trial.trial_id)
        if optuna_trial is None or result.get("final") or METRIC not in result:
            return TrialScheduler.CONTINUE
        epoch = int(result["epoch"])
        checks = int(bridge.base.get("checks_per_epoch", 1))
        step = int(result.get("step", epoch * checks))  # epoch x checks_per_epoch at an epoch's end
        value = float(result[METRIC])
        if not result.get("partial"):
            # Keyed by epoch: a trial retried from its checkpoint may report an epoch again (the engine is
            # deterministic, so with the same values).
            bridge.histories[trial.trial_id][epoch] = {k: result[k] for k in _HISTORY_KEYS if k in result}
        # A trial Tune retried from its checkpoint repeats the steps after it: Optuna keeps the first value
        # of a step and warns about the repeat, which is expected here, so it is not sent again.
        reported = bridge.reported[trial.trial_id]  # made with the trial in suggest(), as its history
        if step not in reported:
            optuna_trial.report(value, step=step)
            reported.add(step)
        if step < int(bridge.base["epochs"]) * checks and optuna_trial.should_prune():
            pruner = type(bridge.study.pruner).__name__
            where = f"epoch {epoch}" if checks == 1 else f"step {step} ({step / checks:.2f} epochs)"
            bridge.prune_reasons[trial.trial_id] = f"pruned by {pruner} at {where}: {METRIC} {value:.4f}"
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE


class CheckpointRecorder(Callback):
    """Keeps each Optuna trial's newest checkpoint location, so an interrupted trial can continue."""

    def __init__(self, bridge: StudyBridge):
        self.bridge = bridge

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        optuna_trial = self.bridge.trials.get(trial.trial_id)
        if optuna_trial is not None:
            optuna_trial.set_user_attr("checkpoint", checkpoint.path)


def recover_interrupted(study: optuna.Study, *, of_driver: str | None = None,
                        from_dead_drivers_besides: str | None = None,
                        trials: list[optuna.trial.FrozenTrial] | None = None) -> list[int]:
    """Interrupted trials: mark them FAIL and queue their parameters again with their newest checkpoint,
    so that a driver continues them. Either this driver's own trials when it stops (``of_driver``), or
    the trials of drivers that are gone (``from_dead_drivers_besides``: this driver's id). Call it under
    the study lock. ``trials``: the study's trials, if the caller has just read them under that lock.
    Returns the numbers re-queued."""
    if trials is None:
        trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    running = [t for t in trials if t.state == TrialState.RUNNING]
    if of_driver is not None:
        interrupted = [t for t in running if t.user_attrs.get(DRIVER_ATTR) == of_driver]
    else:
        others = [t for t in running if t.user_attrs.get(DRIVER_ATTR) != from_dead_drivers_besides]
        # The leases are read only when another driver's trial runs (one query, on every new trial).
        live = set(live_drivers(study)) if others else set()
        interrupted = [t for t in others if t.user_attrs.get(DRIVER_ATTR) not in live]
    requeued = []
    for frozen in interrupted:
        params = _params_to_requeue(frozen)
        if params:
            attrs = {RESUME_KEY: frozen.user_attrs.get("checkpoint"), "retry_of": frozen.number}
            study.enqueue_trial(params, user_attrs={k: v for k, v in attrs.items() if v is not None})
            reason = "interrupted: the driver stopped; re-queued to continue from its checkpoint"
        else:  # killed inside ask(), before the sampler chose anything: a new trial takes its place
            reason = "interrupted inside ask(), before its parameters were drawn; replaced by a new trial"
        # Through the storage, not optuna.trial.Trial(study, id): that runs the sampler's before_trial on
        # the dead trial, and the grid sampler would give it a grid point, which its FAIL marks visited.
        set_trial_attrs(study, frozen._trial_id, {"status": "failed", "reason": reason, REQUEUED: True})
        study.tell(frozen.number, state=TrialState.FAIL)
        requeued.append(frozen.number)
    return requeued


def _params_to_requeue(frozen: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """The interrupted trial's parameters. A grid trial killed before it drew all of them (between
    ask() and the last suggest) is queued with its whole grid point, which the sampler recorded when
    it chose it: GridSampler refuses an enqueued trial with only some of its parameters."""
    return {**frozen.system_attrs.get(GRID_POINT, {}), **frozen.params}


_HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s", "images_per_s")


def _final_result(result: dict[str, Any] | None) -> dict[str, Any] | None:
    if not result or not result.get("final") or "result_json" not in result:
        return None
    return json.loads(result["result_json"])


def _best(history: list[dict[str, Any]], direction: optuna.study.StudyDirection) -> float:
    values = [h[METRIC] for h in history]
    return max(values) if direction == optuna.study.StudyDirection.MAXIMIZE else min(values)
