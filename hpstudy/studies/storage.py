"""Optuna storages by URL, and the lock that several drivers of one study share.

- ``sqlite:///FILE``: the laptop default; one driver per study (SQLite has one writer, and its file
  locks are unreliable on network filesystems).
- ``postgresql+psycopg://USER:PASS@HOST[:PORT]/DB``: many drivers and workers.
- ``journal:///PATH`` (``journal:////abs/path.log``): Optuna's JournalStorage on a file, for clusters
  that share only a filesystem (NFS). The file backend is wrapped so that a record torn by a writer
  killed mid-append is cut off (with a log line) instead of making the study unloadable.

``study_lock`` serialises the few steps that must not interleave between drivers (creating a trial,
re-queueing an interrupted one, opening the MLflow parent run): a PostgreSQL advisory lock, or an
O_EXCL lock file next to a SQLite or journal file (Optuna's own NFS-safe lock, with its grace period
for a lock left by a killed process).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

try:  # Optuna's internals, for set_trial_attrs; without them it writes one attribute at a time
    from optuna.storages._rdb import models as _rdb_models
    from optuna.storages._rdb.storage import _create_scoped_session
except ImportError:  # pragma: no cover - a later Optuna
    _rdb_models = _create_scoped_session = None

from hpstudy.trainables.config import ConfigError

log = logging.getLogger(__name__)

SQLITE = "sqlite:///"
JOURNAL = "journal:///"
POSTGRES = ("postgresql://", "postgresql+psycopg://")
LOCK_GRACE_S = 30  # a lock file older than this was left by a killed process (holds last milliseconds)
CONNECT_TIMEOUT_S = 5  # an unreachable server fails the command in seconds, not minutes


def kind(url: str) -> str:
    if url.startswith(SQLITE):
        return "sqlite"
    if url.startswith(JOURNAL):
        return "journal"
    if url.startswith(POSTGRES):
        return "postgresql"
    raise ConfigError("storage", f"unsupported storage URL {url!r} (use sqlite:///FILE, "
                                 f"postgresql+psycopg://USER:PASSWORD@HOST/DB or journal:///FILE)")


def shown(url: str) -> str:
    """A storage URL as printed: a PostgreSQL password masked (terminals and batch logs are read by others)."""
    if url.startswith(POSTGRES):
        import sqlalchemy

        try:
            return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
        except Exception:  # not parseable: show no part of it that could hold a secret
            return url.split("://", 1)[0] + "://..."
    return url


def file_path(url: str) -> Path:
    """The file of a sqlite or journal URL (three slashes: relative; four: absolute)."""
    return Path(url[len(SQLITE):] if url.startswith(SQLITE) else url[len(JOURNAL):])


def check_storage_url(url: str) -> None:
    """Syntax and, for files, a writable directory; touches nothing."""
    if kind(url) in ("sqlite", "journal"):
        check_file_url("storage", url, file_path(url))
    elif "@" not in url and "/" not in url.split("://", 1)[1]:
        raise ConfigError("storage", f"{shown(url)}: expected postgresql+psycopg://USER:PASSWORD@HOST[:PORT]/DB")


def check_file_url(field_name: str, url: str, path: Path) -> None:
    """A file URL (a storage's or MLflow's) names a file in a directory this process can write in."""
    if not str(path) or path.name in ("", ".", ".."):
        raise ConfigError(field_name, f"{url}: no file name")
    if path.name == ":memory:":  # MLflow's store failed with a traceback after the study was written
        raise ConfigError(field_name, f"{url}: an in-memory database ends with this process and is not shared "
                                      f"between its threads: name a file (sqlite:///FILE)")
    if not path.parent.is_dir():
        raise ConfigError(field_name, f"{url}: directory {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise ConfigError(field_name, f"{url}: directory {path.parent} is not writable")


def pg_engine(url: str):
    """A SQLAlchemy engine for one PostgreSQL connection at a time, failing fast when unreachable."""
    import sqlalchemy

    return sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool,
                                    connect_args={"connect_timeout": CONNECT_TIMEOUT_S})


def exists(url: str) -> bool:
    """False when a file storage has no file yet (opening it would create one)."""
    return kind(url) == "postgresql" or file_path(url).exists()


def open_storage(url: str) -> optuna.storages.BaseStorage:
    check_storage_url(url)
    if kind(url) == "journal":
        path = file_path(url)
        _remove_stale_lock(Path(f"{path}.lock"))
        backend = RepairingJournalFileBackend(str(path), JournalFileOpenLock(str(path), grace_period=LOCK_GRACE_S))
        backend.repair()
        return JournalStorage(backend)
    if kind(url) == "sqlite":
        return open_beside_other_creators(lambda: optuna.storages.RDBStorage(url))
    # Optuna creates its tables on first use; several drivers starting at once on an empty database
    # would collide (duplicate key in pg_type), so the creation is serialised by an advisory lock.
    with _pg_advisory_lock(url, _SCHEMA_LOCK_KEY):
        engine_kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}
        return open_beside_other_creators(lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs))


T = TypeVar("T")

# What a database says to a process that lost the race to create a schema (Optuna's tables, MLflow's) to
# another process between its check and its own write: SQLite "table studies already exists", a UNIQUE
# failure on alembic_version; PostgreSQL "duplicate key value violates unique constraint pg_type_...".
_CREATED_MEANWHILE = ("already exists", "alembic_version", "duplicate key")


def open_beside_other_creators(open_: Callable[[], T]) -> T:
    """``open_()``, again if another process created the schema at the same moment: a dashboard, the optuna
    CLI, `mlflow server` or a script, none of which takes hpstudy's locks. The schema is there then (each
    creator's transaction has committed). On a new PostgreSQL database, 2 drivers racing 2 plain Optuna
    openers lost 11 of 20 opens without this; 2 plain MLflow processes lost 4 of 8 (session 16)."""
    for attempt in range(3):
        try:
            return open_()
        except Exception as exc:  # SQLAlchemy's errors, or MLflow's wrapping of them
            if not any(text in str(exc) for text in _CREATED_MEANWHILE):
                raise
            time.sleep(0.2 * (attempt + 1))  # while the other creator's transaction commits
    return open_()  # a last time, raising whatever it meets


def set_trial_attrs(study: optuna.Study, trial_id: int, attrs: dict[str, Any], *, system: bool = False) -> None:
    """Several user (or system) attributes of one unfinished trial, in one transaction on an RDB storage.

    Optuna commits each attribute on its own, and the driver writes a finished trial's eight while Tune's
    event loop, and so the next trial, waits: on SQLite eight commits took 46-53 ms, one 16-17 ms (a
    micro-benchmark, two runs). Elsewhere (a journal, or an Optuna whose internals moved), one call each.
    """
    storage = study._storage
    # _CachedStorage forwards attribute writes and caches finished trials only: writing to its backend
    # directly leaves nothing stale.
    backend = getattr(storage, "_backend", storage)
    if (_create_scoped_session is not None and isinstance(backend, optuna.storages.RDBStorage)
            and hasattr(backend, "_set_trial_attr_without_commit")):
        model = _rdb_models.TrialSystemAttributeModel if system else _rdb_models.TrialUserAttributeModel
        # Integrity errors raise here (Optuna's own call ignores them): they must not drop a whole batch.
        with _create_scoped_session(backend.scoped_session) as session:
            for key, value in attrs.items():
                backend._set_trial_attr_without_commit(session, model, trial_id, key, value)
        return
    write = storage.set_trial_system_attr if system else storage.set_trial_user_attr
    for key, value in attrs.items():
        write(trial_id, key, value)


_SCHEMA_LOCK_KEY = int.from_bytes(hashlib.sha256(b"hpstudy: optuna schema").digest()[:8], "big", signed=True)


@contextlib.contextmanager
def _pg_advisory_lock(url: str, key: int) -> Iterator[None]:
    import sqlalchemy

    engine = pg_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
    finally:
        engine.dispose()


class RepairingJournalFileBackend(JournalFileBackend):
    """Optuna's file journal, minus one failure: a writer killed mid-append leaves a last line with no
    newline; the next append would glue its record to it, and that line (and the study) would no longer
    load (JSONDecodeError). Here every append first cuts a torn tail, under the journal's own lock."""

    def repair(self) -> None:
        with _held(self._lock):
            self._cut_torn_tail()
            self._check_complete_lines()

    def append_logs(self, logs: list[dict]) -> None:
        with _held(self._lock):
            self._cut_torn_tail()
            data = "".join(json.dumps(entry, separators=(",", ":")) + "\n" for entry in logs).encode()
            with open(self._file_path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())

    def _cut_torn_tail(self) -> None:
        with open(self._file_path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return
            keep = _last_newline_end(f, size)
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
        log.warning("journal %s: cut a torn last record (%d bytes, written by a process killed mid-append)",
                    self._file_path, size - keep)

    def _check_complete_lines(self) -> None:
        """A damaged line in the middle cannot be repaired safely: say where it is."""
        with open(self._file_path, "rb") as f:
            for number, line in enumerate(f, start=1):
                try:
                    json.loads(line)
                except ValueError:
                    raise ConfigError("storage", f"journal {self._file_path} is damaged at line {number}; "
                                                 f"restore it from a backup") from None


def _last_newline_end(f, size: int) -> int:
    """Offset just after the last newline in the file (0 when there is none)."""
    block = 1 << 16
    end = size
    while end > 0:
        start = max(0, end - block)
        f.seek(start)
        chunk = f.read(end - start)
        at = chunk.rfind(b"\n")
        if at >= 0:
            return start + at + 1
        end = start
    return 0


def _remove_stale_lock(lock_file: Path) -> None:
    # Optuna waits out a stale lock only after it has watched it for its grace period; a lock file that
    # is already older than that was left by a killed process, so it goes now, with a log line.
    try:
        age = time.time() - lock_file.stat().st_mtime
    except FileNotFoundError:
        return
    if age > LOCK_GRACE_S:
        with contextlib.suppress(FileNotFoundError):
            lock_file.unlink()
        log.warning("removed stale lock file %s (%.0f s old; left by a killed process)", lock_file, age)


@contextlib.contextmanager
def _held(lock) -> Iterator[None]:
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


class StudyLock:
    """Mutual exclusion between the drivers of one study; re-entrant within one driver."""

    def __init__(self, url: str, study_name: str):
        self._args = (url, study_name)
        self._depth = 0
        if kind(url) == "postgresql":
            # A session-level advisory lock on a connection of its own: PostgreSQL releases it
            # when the connection dies with its driver, so a killed driver never blocks the others.
            self._engine = pg_engine(url)
            self._conn = None
            self._key = int.from_bytes(hashlib.sha256(study_name.encode()).digest()[:8], "big", signed=True)
            self._file_lock = None
        else:
            name = hashlib.sha256(study_name.encode()).hexdigest()[:12]
            path = f"{file_path(url)}.hpstudy-{name}"
            _remove_stale_lock(Path(f"{path}.lock"))
            self._file_lock = JournalFileOpenLock(path, grace_period=LOCK_GRACE_S)

    # Tune pickles its searcher (which holds this lock) into its experiment snapshot: pickle the
    # arguments, not the connection.
    def __getstate__(self) -> tuple[str, str]:
        return self._args

    def __setstate__(self, args: tuple[str, str]) -> None:
        self.__init__(*args)

    def __enter__(self) -> "StudyLock":
        if self._depth == 0:
            if self._file_lock is not None:
                self._file_lock.acquire()
            else:
                import sqlalchemy

                if self._conn is None:
                    self._conn = self._engine.connect()
                self._conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
                self._conn.commit()
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            if self._file_lock is not None:
                self._file_lock.release()
            else:
                import sqlalchemy

                self._conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
                self._conn.commit()

    def close(self) -> None:
        if self._file_lock is None:
            if self._conn is not None:
                self._conn.close()
            self._engine.dispose()
