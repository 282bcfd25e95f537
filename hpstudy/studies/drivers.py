"""Which driver runs which trial, so that several `hpstudy run` processes can share one study.

Optuna's heartbeat (``RDBStorage(heartbeat_interval=...)``) beats only inside ``study.optimize()``,
and JournalStorage has none; hpstudy drives its studies with ask/tell. So each driver keeps a lease
in the study's system attrs (host, pid, last beat), refreshed by a thread, and tags every trial it
starts with its lease id. A RUNNING trial whose driver is gone (its process no longer exists on this
host, or its lease has not been renewed for GRACE_S) is re-queued by the driver that notices first,
under the study lock, so it is re-queued exactly once.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import Any

import optuna

from hpstudy.processes import pid_exists

LEASE_PREFIX = "hpstudy:driver:"
DRIVER_ATTR = "driver"  # a trial's user attr: the lease id of the driver running it
BEAT_S = float(os.environ.get("HPSTUDY_DRIVER_BEAT_S", "5"))
GRACE_S = float(os.environ.get("HPSTUDY_DRIVER_GRACE_S", "60"))  # > BEAT_S plus clock skew between hosts
HOST = socket.gethostname()


def leases(system_attrs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k[len(LEASE_PREFIX):]: v for k, v in system_attrs.items() if k.startswith(LEASE_PREFIX)}


def is_alive(lease: dict[str, Any] | None, now: float | None = None) -> bool:
    if not lease or lease.get("stopped"):
        return False
    if lease.get("host") == HOST and not pid_exists(int(lease["pid"])):
        return False  # killed on this host: no need to wait for the grace period
    return (now or time.time()) - float(lease["beat"]) <= GRACE_S


def live_drivers(study: optuna.Study, exclude: str | None = None) -> dict[str, dict[str, Any]]:
    now = time.time()
    attrs = study._storage.get_study_system_attrs(study._study_id)
    return {i: lease for i, lease in leases(attrs).items() if i != exclude and is_alive(lease, now)}


class DriverLease:
    """This driver's lease on a study, renewed every BEAT_S seconds by a daemon thread."""

    def __init__(self, study: optuna.Study):
        self.study = study
        self.id = uuid.uuid4().hex[:12]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat_forever, name="hpstudy-driver-lease", daemon=True)
        self._started = time.time()

    def start(self) -> "DriverLease":
        self._write(stopped=False)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=BEAT_S + 5)
        self._write(stopped=True)

    def _write(self, stopped: bool) -> None:
        self.study._storage.set_study_system_attr(self.study._study_id, LEASE_PREFIX + self.id, {
            "host": HOST, "pid": os.getpid(), "started": self._started, "beat": time.time(), "stopped": stopped})

    def _beat_forever(self) -> None:
        while not self._stop.wait(BEAT_S):
            try:
                self._write(stopped=False)
            except Exception:  # a storage hiccup: the next beat tries again, well within the grace period
                pass
