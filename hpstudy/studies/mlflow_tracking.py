"""MLflow: one experiment per study, a parent run per study, a nested child run per trial.

Ray's MLflowLoggerCallback logs one run per Ray trial, but cannot tag it with its Optuna trial number,
state and prune reason, nor nest it under a study run, so this small callback does that. All logging
happens in the driver, batched, and off Tune's event loop: a Tune function trainable waits at each report
until the driver has handled it, and MLflow's calls took about 0.1 s of each trial there
(bench/service_overhead.py). One writer thread makes them in order, creating a trial's run included; the
searcher waits for the run's id to reach the Optuna trial before it tells it
(``StudyBridge.pending_writes``). ``MlflowTrialLogger.close()`` waits for every write and raises the
first error.

Epoch metrics are written at most every ``METRICS_EVERY_S`` per run, and with the outcome when the trial
ends. Each ``log_batch`` on a SQLite store costs the driver 13-17 ms of CPU, which on a small machine the
trials compete for (session 10: about 240 ms of driver CPU per one-second trial); a trial of a few
seconds now takes one batch for its epochs and outcome instead of one per epoch and one more. A run is
at most that many seconds (plus an epoch) behind in the MLflow UI; a driver killed mid-trial loses those
metrics from the run, which the next driver marks KILLED (Optuna keeps each epoch's value).
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray.tune.callback import Callback

from hpstudy.processes import pid_exists
from hpstudy.studies import storage as storages
from hpstudy.studies.optuna_tune import StudyBridge
from hpstudy.studies.storage import set_trial_attrs

log = logging.getLogger(__name__)

STUDY_TAG = "hpstudy.study"
_EPOCH_METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "epoch_time_s", "images_per_s")
METRICS_EVERY_S = 5.0
# MLflow takes at most 1,000 metrics, params and tags in all per log_batch; the outcome's tags go first.
_MAX_METRICS_PER_BATCH = 990


SCHEMA_WAIT_S = 2.0  # how long another process's migration may stand still before it is taken as done


def prepare_store(tracking_uri: str) -> None:
    """MLflow's store made or opened safely beside other MLflow processes on the same database (`mlflow ui`,
    `mlflow server`), which take none of hpstudy's locks. A tracking server (http) does this itself."""
    if tracking_uri.startswith(storages.SQLITE):
        _prepare_sqlite_store(tracking_uri)
    elif tracking_uri.startswith(storages.POSTGRES):
        _open_postgres_store(tracking_uri)


def _open_postgres_store(tracking_uri: str) -> None:
    """MLflow migrates a new PostgreSQL database in one transaction, so the process that loses the race to
    create it only sees a duplicate key, and the database stays whole: it is opened again."""
    # search_experiments makes the store, tables included
    storages.open_beside_other_creators(lambda: MlflowClient(tracking_uri).search_experiments(max_results=1))


def _prepare_sqlite_store(tracking_uri: str) -> None:
    """A new SQLite store appears whole, and an existing one is opened only once nobody migrates it.

    MLflow creates a new database in place, in about 40 migrations over 1.5-3 s, with no lock, and an MLflow
    process that opens the file meanwhile (`mlflow ui`, which the README runs beside a study) migrates it
    too (MLflow's own `_safe_initialize_tables`, a lock file named after the URL's text, is not used by
    its tracking store). Started 3-4.5 s after `hpstudy run` (while the driver migrated), such an open made 4 of 6 runs
    fail with a traceback, and 2 of them left mlflow.db broken for good (a leftover `_alembic_tmp_*`
    table; session 16). So a new store's tables are made in a temporary file beside it, which is then
    linked into place only if no file appeared meanwhile; if one did, or one was there, its schema is
    waited for while another process moves it towards MLflow's latest revision."""
    from mlflow.store.db import utils as db_utils

    path = storages.file_path(tracking_uri).resolve()
    _remove_stale_temporaries(path)
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            engine = db_utils.create_sqlalchemy_engine(f"sqlite:///{temporary}")
            try:
                db_utils._initialize_tables(engine)
            finally:
                engine.dispose()
            try:
                os.link(temporary, path)  # fails if the file appeared meanwhile: never replaces one
                return
            except FileExistsError:
                pass  # another process made it first: wait for its schema below
            except OSError:  # a file system without hard links: a rename, checked just before
                if not path.exists():
                    os.rename(temporary, path)
                    return
        finally:
            temporary.unlink(missing_ok=True)
    _wait_while_migrated(f"sqlite:///{path}", db_utils)


