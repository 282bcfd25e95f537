"""The services a multi-node study uses, started for real: PostgreSQL (the session's `postgres` fixture),
an `mlflow server`, `optuna-dashboard` and a Ray head, each on free ports. The servers listen on 127.0.0.1
only and nothing has a default password (PostgreSQL's is random). Ray cannot be held to loopback, so its
head runs with token authentication (a private random token) and without its dashboard UI.

Every process is started in its own process group and stopped at teardown by its id; Ray's own processes
are found by this test's private Ray temp dir, so another test's (or user's) Ray is never touched."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest

BIN = Path(sys.executable).parent


def free_ports(n: int) -> list[int]:
    """``n`` different free ports: each socket stays bound until all are chosen (one at a time, the kernel
    may hand out a port it has just freed again: Ray's head once got the same port for two components)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RAY_", "OPTUNA_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Process:
    """A server started in its own process group, its output in a log file."""

    def __init__(self, name: str, cmd: list[str], logdir: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log = logdir / f"{name}.log"
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env or _clean_env(), start_new_session=True)

    def tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(lines[-n:])

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}\n{self.tail()}")

    def stop(self, grace: float = 5.0) -> None:
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(self.proc.pid, signal.SIGKILL)  # whatever of its group is left (gunicorn/uvicorn workers)
        self.proc.wait(10)
        self._out.close()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_http(process: Process, url: str, timeout: float, expect: bytes | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        process.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                body = response.read()
                if response.status == 200 and (expect is None or expect in body):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{process.name} did not answer {url} within {timeout:.0f} s\n{process.tail()}")
        time.sleep(0.3)


def pids_using(marker: str) -> list[int]:
    """Processes whose command line names `marker` (this test's private Ray temp dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(entry.name))
    return found


class RayHead(Process):
    """`ray start --head --block` with every port chosen here (a default port may belong to another
    Ray on this machine), its dashboard off, token authentication on with a private token, and a
    private temp dir that marks all its processes.

    Ray cannot be held to loopback: it resolves 127.0.0.1 to the machine's address (Ray 2.60,
    `resolve_ip_for_localhost`), so the token is what keeps others out. In Ray 2.60 a driver
    given an explicit address does not turn token auth on by itself: `env` (RAY_AUTH_MODE=token and
    the token's path) must be passed to `hpstudy run` as well."""

    def __init__(self, logdir: Path):
        # Short: Ray puts Unix sockets under it (108-byte limit), so not under pytest's long tmp paths.
        self.temp_dir = tempfile.mkdtemp(prefix="hpray-")
        self.token = secrets.token_hex(32)
        token_file = Path(self.temp_dir) / "auth_token"
        token_file.touch(mode=0o600)
        token_file.write_text(self.token)
        self.env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}
        names = ("--port", "--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                 "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port")
        ports = dict(zip(names, free_ports(len(names))))
        self.port = ports["--port"]
        cmd = [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0",
               "--include-dashboard=false", "--disable-usage-stats", "--temp-dir", self.temp_dir,
               *[str(x) for kv in ports.items() for x in kv]]
        super().__init__("ray", cmd, logdir, env={**_clean_env(), **self.env})
        self.address = f"127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in self.log.read_text(errors="replace"):
            self.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"ray did not start within {timeout:.0f} s\n{self.tail()}")
            time.sleep(0.3)

    def stop(self, grace: float = 5.0) -> None:
        try:
            # The whole group gets SIGTERM; Ray then "drains for up to 30 s", which a test need not wait for.
            super().stop(grace)
        finally:
            # Anything of this Ray left over (workers reparented away from the group): by our temp dir.
            for sig in (signal.SIGTERM, signal.SIGKILL):
                left = pids_using(self.temp_dir)
                for pid in left:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                if not left:
                    break
                time.sleep(2)
            shutil.rmtree(self.temp_dir, ignore_errors=True)


@dataclass
class Services:
    root: Path
    optuna_storage: str
    mlflow_backend: str
    mlflow_url: str
    dashboard_url: str
    ray_address: str
    ray_temp_dir: str  # marks this Ray's processes
    env: dict[str, str]  # what a command needs: PGPASSFILE, and Ray's token auth for a driver
    secrets: tuple[str, ...]  # the PostgreSQL password and the Ray token: nothing may show them
    processes: list[Process]
    timings: dict[str, float]

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.processes)


