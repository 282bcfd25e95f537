"""Storage URLs, the journal file's repairs (a torn last record, a stale lock file), the study lock, and
SQLite's one-driver rule. No Ray, no training: fast."""

import contextlib
import logging
import multiprocessing
import os
import socket
import threading
import time

import optuna
import pytest

from hpstudy.studies import storage as storages
from hpstudy.studies.drivers import DriverLease, live_drivers
from hpstudy.studies.runner import check_single_driver
from hpstudy.trainables.config import ConfigError


def _study(url, name="s"):
    return optuna.create_study(study_name=name, storage=storages.open_storage(url), load_if_exists=True)


@pytest.mark.parametrize("url, words", [
    ("sqlite:/x.db", "unsupported storage URL"),
    ("mysql://u@h/db", "unsupported storage URL"),
    ("journal:///no/such/dir/x.log", "does not exist"),
    ("sqlite:///", "no file name"),
    ("postgresql+psycopg://", r"expected postgresql\+psycopg://USER"),
])
def test_bad_urls_are_refused_naming_the_field(url, words):
    with pytest.raises(ConfigError, match=words) as info:
        storages.check_storage_url(url)
    assert info.value.field == "storage"


def test_unreachable_postgresql_fails_in_seconds():
    start = time.monotonic()
    with pytest.raises(Exception):
        _study("postgresql+psycopg://u:p@127.0.0.1:1/db")
    assert time.monotonic() - start < 30  # not the minutes of a default TCP timeout


def test_torn_last_journal_record_is_cut_with_a_log_line(tmp_path, caplog):
    url = f"journal:///{tmp_path}/study.log"
    study = _study(url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    path = tmp_path / "study.log"
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"op_code":5,"worker_id":"TORN-w","study_id":0,"datetime_sta')  # killed mid-append

    with caplog.at_level(logging.WARNING, logger="hpstudy.studies.storage"):
        study = _study(url)
    assert "cut a torn last record" in caplog.text
    assert path.read_bytes().startswith(whole) and b"TORN-" not in path.read_bytes()
    assert len(study.trials) == 3
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert [t.state.name for t in _study(url).trials] == ["COMPLETE"] * 5


def test_a_record_torn_while_another_process_runs_is_cut_before_its_next_append(tmp_path, caplog):
    url = f"journal:///{tmp_path}/study.log"
    study = _study(url)  # this process keeps its storage open, as a running driver does
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    with open(tmp_path / "study.log", "ab") as f:
        f.write(b'{"op_code":4,"worker_')  # another worker killed mid-append
    with caplog.at_level(logging.WARNING, logger="hpstudy.studies.storage"):
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert "cut a torn last record" in caplog.text
    # Optuna's plain backend would have glued the next record to the torn one: unloadable from then on.
    assert len(_study(url).trials) == 3


def test_damaged_journal_line_in_the_middle_is_an_error_naming_the_line(tmp_path):
    url = f"journal:///{tmp_path}/study.log"
    _study(url).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    lines = (tmp_path / "study.log").read_bytes().splitlines(keepends=True)
    lines[2] = b"garbage\n"
    (tmp_path / "study.log").write_bytes(b"".join(lines))
    with pytest.raises(ConfigError, match="damaged at line 3"):
        storages.open_storage(url)


def test_stale_lock_files_are_removed_with_a_log_line(tmp_path, caplog):
    url = f"journal:///{tmp_path}/study.log"
    _study(url)
    lock = tmp_path / "study.log.lock"
    lock.touch()
    hour_ago = time.time() - 3600
    os.utime(lock, (hour_ago, hour_ago))
    with caplog.at_level(logging.WARNING, logger="hpstudy.studies.storage"):
        study = _study(url)
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # would wait forever on the lock
    assert "removed stale lock file" in caplog.text and str(lock) in caplog.text


def _hold(url, held, release):
    with storages.StudyLock(url, "s"):
        held.set()
        release.wait(30)


@pytest.mark.parametrize("kind", ["journal", "postgresql"])
def test_study_lock_excludes_other_processes_and_dies_with_them(tmp_path, postgres, kind):
    url = f"journal:///{tmp_path}/study.log" if kind == "journal" else postgres.create_database("locks")
    ctx = multiprocessing.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(url, held, release))
    holder.start()
    assert held.wait(60)
    lock = storages.StudyLock(url, "s")
    other = storages.StudyLock(url, "another study")
    with other:
        pass  # locks are per study
    result = []
    start = time.monotonic()
    import threading

    def take():
        with lock:
            result.append(time.monotonic() - start)

    thread = threading.Thread(target=take)
    thread.start()
    time.sleep(1.0)
    assert not result, "the lock was taken while another process held it"
    if kind == "postgresql":
        holder.kill()  # PostgreSQL drops a dead session's advisory locks at once
    else:
        release.set()
    thread.join(30)
    assert result and result[0] >= 1.0
    holder.join(30)
    lock.close()
    other.close()