def _wait_while_migrated(url: str, db_utils) -> None:
    """Until the store's schema is at MLflow's latest revision, for as long as it keeps changing (another
    process is migrating it). A schema that stands still elsewhere is left to MLflow (an older one needs
    `mlflow db upgrade`, which MLflow says)."""
    latest = db_utils._get_latest_schema_revision()
    engine = db_utils.create_sqlalchemy_engine(url)
    try:
        seen, since = None, time.monotonic()
        while True:
            try:
                revision = db_utils._get_schema_version(engine) if db_utils._all_tables_exist(engine) else None
            except Exception:  # a table mid-rebuild by the other process
                revision = "?"
            if revision == latest:
                return
            if revision != seen:
                seen, since = revision, time.monotonic()
            elif time.monotonic() - since > SCHEMA_WAIT_S:
                return
            time.sleep(0.1)
    finally:
        engine.dispose()


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary stores left by a killed driver (its pid is in the name)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp*"):  # with SQLite's -journal beside it
        pid = stale.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not pid_exists(int(pid)):
            stale.unlink(missing_ok=True)
            log.info("removed %s, a temporary MLflow store of a driver that was killed", stale)


def local_artifact_root(tracking_uri: str, workdir: Path) -> str | None:
    """Where a local (sqlite/file) store keeps artifacts: under the work dir, not the current dir."""
    if tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri:
        return (workdir / "mlartifacts").resolve().as_uri()
    return None  # a tracking server decides itself


def open_parent_run(client: MlflowClient, study_name: str, workdir: Path, tracking_uri: str,
                    parent_run_id: str | None, params: dict[str, Any]) -> tuple[str, str]:
    """(experiment id, parent run id): created on the first run of a study, reopened when it continues."""
    experiment = client.get_experiment_by_name(study_name)
    if experiment is None:
        experiment_id = client.create_experiment(study_name, local_artifact_root(tracking_uri, workdir),
                                                 tags={STUDY_TAG: study_name})
    else:
        experiment_id = experiment.experiment_id
    if parent_run_id:
        client.update_run(parent_run_id, status="RUNNING")
        return experiment_id, parent_run_id
    run = client.create_run(experiment_id, run_name=f"study {study_name}",
                            tags={STUDY_TAG: study_name, "hpstudy.role": "study"})
    client.log_batch(run.info.run_id, params=[Param(k, _text(v)) for k, v in params.items()])
    return experiment_id, run.info.run_id


def close_stale_runs(client: MlflowClient, experiment_id: str, parent_run_id: str, study) -> int:
    """Child runs a killed driver left RUNNING, reconciled with Optuna: a trial that finished there
    gets its outcome logged and FINISHED; an interrupted one (continuing as a new trial) is KILLED.
    Returns how many were KILLED."""
    stale = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'")
    trials = study.get_trials(deepcopy=False)
    killed = 0
    for run in stale:
        number = run.data.tags.get("optuna.trial_number")
        if run.info.run_id == parent_run_id or number is None:
            continue
        frozen = trials[int(number)]
        if frozen.state.name == "RUNNING":
            continue  # another live driver's trial (recovery has re-queued the dead drivers' ones)
        metrics, tags = _outcome(frozen)
        client.log_batch(run.info.run_id, metrics=metrics, tags=tags)
        if frozen.state.name in ("COMPLETE", "PRUNED"):
            client.set_terminated(run.info.run_id, status="FINISHED")
        else:
            client.set_terminated(run.info.run_id, status="KILLED")
            killed += 1
    return killed