def without_password(url: str) -> str:
    import sqlalchemy

    u = sqlalchemy.engine.make_url(url)  # (URL.set(password=None) keeps the password)
    return sqlalchemy.engine.URL.create(u.drivername, u.username, None, u.host, u.port, u.database,
                                        u.query).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def services(postgres, tmp_path_factory):
    root = tmp_path_factory.mktemp("services")
    logs = root / "logs"
    logs.mkdir()
    # The password stays out of every command line (which any local user can read in /proc): the URLs
    # carry none and libpq reads it from the file PGPASSFILE names, as a user's ~/.pgpass.
    pgpass = root / "pgpass"
    pgpass.touch(mode=0o600)
    pgpass.write_text(f"127.0.0.1:{postgres.port}:*:postgres:{postgres.password}\n")
    saved_pgpassfile = os.environ.get("PGPASSFILE")
    processes: list[Process] = []
    timings: dict[str, float] = {}
    try:
        os.environ["PGPASSFILE"] = str(pgpass)  # for this process's own Optuna and SQLAlchemy connections
        optuna_storage = without_password(postgres.create_database("optuna"))
        mlflow_backend = without_password(postgres.create_database("mlflow"))
        # optuna-dashboard opens its storage without creating tables and exits on an empty database
        # ("relation version_info does not exist"); the schema is what `hpstudy run` would create.
        optuna.storages.RDBStorage(optuna_storage).engine.dispose()
        mlflow_port, dashboard_port = free_ports(2)
        # All three start at once (each takes seconds); then each is waited for.
        ray = RayHead(logs)
        processes.append(ray)
        env = {"PGPASSFILE": str(pgpass), **ray.env}  # what a command needs: the database and Ray credentials
        mlflow = Process("mlflow", [str(BIN / "mlflow"), "server", "--backend-store-uri", mlflow_backend,
                                    "--artifacts-destination", str(root / "mlartifacts"),
                                    "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"], logs,
                         env={**_clean_env(), **env})
        processes.append(mlflow)
        dashboard = Process("optuna-dashboard", [str(BIN / "optuna-dashboard"), optuna_storage,
                                                 "--host", "127.0.0.1", "--port", str(dashboard_port)], logs,
                            env={**_clean_env(), **env})
        processes.append(dashboard)
        mlflow_url, dashboard_url = f"http://127.0.0.1:{mlflow_port}", f"http://127.0.0.1:{dashboard_port}"
        started = time.monotonic()
        wait_http(dashboard, f"{dashboard_url}/api/studies", timeout=120)
        timings["optuna-dashboard up"] = time.monotonic() - started
        wait_http(mlflow, f"{mlflow_url}/health", timeout=240, expect=b"OK")
        timings["mlflow server up"] = time.monotonic() - started
        ray.wait_ready(timeout=240)
        timings["ray head up"] = time.monotonic() - started
        yield Services(root=root, optuna_storage=optuna_storage, mlflow_backend=mlflow_backend,
                       mlflow_url=mlflow_url, dashboard_url=dashboard_url, ray_address=ray.address,
                       ray_temp_dir=ray.temp_dir, env=env, secrets=(postgres.password, ray.token),
                       processes=processes, timings=timings)
    finally:
        started = time.monotonic()

        def stop(process: Process) -> None:
            process.stop()
            timings[f"{process.name} stopped"] = time.monotonic() - started

        with ThreadPoolExecutor(len(processes) or 1) as pool:  # each waits for its own grace period
            for future in [pool.submit(stop, p) for p in processes]:
                future.result()
        print("\nservices, seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
        if saved_pgpassfile is None:
            os.environ.pop("PGPASSFILE", None)
        else:
            os.environ["PGPASSFILE"] = saved_pgpassfile


CHROMIUM = ("chromium", "chromium-browser")  # Debian, Ubuntu


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's headless chromium driven by Selenium through the system chromedriver (no Selenium
    Manager: nothing is downloaded). Missing pieces fail the tests: CI must exercise them."""
    binary = next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.fail("the services test needs chromium and chromedriver: `apt-get install --no-install-recommends "
                    "chromium chromium-driver` (.ci/run installs them, through .ci/system-packages)", pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the services test needs selenium: `pip install -e '.[test]'`", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1600,1200",
                "--disable-gpu", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    # Its profile and its singleton-socket folder (which it leaves behind in $TMPDIR) go in the test's tmp.
    scratch = tmp_path_factory.mktemp("chromium")
    options.add_argument(f"--user-data-dir={scratch / 'profile'}")
    service = Service(driver_path, env={**os.environ, "TMPDIR": str(scratch)})
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
