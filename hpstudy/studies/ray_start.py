"""The Ray a study runs on: a local Ray started beside the driver's setup, or a cluster attached to before
anything is written; and its stop."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import traceback

from hpstudy.trainables.config import ConfigError


def check_ray_address(address: str) -> None:
    """A reachable head node, probed with a 5 s TCP connect: ray.init waits minutes on a dead address."""
    if address == "auto":
        return  # Ray finds the local cluster itself
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError("ray_address", f"expected HOST:PORT, ray://HOST:PORT or auto (got {address!r})")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise ConfigError("ray_address", f"cannot reach a Ray head at {address}: {exc.strerror or exc}") from None


def ray_address(asked: str | None) -> str:
    """The Ray cluster a run attaches to (``--ray-address``, else RAY_ADDRESS), or "local" for a Ray of its own."""
    return asked or os.environ.get("RAY_ADDRESS") or "local"


def attach_to_cluster(asked: str | None) -> RayStart | None:
    """Connect to the run's Ray cluster before anything is written (None when the run starts a Ray of its
    own, which then overlaps the setup). A head can accept TCP and still refuse the driver: one that uses
    token authentication refuses a driver without its token (Ray's `ray start --head` turns token auth on
    by itself when ~/.ray/auth_token exists, which any earlier local run leaves there), and Ray retries
    that for 20 s, then raises a traceback. Refused here, the run ends with one line and leaves no study
    and no MLflow run behind. Attaching takes about a second, so nothing is lost by not overlapping it."""
    import ray

    address = ray_address(asked)
    if address == "local" or ray.is_initialized():
        return None
    with HeldStderr() as held:
        ray_start = RayStart(address)
        try:
            ray_start.wait()
        except Exception as exc:
            ray_start.stop()
            held.drop()  # Ray's C++ client wrote a warning per retry (20 for a refused token): ours says it
            raise ConfigError("ray_address", cluster_refusal(address, exc)) from None
    return ray_start


class HeldStderr(contextlib.AbstractContextManager):
    """File descriptor 2 held in a temporary file for the block (C++ code such as Ray's writes there
    directly, past sys.stderr), then written out, unless ``drop()`` was called."""

    def __enter__(self) -> "HeldStderr":
        sys.stderr.flush()
        self._saved = os.dup(2)
        self._file = tempfile.TemporaryFile()
        os.dup2(self._file.fileno(), 2)
        self._keep = True
        return self

    def drop(self) -> None:
        self._keep = False

    def __exit__(self, *exc) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        with self._file:
            if self._keep:
                self._file.seek(0)
                while chunk := self._file.read(1 << 16):  # to fd 2, where it was going
                    os.write(2, chunk)


def cluster_refusal(address: str, exc: BaseException) -> str:
    """What a user can act on, from ``ray.init``'s error (Ray names the cause only in the chained one)."""
    chain = "".join(traceback.format_exception(exc))
    if "AuthenticationError" in chain or "InvalidAuthToken" in chain:
        mode = os.environ.get("RAY_AUTH_MODE")
        here = f"RAY_AUTH_MODE={mode}" if mode else "RAY_AUTH_MODE is unset"
        return (f"the Ray cluster at {address} uses token authentication and refused this driver ({here}): "
                f"set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=FILE (or RAY_AUTH_TOKEN) to the token its "
                f"nodes were started with")
    cause = exc.__cause__ or exc
    return f"cannot connect to the Ray cluster at {address}: {type(cause).__name__}: {str(cause).splitlines()[0]}"


