"""The driver's stop when the stop signal takes its Ray down with it.

SLURM's `scancel`, its preemption and a node's shutdown send SIGTERM to every process of a job at once:
the driver, and the GCS and raylet of the Ray it started. Tune's graceful stop then waits on the dead
GCS (``remove_placement_group``) until Ray aborts the driver 60 s later, so the driver's own stop
(re-queue its trials in Optuna, close their MLflow runs, end its lease) never runs and its trials stay
RUNNING until another run notices. Ray has no timeout for that wait, so ``GcsWatch`` does the stop
without Tune once a stop was asked for and the GCS no longer accepts connections.
"""

from __future__ import annotations

import socket
import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")

PROBE_S = 1.0  # between two connection attempts
MISSES = 3  # refused in a row before the GCS counts as gone (a GCS restarting under Ray's fault
# tolerance is back within this; one that is gone gets no closer to coming back)


class Once(Generic[T]):
    """A function run at most once, by whichever thread calls first; later calls wait for it and get
    its result (or its error again)."""

    def __init__(self, fn: Callable[[], T]):
        self._fn = fn
        self._lock = threading.Lock()
        self._done = False
        self._result: T | None = None
        self._error: BaseException | None = None

    def __call__(self) -> T:
        with self._lock:
            if not self._done:
                try:
                    self._result = self._fn()
                except BaseException as exc:
                    self._error = exc
                self._done = True
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]


def accepts_connections(address: str, timeout_s: float = PROBE_S) -> bool:
    """Whether something listens at "host:port" (a TCP connect, nothing sent)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


class GcsWatch:
    """Once ``stop_requested`` is set, probes the GCS at ``gcs_address()`` (None: no Ray to watch) every
    PROBE_S; after MISSES refusals in a row it calls ``on_gone`` from its own thread. ``cancel()`` ends the
    watch (the driver's stop got through on its own), and ``on_gone`` is never called after it returns."""

    def __init__(self, stop_requested: threading.Event, gcs_address: Callable[[], str | None],
                 on_gone: Callable[[], None], probe_s: float = PROBE_S, misses: int = MISSES):
        self._requested = stop_requested
        self._address = gcs_address
        self._on_gone = on_gone
        self._probe_s = probe_s
        self._misses = misses
        self._cancelled = threading.Event()
        self._lock = threading.Lock()  # cancel() waits for an on_gone already under way
        self._thread = threading.Thread(target=self._watch, name="hpstudy-gcs-watch", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._requested.wait(self._probe_s):
            if self._cancelled.is_set():
                return
        misses = 0
        while not self._cancelled.wait(self._probe_s):
            address = self._address()
            misses = 0 if address is None or accepts_connections(address, self._probe_s) else misses + 1
            if misses >= self._misses:
                with self._lock:
                    if not self._cancelled.is_set():
                        self._on_gone()
                return

    def cancel(self) -> None:
        with self._lock:
            self._cancelled.set()
