"""The MLflow store a study opens while other MLflow processes (`mlflow ui`, as the README runs it beside a
study; `mlflow server`) open the same database: real MLflow on both sides, the others in their own
processes; SQLite files, and a real PostgreSQL server."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import sqlalchemy
from mlflow.store.db import utils as db_utils
from mlflow.tracking import MlflowClient

from hpstudy.studies import mlflow_tracking

# The other MLflow process: imports first (seconds), says so, then waits for its cue and opens the store
# as `mlflow ui` does, saying whether the schema was whole when it first saw the file.
OTHER = """
import os, sys, time
import sqlalchemy
from mlflow.store.db import utils
from mlflow.tracking import MlflowClient
path, cue = sys.argv[1], sys.argv[2]
print("ready", flush=True)
while not os.path.exists(path if cue == "file" else cue):
    time.sleep(0.005)
engine = sqlalchemy.create_engine("sqlite:///" + path)
whole = os.path.exists(path) and utils._all_tables_exist(engine)
engine.dispose()
MlflowClient("sqlite:///" + path).search_experiments()
print("whole" if whole else "partial", flush=True)
"""


def _other(path, cue: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", OTHER, str(path), cue], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def _at_latest_revision(path) -> bool:
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    try:
        return db_utils._get_schema_version(engine) == db_utils._get_latest_schema_revision()
    finally:
        engine.dispose()


def test_a_new_store_appears_whole_to_another_mlflow_process(tmp_path):
    # The other process opens the file the moment it exists. MLflow alone creates it in place and migrates
    # it for 1.5-3 s, so the other would see a partial schema and migrate it too (session 16: 4 of 6 runs
    # failed that way, 2 leaving the file broken for good).
    path = tmp_path / "mlflow.db"
    other = _other(path, "file")
    mlflow_tracking.prepare_store(f"sqlite:///{path}")
    MlflowClient(f"sqlite:///{path}").search_experiments()
    out, err = other.communicate(timeout=120)
    assert other.returncode == 0, err
    assert out.strip() == "whole"
    assert _at_latest_revision(path)
    assert [p.name for p in tmp_path.iterdir()] == ["mlflow.db"]  # no temporary file left


def test_a_store_another_process_is_creating_is_opened_once_it_is_whole(tmp_path):
    # The other process (started first) creates the file in place and migrates it; the driver's store must
    # wait for that, not migrate the same file at the same time.
    path, cue = tmp_path / "mlflow.db", tmp_path / "go"
    other = _other(path, str(cue))
    cue.touch()
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, other.stderr.read()
        time.sleep(0.005)
    mlflow_tracking.prepare_store(f"sqlite:///{path}")
    assert _at_latest_revision(path)
    MlflowClient(f"sqlite:///{path}").search_experiments()
    out, err = other.communicate(timeout=120)
    assert other.returncode == 0, err


def test_temporary_stores_of_killed_drivers_are_removed(tmp_path):
    path = tmp_path / "mlflow.db"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    stale = [tmp_path / f".mlflow.db.{dead}.tmp", tmp_path / f".mlflow.db.{dead}.tmp-journal"]
    live = tmp_path / f".mlflow.db.{os.getppid()}.tmp"  # a driver still at it (pytest's parent lives)
    for file in (*stale, live):
        file.write_bytes(b"")
    mlflow_tracking.prepare_store(f"sqlite:///{path}")
    assert not any(file.exists() for file in stale)
    assert live.exists() and _at_latest_revision(path)


# Another MLflow process on a PostgreSQL database: imports, says so, opens the store at its cue. It may lose
# the race itself (MLflow's own open; not ours to change): it says which.
OTHER_PG = """
import os, sys, time
import psycopg
from mlflow.tracking import MlflowClient
url, cue = sys.argv[1], sys.argv[2]
MlflowClient(f"sqlite:///{cue}-{os.getpid()}.db").search_experiments()  # MLflow's store code, loaded
print("ready", flush=True)
while not os.path.exists(cue):
    time.sleep(0.002)
try:
    MlflowClient(url).search_experiments()
    print("opened", flush=True)
except Exception as exc:
    print("lost", type(exc).__name__, flush=True)
"""


def test_a_new_postgresql_store_created_by_others_at_the_same_moment_is_opened(postgres, tmp_path):
    # Two other processes open each new database, and the driver just after them, while their migration is
    # under way. PostgreSQL migrates in one transaction, so a loser sees a duplicate key and the database
    # stays whole.
    __import__("psycopg")  # loaded before the race, as in the others
    MlflowClient(f"sqlite:///{tmp_path}/warm.db").search_experiments()
    urls = [postgres.create_database(f"mlflow_race_{k}") for k in range(4)]
    others = []
    for k, url in enumerate(urls):
        for _ in range(2):
            proc = subprocess.Popen([sys.executable, "-c", OTHER_PG, url, str(tmp_path / f"go{k}")],
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            others.append(proc)
    for proc in others:
        assert proc.stdout.readline().strip() == "ready"
    for k, url in enumerate(urls):
        (tmp_path / f"go{k}").touch()
        time.sleep(0.1)  # the others begin first: their migration is under way, not yet committed (about 1 s)
        mlflow_tracking.prepare_store(url)  # raises if it lost
        assert MlflowClient(url).get_experiment("0") is not None
    for proc in others:
        proc.wait(timeout=120)