def test_a_second_driver_on_one_sqlite_study_is_refused(tmp_path):
    url = f"sqlite:///{tmp_path}/hpstudy.db"
    study = _study(url)
    lease = DriverLease(study).start()
    try:
        with pytest.raises(ConfigError, match="SQLite takes one driver per study") as info:
            check_single_driver(url, "s")
        assert info.value.field == "storage"
    finally:
        lease.stop()
    check_single_driver(url, "s")  # a stopped driver does not count
    assert live_drivers(study) == {}


def test_a_killed_drivers_lease_is_dead_at_once_on_its_host(tmp_path):
    url = f"sqlite:///{tmp_path}/hpstudy.db"
    study = _study(url)
    child = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    child.start()
    child.join()
    study._storage.set_study_system_attr(study._study_id, "hpstudy:driver:gone", {
        "host": socket.gethostname(), "pid": child.pid, "started": time.time(), "beat": time.time(), "stopped": False})
    assert "gone" not in live_drivers(study)


def test_a_grid_trial_killed_before_drawing_all_its_parameters_is_requeued_whole(tmp_path):
    # The driver was killed between study.ask() and the last suggest: the trial is RUNNING with only
    # some parameters. Found by the kill -9 fault test; GridSampler refuses a partial enqueued point.
    from hpstudy.studies.optuna_tune import recover_interrupted
    from hpstudy.studies.samplers import make_sampler

    grid = {"lr": [0.1, 0.01], "batch_size": [64, 128]}
    study = optuna.create_study(study_name="g", storage=storages.open_storage(f"sqlite:///{tmp_path}/h.db"),
                                sampler=make_sampler("grid", grid, seed=0))
    cut = study.ask()
    lr = cut.suggest_categorical("lr", grid["lr"])  # killed here, before batch_size
    assert recover_interrupted(study, from_dead_drivers_besides="me") == [cut.number]

    again = study.ask()
    assert again.user_attrs["retry_of"] == cut.number
    points = [{name: again.suggest_categorical(name, grid[name]) for name in grid}]
    assert points[0]["lr"] == lr  # the same grid point, now whole
    study.tell(again, 0.5)
    for _ in range(3):
        trial = study.ask()
        points.append({name: trial.suggest_categorical(name, grid[name]) for name in grid})
        study.tell(trial, 0.5)
    assert sorted((p["lr"], p["batch_size"]) for p in points) == sorted(
        (lr_, bs) for lr_ in grid["lr"] for bs in grid["batch_size"])  # each point once