class RayStart:
    """``ray.init`` in a thread, so that it overlaps the driver's other setup.

    The thread lives until ``stop()``: Ray starts its GCS and raylet with PR_SET_PDEATHSIG, which
    Linux ties to the thread that spawned them, so they would be killed the moment it ended. From a
    thread, ray.init leaves the Python-level SIGTERM handler alone (from the main thread it installs one
    that exits at once, skipping the graceful stop); wait() undoes the C-level one its core worker
    installs. Worker output stays in Ray's log folder: the terminal shows one line per finished trial.
    The address "local" starts a Ray of our own, never whatever cluster `ray start` last recorded in
    /tmp/ray/ray_current_cluster."""

    def __init__(self, address: str):
        self.address = address
        self.error: BaseException | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hpstudy-ray", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import ray

        # Its one warning from a thread says that the SIGTERM handler was not replaced: as wanted.
        logging.getLogger("ray._private.worker").addFilter(_NOT_MAIN_THREAD_WARNING)  # added once
        logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_TOKEN_AUTH_NOTICE)
        try:
            ray.init(address=self.address, include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=False)
        except BaseException as exc:  # handed to the main thread by wait()
            self.error = exc
        finally:
            self._ready.set()
        self._stop.wait()

    def wait(self, raise_error: bool = True) -> None:
        """Until ray.init has returned; raises its error."""
        self._ready.wait()
        if threading.current_thread() is threading.main_thread():
            # Ray's core worker installs a C-level SIGTERM handler (a stack dump, then abort) over
            # Python's: re-installing the Python-level handler puts the caller's graceful stop back.
            handler = signal.getsignal(signal.SIGTERM)
            if handler is not None:
                signal.signal(signal.SIGTERM, handler)
        if self.error is not None and raise_error:
            raise self.error

    def stop(self) -> None:
        """Shut Ray down (once started), then let the thread end."""
        import ray

        self._ready.wait()
        try:
            if ray.is_initialized():
                try:
                    stop_autoscaler_monitor()
                finally:  # whatever that met, Ray is shut down
                    ray.shutdown()
        finally:
            self._stop.set()
            self._thread.join()


def stop_autoscaler_monitor() -> bool:
    """Kill the autoscaler monitor of a Ray this process started (a local Ray starts one; a single node
    has nothing to scale). ``ray.shutdown()`` stops the GCS first; the monitor, sent SIGTERM after it,
    tries to report its end to that GCS and is killed only after its second of grace: 1.0 of the 1.1 s
    ``ray.shutdown()`` took (0.3 s with the monitor gone first; session 11). Private to Ray: if it
    moves, shutdown just takes that second. Returns whether a monitor was stopped."""
    try:
        from ray._private import ray_constants, worker

        node = worker._global_node
        monitors = node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []) if node and node.head else []
    except (ImportError, AttributeError):
        return False
    for info in monitors:
        info.process.kill()  # no handler to run: nothing of it is needed any more
        info.process.wait(timeout=10)
    return bool(monitors)


def gcs_address() -> str | None:
    """The GCS of the Ray this process is connected to ("host:port"), or None."""
    import ray

    return ray.get_runtime_context().gcs_address if ray.is_initialized() else None


def let_trials_take_prestarted_workers() -> None:
    """Tune gives each trial actor the runtime env {"PL_DISABLE_FORK": "1"} (a PyTorch Lightning
    workaround, ray-project/ray#28197; hpstudy has no Lightning). Any runtime env makes Ray start a
    new worker process for the first trial instead of handing it one of the idle workers the raylet
    starts with Ray, one per CPU. Without it the first trial reports about 1 s sooner (bench figures
    in the README). Private to Tune: if it moves, trials still run, on new processes."""
    try:
        from ray.tune.execution import class_cache
    except ImportError:
        return
    getattr(class_cache, "DEFAULT_ENV_VARS", {}).pop("PL_DISABLE_FORK", None)


class WithoutMessage(logging.Filter):
    """Drops the log records whose message contains ``text`` (if a library rewords it, it simply shows)."""

    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


_NOT_MAIN_THREAD_WARNING = WithoutMessage("not the main thread")
# Ray 2.59+ announces, on every start of a local Ray, that token authentication is on and how to turn it
# off. hpstudy keeps it on for its Ray (README, "A Ray cluster"): between a study's lines the notice is noise,
# and its advice the wrong way round.
_TOKEN_AUTH_NOTICE = WithoutMessage("Token authentication is enabled for this Ray cluster")