class MlflowTrialLogger(Callback):
    def __init__(self, client: MlflowClient, experiment_id: str, parent_run_id: str, bridge: StudyBridge):
        self.client = client
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.bridge = bridge
        self.runs: dict[str, Future] = {}  # Ray trial id -> its MLflow run id (the writer's future)
        self.unwritten: dict[str, list[Metric]] = {}  # Ray trial id -> epoch metrics not yet written
        self.written_at: dict[str, float] = {}  # Ray trial id -> when its metrics were last written
        self._writer: ThreadPoolExecutor | None = None  # started by the first write
        self._writes: list[Future] = []

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its RunConfig (callbacks included) into the experiment folder; a thread does not.
        return {**self.__dict__, "_writer": None, "_writes": []}

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        optuna_trial = self.bridge.trials.get(trial.trial_id)
        if optuna_trial is None or trial.trial_id in self.runs:
            return
        params = {k: v for k, v in trial.config.items() if k != "resume_from"}
        run = self._write(self._open_run, optuna_trial, trial.trial_id, params)
        self.runs[trial.trial_id] = run
        self.unwritten[trial.trial_id], self.written_at[trial.trial_id] = [], time.monotonic()
        # The Optuna trial must hold its run id before it is told: the searcher waits for this write.
        self.bridge.pending_writes.setdefault(trial.trial_id, []).append(run)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        run = self.runs.get(trial.trial_id)
        # Checks inside an epoch go to Optuna only (its dashboard plots them); MLflow charts epochs.
        if run is None or result.get("final") or result.get("partial") or "epoch" not in result:
            return
        now = int(time.time() * 1000)
        step = int(result["epoch"])
        unwritten = self.unwritten[trial.trial_id]
        unwritten += [Metric(k, float(result[k]), now, step) for k in _EPOCH_METRICS if k in result]
        if time.monotonic() - self.written_at[trial.trial_id] >= METRICS_EVERY_S:
            self.unwritten[trial.trial_id], self.written_at[trial.trial_id] = [], time.monotonic()
            self._write(lambda: self._log_metrics(run.result(), unwritten))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._finish(trial, "FAILED")

    def close(self) -> None:
        """Wait for every write; raise the first one's error, if any."""
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
        for write in self._writes:
            write.result()
        self._writes.clear()

    def _write(self, call, *args, **kwargs) -> Future:
        """``call`` on the writer thread, after every earlier write (so a run's later writes may take its
        run id from the future ``_open_run`` returned: it is done by then)."""
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hpstudy-mlflow")
        self._writes.append(self._writer.submit(call, *args, **kwargs))
        return self._writes[-1]

    def _open_run(self, optuna_trial, ray_trial_id: str, params: dict[str, Any]) -> str:
        number = optuna_trial.number
        run = self.client.create_run(self.experiment_id, run_name=f"trial {number}", tags={
            "mlflow.parentRunId": self.parent_run_id, STUDY_TAG: self.bridge.study.study_name,
            "optuna.trial_number": str(number), "ray.trial_id": ray_trial_id})
        run_id = run.info.run_id
        # Through the storage, not optuna_trial.set_user_attr: that also updates the trial's cached attrs,
        # which Tune's thread may be reading.
        set_trial_attrs(self.bridge.study, optuna_trial._trial_id, {"mlflow_run_id": run_id})
        self.client.log_batch(run_id, params=[Param(k, _text(v)) for k, v in sorted(params.items())])
        return run_id

    def _finish(self, trial, mlflow_status: str) -> None:
        run = self.runs.pop(trial.trial_id, None)
        if run is None:
            return
        unwritten = self.unwritten.pop(trial.trial_id)
        self.written_at.pop(trial.trial_id)
        # The searcher has told Optuna by now (Tune calls the searcher before callbacks).
        number = int(trial.config["optuna_trial_number"])
        outputs = (trial.last_result or {}).get("outputs_dir")
        self._write(self._log_outcome, run, number, outputs, mlflow_status, unwritten)

    def _log_metrics(self, run_id: str, metrics: list[Metric], tags: Sequence[RunTag] = ()) -> None:
        # In slices, for MLflow's limit per call (a trial of many very short epochs).
        if not metrics and not tags:
            return
        for start in range(0, max(len(metrics), 1), _MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=metrics[start:start + _MAX_METRICS_PER_BATCH],
                                  tags=tags if start == 0 else ())

    def _log_outcome(self, run: Future, number: int, outputs: str | None, status: str,
                     unwritten: list[Metric]) -> None:
        run_id = run.result()
        frozen = self.bridge.study.get_trials(deepcopy=False)[number]  # read here, off Tune's thread
        metrics, tags = _outcome(frozen)
        self._log_metrics(run_id, unwritten + metrics, tags)
        if outputs and Path(outputs).is_dir():
            self.client.log_artifacts(run_id, outputs)
        self.client.set_terminated(run_id, status=status if frozen.state.name != "FAIL" else "FAILED")


def _outcome(frozen) -> tuple[list[Metric], list[RunTag]]:
    """A finished Optuna trial as MLflow metrics and tags: state, status, reason, best and test values."""
    tags = [RunTag("optuna.state", frozen.state.name),
            RunTag("hpstudy.status", str(frozen.user_attrs.get("status", ""))),
            RunTag("hpstudy.reason", str(frozen.user_attrs.get("reason", "")))]
    now = int(time.time() * 1000)
    metrics = [] if frozen.value is None else [Metric("best_val_acc", frozen.value, now, 0)]
    test = frozen.user_attrs.get("test")
    if test:
        metrics += [Metric("test_loss", test["test_loss"], now, 0), Metric("test_acc", test["test_acc"], now, 0)]
    return metrics, tags


def finish_parent_run(client: MlflowClient, parent_run_id: str, best_value: float | None, status: str) -> None:
    if best_value is not None:
        client.log_metric(parent_run_id, "best_val_acc", best_value)
    client.set_terminated(parent_run_id, status=status)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)