def test_a_grid_trial_killed_inside_ask_before_the_sampler_ran_is_replaced(tmp_path):
    # The driver was killed inside study.ask(), after the trial row was created and before the grid
    # sampler gave it a point (found by the kill -9 fault test): no parameters, no grid id. Nothing can
    # be queued again; a new trial takes its place, and every grid point still runs exactly once.
    from hpstudy.studies.optuna_tune import recover_interrupted
    from hpstudy.studies.samplers import make_sampler

    grid = {"lr": [0.1, 0.01], "batch_size": [64, 128]}
    study = optuna.create_study(study_name="g", storage=storages.open_storage(f"sqlite:///{tmp_path}/h.db"),
                                sampler=make_sampler("grid", grid, seed=0))
    study._storage.create_new_trial(study._study_id)  # what ask() has done when the kill lands
    assert recover_interrupted(study, from_dead_drivers_besides="me") == [0]
    dead = study.get_trials(deepcopy=False)[0]
    assert dead.state.name == "FAIL" and "grid_id" not in dead.system_attrs  # no point marked visited
    assert "replaced by a new trial" in dead.user_attrs["reason"]
    assert not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    points = []
    for _ in range(4):
        trial = study.ask()
        points.append(tuple(trial.suggest_categorical(name, grid[name]) for name in grid))
        study.tell(trial, 0.5)
    assert sorted(points) == sorted((lr, bs) for lr in grid["lr"] for bs in grid["batch_size"])


def test_a_grid_trials_parameters_are_its_recorded_point_without_reading_the_trial_back(tmp_path, monkeypatch):
    # GridSampler reads the whole trial from the storage for every parameter (its grid id); the driver's
    # sampler answers from the point it chose, while Tune's event loop and the next trial wait.
    from hpstudy.studies.samplers import GRID_POINT, make_sampler

    grid = {"lr": [0.1, 0.01], "batch_size": [64, 128], "optimizer": ["sgd", "adam"]}
    study = optuna.create_study(study_name="g", storage=storages.open_storage(f"sqlite:///{tmp_path}/h.db"),
                                sampler=make_sampler("grid", grid, seed=0))
    points = []
    for _ in range(8):
        trial = study.ask()
        reads = []
        real = study._storage.get_trial
        monkeypatch.setattr(study._storage, "get_trial", lambda trial_id: reads.append(trial_id) or real(trial_id))
        params = {name: trial.suggest_categorical(name, grid[name]) for name in grid}
        monkeypatch.undo()
        assert reads == []
        assert params == study._storage.get_trial(trial._trial_id).system_attrs[GRID_POINT]
        points.append(tuple(params.values()))
        study.tell(trial, 0.5)
    assert len(set(points)) == 8  # every point once


