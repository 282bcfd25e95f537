"""`hpstudy run`: validate everything, then open the study, MLflow and Ray, and let Tune run the trials.

The Optuna storage is the source of truth. The definition and the settings that shape results are kept
on the study (user attr "hpstudy"), so `hpstudy run --study-name NAME --storage URL` continues a study
without its definition being named again; a continuation that asks for a different definition, sampler,
pruner, direction, epochs or data setting is refused.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna

from hpstudy.search_spaces import SPACES, grid_size
from hpstudy.studies.builtin import STUDIES
from hpstudy.studies import storage as storages
from hpstudy.studies.definition import PRUNERS, SAMPLERS, STUDY_ATTR as ATTR, StudyDefinition
from hpstudy.studies.drivers import is_alive, leases
from hpstudy.studies.ray_start import (RayStart, WithoutMessage, attach_to_cluster, check_ray_address, gcs_address,
                                       let_trials_take_prestarted_workers, ray_address)
from hpstudy.studies.storage import check_storage_url
from hpstudy.trainables.config import ConfigError, TrainConfig

log = logging.getLogger(__name__)

POLL_S = 2.0  # while other drivers finish their trials

# TrainConfig fields a run may set on top of the definition (kept with the study): data sizes for a
# laptop, and how often trials report (which fixes what a pruner's step means).
OVERRIDABLE = ("train_size", "val_size", "test_size", "checks_per_epoch", "checkpoint_every_s")


@dataclass(frozen=True)
class RunSettings:
    definition: str | None = None
    study_name: str | None = None
    storage: str = "sqlite:///hpstudy.db"
    sampler: str | None = None  # None: the definition's
    pruner: str | None = None
    n_trials: int | None = None  # None: the definition's (grid: its size)
    epochs: int | None = None
    seeds: tuple[int, ...] | None = None  # repeat every configuration per seed (grid studies)
    seed: int | None = None  # the sampler's seed (None: 0, or the study's when it continues)
    overrides: dict[str, Any] = field(default_factory=dict)  # e.g. {"train_size": 800, "val_size": 100}
    max_concurrent: int | None = None  # None: as many as the resources allow
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    ray_address: str | None = None
    mlflow_tracking_uri: str = "sqlite:///mlflow.db"
    data_dir: str | None = None
    workdir: str = "hpstudy-runs"  # Ray results (checkpoints) and local MLflow artifacts


@dataclass(frozen=True)
class Plan:
    """Everything a validated run needs."""

    settings: RunSettings
    study_name: str
    definition: StudyDefinition
    sampler: str
    pruner: str
    epochs: int
    grid: dict[str, list[Any]] | None
    n_trials: int | None  # as asked (configurations); None: the whole grid
    target: int  # trials to end with: n_trials (or the grid size) x seeds
    base: dict[str, Any]
    seeds: tuple[int, ...] | None
    seed: int  # the sampler's
    overrides: dict[str, Any]
    stored: dict[str, Any] | None  # the study's "hpstudy" attr when it exists
    warnings: tuple[str, ...] = ()

    def study_attr(self) -> dict[str, Any]:
        return {"definition": self.definition.name, "table": list(self.definition.table) if self.definition.table else None,
                "metric": self.definition.metric, "direction": self.definition.direction,
                "settings": {"sampler": self.sampler, "pruner": self.pruner, "n_trials": self.n_trials,
                             "epochs": self.epochs, "seeds": list(self.seeds) if self.seeds else None,
                             "seed": self.seed, "overrides": self.overrides}}

    def suggest(self):
        space = SPACES[self.definition.space]
        if not self.seeds:
            return space.suggest
        seeds = list(self.seeds)

        def suggest_with_seed(trial: optuna.Trial) -> dict[str, Any]:
            return {**space.suggest(trial), "seed": trial.suggest_categorical("seed", seeds)}

        return suggest_with_seed


# ---------------------------------------------------------------------------------------- validation

def plan_run(settings: RunSettings) -> Plan:
    """Check every input without writing anything; raises ConfigError naming the field."""
    check_storage_url(settings.storage)
    study_name = settings.study_name or settings.definition  # the study is named after its definition
    stored, direction = existing_study(settings.storage, study_name)
    name = settings.definition or (stored or {}).get("definition")
    if study_name:
        check_single_driver(settings.storage, study_name)
    if name is None:
        if study_name and stored is None and direction is not None:
            raise ConfigError("definition", f"study {settings.study_name!r} exists but was not made by hpstudy: "
                                            f"name a definition to run in it (see `hpstudy studies`)")
        raise ConfigError("definition", "name a study definition (see `hpstudy studies`) or an existing "
                                        "--study-name to continue")
    if name not in STUDIES:
        raise ConfigError("definition", f"unknown definition {name!r} (choose from: {', '.join(STUDIES)})")
    definition = STUDIES[name]
    if stored and stored["definition"] != name:
        raise ConfigError("definition", f"study {study_name!r} runs {stored['definition']!r}, not {name!r}")
    if direction is not None and direction != definition.direction:
        raise ConfigError("direction", f"study {study_name!r} was created to {direction}, but "
                                       f"{name} {definition.direction}s {definition.metric}")
    # What was asked is checked before it is held against the stored study: a typo gets "unknown pruner",
    # not "cannot change to". (Stored values and the definitions' own were checked like this.)
    if settings.sampler is not None and settings.sampler not in SAMPLERS:
        raise ConfigError("sampler", f"unknown sampler {settings.sampler!r} (choose from: {', '.join(SAMPLERS)})")
    if settings.pruner is not None and settings.pruner not in PRUNERS:
        raise ConfigError("pruner", f"unknown pruner {settings.pruner!r} (choose from: {', '.join(PRUNERS)})")
    if settings.epochs is not None and settings.epochs < 1:
        raise ConfigError("epochs", f"must be >= 1 (got {settings.epochs})")
    previous = (stored or {}).get("settings", {})
    sampler = _fixed("sampler", settings.sampler, previous, definition.sampler)
    pruner = _fixed("pruner", settings.pruner, previous, definition.pruner)
    epochs = _fixed("epochs", settings.epochs, previous, int(definition.base["epochs"]))
    seeds = _fixed("seeds", list(settings.seeds) if settings.seeds else None, previous, None)
    # Kept too: the grid sampler's point order is shuffled by it, and grid ids must mean the same points.
    seed = _fixed("seed", settings.seed, previous, 0)
    overrides = _fixed("overrides", settings.overrides or None, previous, None) or {}
    for key in overrides:
        if key not in OVERRIDABLE:
            raise ConfigError(key, f"cannot be overridden (only {', '.join(OVERRIDABLE)})")
    space = SPACES[definition.space]
    grid = {k: list(v) for k, v in space.grid.items()} if space.grid else None
    if seeds and grid is not None and sampler == "grid":
        grid = {**grid, "seed": list(seeds)}
    if sampler == "grid" and grid is None:
        raise ConfigError("sampler", f"grid needs a search space with a grid; space {definition.space} has none "
                                     f"(use tpe, random or qmc)")
    if settings.cpus_per_trial <= 0:
        raise ConfigError("cpus_per_trial", f"must be > 0 (got {settings.cpus_per_trial})")
    if settings.gpus_per_trial < 0:
        raise ConfigError("gpus_per_trial", f"must be >= 0 (got {settings.gpus_per_trial})")
    if settings.gpus_per_trial > 0 and not settings.ray_address:
        import torch  # a local Ray has this machine's GPUs; Tune would wait forever for missing ones

        if torch.cuda.device_count() == 0:
            raise ConfigError("gpus_per_trial", "this machine has no CUDA GPU (use --ray-address for a cluster with GPUs)")
    if settings.max_concurrent is not None and settings.max_concurrent < 1:
        raise ConfigError("max_concurrent", f"must be >= 1 (got {settings.max_concurrent})")
    if settings.ray_address:
        check_ray_address(settings.ray_address)
    check_tracking_uri(settings.mlflow_tracking_uri)
    check_writable_dir("workdir", Path(settings.workdir).expanduser().resolve())
    warnings = []
    n_trials = settings.n_trials if settings.n_trials is not None else previous.get("n_trials", definition.n_trials)
    if n_trials is not None and n_trials < 1:
        raise ConfigError("n_trials", f"must be >= 1 (got {n_trials})")
    if sampler == "grid":
        size = grid_size(grid)
        target = min(n_trials, size) if n_trials else size
        if target < size:
            warnings.append(f"the grid has {size} points; --n-trials {target} leaves {size - target} of them unrun")
    else:
        if n_trials is None:
            raise ConfigError("n_trials", f"sampler {sampler} needs --n-trials")
        target = n_trials * (len(seeds) if seeds else 1)  # each sampled configuration once per seed
    data_dir = str(Path(settings.data_dir).expanduser().resolve()) if settings.data_dir else None
    base = {**definition.base, **overrides, "epochs": epochs, "threads": max(1, int(settings.cpus_per_trial))}
    if data_dir:
        base["data_dir"] = data_dir
    if settings.gpus_per_trial == 0:
        base["device"] = "cpu"
    _check_points(base, space, grid)
    return Plan(settings=settings, study_name=study_name or name, definition=definition, sampler=sampler,
                pruner=pruner, epochs=epochs, grid=grid, n_trials=n_trials, target=target, base=base,
                seeds=tuple(seeds) if seeds else None, seed=seed, overrides=overrides, stored=stored,
                warnings=tuple(warnings))


def _fixed(key: str, asked: Any, previous: dict[str, Any], default: Any) -> Any:
    """A results-shaping setting: the stored value wins; asking for another one is an error."""
    if key in previous and previous[key] is not None:
        if asked is not None and asked != previous[key]:
            raise ConfigError(key, f"this study was run with {key}={previous[key]!r}; it cannot change to "
                                   f"{asked!r} (drop the option or use another --study-name)")
        return previous[key]
    return asked if asked is not None else default


def check_writable_dir(field_name: str, path: Path) -> None:
    """``path`` is a directory this process can write in, or one it can make."""
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(field_name, f"cannot write to {parent} (read-only, permission denied or not a directory)")


def check_tracking_uri(uri: str) -> None:
    """MLflow's store is reachable before anything is written: its client retries a dead server for
    minutes, after the study would already exist."""
    if uri.startswith(("http://", "https://")):
        from urllib.parse import urlparse

        parsed = urlparse(uri)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            socket.create_connection((parsed.hostname, port), timeout=5).close()
        except (OSError, TypeError) as exc:
            raise ConfigError("mlflow_tracking_uri", f"cannot reach an MLflow tracking server at {uri}: "
                                                     f"{getattr(exc, 'strerror', None) or exc}") from None
    elif uri.startswith(storages.SQLITE):
        storages.check_file_url("mlflow_tracking_uri", uri, storages.file_path(uri))
    elif uri.startswith(storages.POSTGRES):
        engine = storages.pg_engine(uri)
        try:
            engine.connect().close()
        except Exception as exc:
            raise ConfigError("mlflow_tracking_uri", f"cannot open {storages.shown(uri)}: {type(exc).__name__}: "
                                                     f"{str(exc).splitlines()[0]}") from None
        finally:
            engine.dispose()
    elif "://" in uri and not uri.startswith(("file:", "databricks")):
        raise ConfigError("mlflow_tracking_uri", f"unsupported tracking URI {uri!r} (use sqlite:///FILE, "
                                                 f"postgresql+psycopg://..., or http://HOST:PORT of a tracking server)")


def existing_study(storage_url: str, study_name: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """(the study's hpstudy attr, its direction) when the study exists; (None, None) otherwise.
    Never creates a SQLite or journal file that is not there yet."""
    summary = _summary(storage_url, study_name)[1]
    if summary is None:
        return None, None
    return summary.user_attrs.get(ATTR), summary.direction.name.lower()


def _summary(storage_url: str, study_name: str | None):
    """(the opened storage, the study's summary) when the study exists; (None, None) otherwise."""
    if not study_name or not storages.exists(storage_url):
        return None, None
    try:
        storage = storages.open_storage(storage_url)
        summaries = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    except ConfigError:
        raise
    except Exception as exc:  # unreachable server, bad credentials, not a database
        raise ConfigError("storage", f"cannot open {storages.shown(storage_url)}: {type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0]}") from None
    summary = summaries.get(study_name)
    return (storage, summary) if summary is not None else (None, None)


def check_single_driver(storage_url: str, study_name: str) -> None:
    """SQLite serves one driver per study: refuse a second one while the first is alive."""
    if storages.kind(storage_url) != "sqlite":
        return
    storage, summary = _summary(storage_url, study_name)
    if summary is None:
        return
    for lease in leases(storage.get_study_system_attrs(summary._study_id)).values():
        if is_alive(lease):
            raise ConfigError("storage", f"study {study_name!r} is being run by another driver (host {lease['host']}, "
                                         f"pid {lease['pid']}); SQLite takes one driver per study: for several, use "
                                         f"postgresql+psycopg://USER:PASSWORD@HOST/DB or journal:///SHARED/FILE.log")


def _check_points(base: dict[str, Any], space, grid: dict[str, list[Any]] | None) -> None:
    """Every grid point (or one sampled point of a define-by-run space) makes a valid TrainConfig for
    this dataset: names, ranges, the model against the input shape, and sizes against the data, which
    is read here once, so missing data fails now and not in every trial."""
    # torch's modules, imported here: `hpstudy report` also imports this module, and needs no torch
    from hpstudy.trainables.datasets import load_split
    from hpstudy.trainables.engine import check_config
    from hpstudy.trainables.loader import check_sizes

    points = ([dict(zip(grid, values)) for values in itertools.product(*grid.values())] if grid
              else [_first_point(space)])
    sizes: dict[tuple, tuple[int, int]] = {}
    for point in points:
        params = space.suggest(optuna.trial.FixedTrial(point)) if grid else point
        cfg = TrainConfig.from_dict(base | params | ({"seed": point["seed"]} if "seed" in point else {}))
        check_config(cfg)
        key = (cfg.dataset, cfg.data_dir, cfg.image_size)
        if key not in sizes:
            train = load_split(cfg.dataset, True, cfg.data_dir, cfg.download, cfg.image_size)[1]
            test = load_split(cfg.dataset, False, cfg.data_dir, cfg.download, cfg.image_size)[1]
            sizes[key] = (len(train), len(test))
        check_sizes(cfg, *sizes[key])


def _first_point(space) -> dict[str, Any]:
    """One point of a define-by-run space, drawn in memory (without Optuna's line about creating a study:
    no study is created, and a rejected command says only its one line)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    finally:
        optuna.logging.set_verbosity(verbosity)
    return space.suggest(trial)


# ---------------------------------------------------------------------------------------- running

# Tune's advice after an interrupted fit ("Resume experiment with: Tuner.restore(...)") does not apply here:
# the same `hpstudy run` command continues the study from the Optuna storage, and the CLI says so.
_TUNE_RESTORE_ADVICE = WithoutMessage("Tuner.restore(")


def tune_run_name(study_name: str, driver_id: str, round_: int) -> str:
    """The folder of one Tune run under the work dir's ray/: a study may be named anything Optuna takes
    ("a/b", "../x"), and a folder name must stay one folder inside it."""
    safe = re.sub(r"[^\w.-]+", "_", study_name).strip(".") or "study"
    return f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{driver_id[:6]}-{round_}"


class StudyInterrupted(Exception):
    """The driver stopped (a signal) with trials unfinished; they are re-queued for the next run."""

    def __init__(self, numbers: list[int]):
        super().__init__(f"stopped with {len(numbers)} trial(s) unfinished: {numbers}")
        self.numbers = numbers


def run_study(plan: Plan, on_ready: Callable[[], None] | None = None,
              cluster: RayStart | None = None, stop_requested: threading.Event | None = None,
              on_stranded: Callable[[BaseException], None] | None = None) -> optuna.Study:
    """Run the planned study to its target; returns the study (reload it for the final state).
    ``on_ready`` is called once the setup is done (study, MLflow, Ray) and trials are about to start:
    the CLI arms its SIGTERM handler there, so a signal never lands inside a database migration.
    ``cluster``: the connection ``attach_to_cluster`` made (run_study makes it otherwise), stopped at the end.
    ``stop_requested``: set by the caller's stop signal. If Ray's GCS is gone after it (the signal reached
    Ray too), Tune cannot stop: the driver's stop runs from a watch thread instead, which then calls
    ``on_stranded`` with StudyInterrupted (or the error that stop met); it must end the process (the main
    thread stays stuck in Tune)."""
    import ray
    from ray import tune

    from hpstudy.studies.drivers import DriverLease, live_drivers
    from hpstudy.studies.optuna_tune import (CheckpointRecorder, OptunaPruningScheduler, OptunaSearcher,
                                             StudyBridge, recover_interrupted)
    from hpstudy.studies.progress import ProgressPrinter
    from hpstudy.studies.samplers import make_pruner, make_sampler
    from hpstudy.studies.stop_watch import GcsWatch, Once
    from hpstudy.trainables.trainable import tune_trainable

    settings = plan.settings
    ray_start = cluster or attach_to_cluster(settings.ray_address)  # before anything is written: a refusal leaves nothing
    # Tune's experiment snapshot is not the source of truth here (Optuna's storage is): its warning
    # about snapshotting "too often" with CheckpointConfig(num_to_keep) is noise for our users.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's newer console output ignores verbose=0 (banners, TensorBoard hints); the progress lines
    # below say what a user needs.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # MLflow prints "View run ..." links for every run on a tracking server, between the progress lines.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # Tune's default loggers write every result again, as JSON, CSV and TensorBoard files in the trial's
    # folder, from the driver, while the trial waits for its report to be handled: 3 ms of a 14 ms round
    # trip per report (session 13). Optuna and MLflow hold the same metrics, and each trial's outputs/ folder
    # its history. TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=0 brings those files back.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    logging.getLogger("ray.tune.tune").addFilter(_TUNE_RESTORE_ADVICE)  # added once (the same object)
    # Tune's results summary after a stop warns, with a FileNotFoundError, about trials stopped before their
    # first result; hpstudy reads results from Optuna, not from that summary.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    try:
        workdir = Path(settings.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        sampler = make_sampler(plan.sampler, plan.grid, plan.seed)
        pruner = make_pruner(plan.pruner, plan.epochs, int(plan.base.get("checks_per_epoch", 1)))
        lock = storages.StudyLock(settings.storage, plan.study_name)
        with lock:  # a second driver starting at the same moment must find one study and one parent run
            study = optuna.create_study(study_name=plan.study_name, storage=storages.open_storage(settings.storage),
                                        sampler=sampler, pruner=pruner, direction=plan.definition.direction,
                                        load_if_exists=True)
            bridge = StudyBridge(study=study, suggest=plan.suggest(), base=plan.base, target=plan.target,
                                 repeat_seeds=plan.seeds if plan.seeds and plan.sampler != "grid" else (),
                                 lock=lock)
            if bridge.has_work() and not ray.is_initialized():
                # Ray starts (seconds) while MLflow creates or opens its store (seconds too on a first run).
                ray_start = RayStart("local")
            # Imported once Ray is starting (1.4-1.9 s here), so that the import overlaps Ray's start too.
            from mlflow.tracking import MlflowClient

            from hpstudy.studies import mlflow_tracking

            mlflow_tracking.prepare_store(settings.mlflow_tracking_uri)
            client = MlflowClient(settings.mlflow_tracking_uri)  # creates MLflow's tables on first use
            attr = dict(study.user_attrs.get(ATTR) or plan.stored or plan.study_attr())
            parent = (attr.get("mlflow") or {}).get("parent_run_id")
            experiment_id, parent_run_id = mlflow_tracking.open_parent_run(
                client, plan.study_name, workdir, settings.mlflow_tracking_uri, parent,
                {"definition": plan.definition.name, "sampler": plan.sampler, "pruner": plan.pruner,
                 "epochs": plan.epochs, "n_trials": plan.target, "space": plan.definition.space,
                 "storage": storages.kind(settings.storage), **{f"base.{k}": v for k, v in plan.base.items()}})
            attr["mlflow"] = {"tracking_uri": settings.mlflow_tracking_uri, "experiment_id": experiment_id,
                              "parent_run_id": parent_run_id}
            study.set_user_attr(ATTR, attr)
            lease = DriverLease(study).start()
            requeued = recover_interrupted(study, from_dead_drivers_besides=lease.id)
            closed = mlflow_tracking.close_stale_runs(client, experiment_id, parent_run_id, study)
    except BaseException:
        if ray_start is not None:  # setup failed: stop the Ray it was starting
            ray_start.stop()
        raise
    if requeued:
        print(f"continuing {len(requeued)} interrupted trial(s) from their checkpoints: {requeued}", flush=True)
    if closed:
        log.info("marked %d MLflow run(s) of the interrupted driver KILLED", closed)

    bridge.driver_id = lease.id
    mlflow_logger = mlflow_tracking.MlflowTrialLogger(client, experiment_id, parent_run_id, bridge)
    status = "FINISHED"

    def stop_driver() -> list[int]:
        """Whatever stopped us, none of our trials stays RUNNING: a run continues them from checkpoints."""
        try:
            mlflow_logger.close()  # its queued writes land before the runs are reconciled and closed below
        finally:
            with lock:
                left = recover_interrupted(study, of_driver=lease.id)
                if left:
                    mlflow_tracking.close_stale_runs(client, experiment_id, parent_run_id, study)
                    print(f"stopped with {len(left)} trial(s) unfinished; run the same command to continue them",
                          flush=True)
                lease.stop()
                if not live_drivers(study):  # the last driver out closes the study's MLflow run
                    try:
                        best = study.best_value
                    except ValueError:
                        best = None
                    mlflow_tracking.finish_parent_run(client, parent_run_id, best, "KILLED" if left else status)
            lock.close()
        return left

    stop_once = Once(stop_driver)

    def stranded() -> None:  # the stop signal took Ray's GCS down too: stop without Tune
        try:
            stopped: BaseException = StudyInterrupted(stop_once())
        except Exception as exc:  # e.g. a storage that went with the signal; the next run re-queues instead
            log.error("the driver's stop without Ray failed: %r", exc)
            stopped = exc
        if on_stranded is not None:
            on_stranded(stopped)

    watch = GcsWatch(stop_requested, gcs_address, stranded) if stop_requested is not None else None
    left: list[int] = []
    try:
        if ray_start is not None:
            ray_start.wait()  # before the caller arms its SIGTERM handler (see RayStart.wait)
        if on_ready is not None:
            on_ready()
        let_trials_take_prestarted_workers()
        rounds = 0
        while True:
            with lock:
                recover_interrupted(study, from_dead_drivers_besides=lease.id)
                work = bridge.has_work()
            if not work:
                if not bridge.running(mine=False):
                    break
                # Other drivers still run trials: wait (holding no Ray resources), so that if one of
                # them dies its re-queued trials are finished here.
                time.sleep(POLL_S)
                continue
            if not ray.is_initialized():
                if ray_start is None:  # work appeared later (another driver died): start Ray now
                    ray_start = RayStart(ray_address(settings.ray_address))
                ray_start.wait()
            rounds += 1
            resources = {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial}
            tuner = tune.Tuner(
                tune.with_resources(tune_trainable, resources),
                tune_config=tune.TuneConfig(
                    search_alg=OptunaSearcher(bridge), scheduler=OptunaPruningScheduler(bridge),
                    num_samples=-1, max_concurrent_trials=settings.max_concurrent, reuse_actors=True,
                    trial_dirname_creator=lambda t: f"optuna-{t.config['optuna_trial_number']:04d}"),
                run_config=tune.RunConfig(
                    name=tune_run_name(plan.study_name, lease.id, rounds),
                    storage_path=str(workdir / "ray"),
                    failure_config=tune.FailureConfig(max_failures=2),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                    callbacks=[CheckpointRecorder(bridge), mlflow_logger, ProgressPrinter(bridge)],
                    verbose=0))
            tuner.fit()
            if bridge.running(mine=True):
                break  # Tune was stopped (Ctrl-C, SIGTERM) with our trials unfinished
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        try:
            left = stop_once()
        finally:
            if watch is not None:
                watch.cancel()  # before Ray's own stop below takes the GCS away
            if ray_start is not None:
                ray_start.stop()
    if left:
        raise StudyInterrupted(left)
    return study