@pytest.mark.parametrize("lost", ["create table", "stamp version"])
def test_sqlite_tables_created_by_another_process_at_the_same_moment_are_opened(tmp_path, monkeypatch, lost):
    # Two processes opening a new SQLite file at once both find no tables and both create them: the
    # loser's open fails with "already exists", or on the schema version's row (both seen in CI: a
    # poller against the driver). The second attempt finds the schema. Only these errors are retried.
    import sqlalchemy.exc

    url = f"sqlite:///{tmp_path}/h.db"
    real, calls = optuna.storages.RDBStorage, []
    error = {"create table": sqlalchemy.exc.OperationalError(
                 "CREATE TABLE studies", {}, Exception("table studies already exists")),
             "stamp version": sqlalchemy.exc.IntegrityError(
                 "INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed: alembic_version.version_num"))}

    def racing(url_, *args, **kwargs):
        calls.append(url_)
        if len(calls) == 1:
            real(url_)  # the other process wins the race
            raise error[lost]
        return real(url_, *args, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    assert isinstance(storages.open_storage(url), real) and len(calls) == 2

    calls.clear()
    monkeypatch.setattr(optuna.storages, "RDBStorage", lambda *a, **k: (_ for _ in ()).throw(
        sqlalchemy.exc.OperationalError("SELECT", {}, Exception("database is locked"))))
    with pytest.raises(sqlalchemy.exc.OperationalError, match="locked"):
        storages.open_storage(url)


def test_postgresql_tables_created_by_other_tools_at_the_same_moment_are_opened(postgres):
    # optuna-dashboard, the optuna CLI or a user's script may open a new database just as a driver does,
    # and none of them takes hpstudy's lock: both create Optuna's tables, and one transaction loses on a
    # duplicate type. Two plain openers race two of hpstudy's on each new database; Optuna's own open
    # may lose (not ours to change), hpstudy's must not (without the retry it lost 11 of 20).
    import sqlalchemy.exc

    failures, opened = [], []
    for k in range(5):
        url = postgres.create_database(f"opened_by_others_{k}")
        start = threading.Barrier(4)

        def plain():
            start.wait()
            with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
                opened.append(optuna.storages.RDBStorage(url))

        def ours():
            start.wait()
            try:
                opened.append(storages.open_storage(url))
            except Exception as exc:
                failures.append(exc)

        threads = [threading.Thread(target=f) for f in (plain, ours, plain, ours)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        optuna.create_study(study_name="s", storage=storages.open_storage(url)).ask()  # the schema is whole
    for storage in opened:
        storage.engine.dispose()
    assert failures == []


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "journal"])
def test_set_trial_attrs_writes_every_attribute_in_one_commit_on_an_rdb(tmp_path, postgres, kind):
    import sqlalchemy

    url = {"sqlite": f"sqlite:///{tmp_path}/hpstudy.db", "journal": f"journal:///{tmp_path}/study.log",
           "postgresql": postgres.create_database("attrs") if kind == "postgresql" else None}[kind]
    study = optuna.create_study(study_name="s", storage=storages.open_storage(url))
    trial = study.ask()
    commits = []
    backend = getattr(study._storage, "_backend", study._storage)
    if kind != "journal":
        sqlalchemy.event.listen(backend.engine, "commit", lambda conn: commits.append(1))
    user = {"history": [{"epoch": 1, "val_acc": 0.5}], "status": "completed", "reason": "", "test": {"acc": 0.9}}
    storages.set_trial_attrs(study, trial._trial_id, user)
    storages.set_trial_attrs(study, trial._trial_id, {"grid_id": 3, "point": {"lr": 0.1}}, system=True)
    if kind != "journal":  # the batched path runs on the installed Optuna: one commit per call
        assert len(commits) == 2
    stored = optuna.load_study(study_name="s", storage=storages.open_storage(url)).trials[0]
    assert stored.user_attrs == user
    assert {k: stored.system_attrs[k] for k in ("grid_id", "point")} == {"grid_id": 3, "point": {"lr": 0.1}}
    study.tell(trial, 1.0)
    with pytest.raises(RuntimeError):  # a finished trial is refused, as by Optuna's own call
        storages.set_trial_attrs(study, trial._trial_id, {"status": "late"})


def test_recovering_reads_the_leases_only_when_another_drivers_trial_runs(tmp_path, monkeypatch):
    # The searcher calls recover_interrupted before every new trial with the trials it has just read.
    from hpstudy.studies import optuna_tune
    from hpstudy.studies.drivers import DRIVER_ATTR

    study = optuna.create_study(study_name="r", storage=storages.open_storage(f"sqlite:///{tmp_path}/h.db"))
    mine = study.ask()
    mine.set_user_attr(DRIVER_ATTR, "me")
    mine.suggest_float("lr", 0.01, 0.1)
    reads = []
    monkeypatch.setattr(optuna_tune, "live_drivers", lambda s: reads.append(1) or [])
    trials = study.get_trials(deepcopy=False)
    assert optuna_tune.recover_interrupted(study, from_dead_drivers_besides="me", trials=trials) == []
    assert reads == []  # only this driver's trial runs: no lease to read

    theirs = study.ask()  # a driver that is gone (its lease is not among the live ones)
    theirs.set_user_attr(DRIVER_ATTR, "gone")
    theirs.suggest_float("lr", 0.01, 0.1)
    trials = study.get_trials(deepcopy=False)
    assert optuna_tune.recover_interrupted(study, from_dead_drivers_besides="me", trials=trials) == [theirs.number]
    assert reads == [1]
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    assert states == ["RUNNING", "FAIL", "WAITING"]  # its parameters are queued again; ours untouched
