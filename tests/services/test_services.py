"""The services of a multi-node study, started for real as CI starts them (PostgreSQL, `mlflow server`,
`optuna-dashboard`, a Ray head; see conftest.py), a small study run through the `hpstudy` command as a
user runs it, and then what a user sees: the stores through their clients, and both dashboards in a
real headless chromium (Selenium), asserting on what the browser renders."""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from tests.services.conftest import BIN, _clean_env, pids_using

STUDY = "lenet5-sgd-lr-bs"
N_TRIALS = 2
EPOCHS = 2
PAGE_TIMEOUT_S = 60  # both UIs are React apps that fetch after load; this machine is shared and slow


@dataclass
class StudyRun:
    stdout: str
    study: optuna.Study
    trials: list[optuna.trial.FrozenTrial]
    experiment_id: str
    parent_run_id: str


@pytest.fixture(scope="module")
def study_run(services, data_dir) -> StudyRun:
    """`hpstudy run` against the services, in a subprocess, as a user types it."""
    cmd = [str(BIN / "hpstudy"), "run", STUDY, "--storage", services.optuna_storage,
           "--mlflow-tracking-uri", services.mlflow_url, "--ray-address", services.ray_address,
           "--epochs", str(EPOCHS), "--train-size", "800", "--val-size", "200", "--test-size", "200",
           "--n-trials", str(N_TRIALS), "--data-dir", data_dir, "--workdir", str(services.root / "runs")]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=services.root,
                          env={**_clean_env(), **services.env})
    if proc.returncode != 0:
        pytest.fail(f"hpstudy run exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}\n"
                    f"--- stderr ---\n{proc.stderr[-8000:]}\n{services.logs()}", pytrace=False)
    services.timings["hpstudy run"] = time.monotonic() - started
    study = optuna.load_study(study_name=STUDY, storage=services.optuna_storage)
    mlflow_ids = study.user_attrs["hpstudy"]["mlflow"]
    return StudyRun(stdout=proc.stdout, study=study, trials=sorted(study.trials, key=lambda t: t.number),
                    experiment_id=mlflow_ids["experiment_id"], parent_run_id=mlflow_ids["parent_run_id"])


# ------------------------------------------------------------------------------------------ the stores

def test_study_runs_on_the_services_and_both_stores_hold_it(services, study_run):
    assert "Best trial" in study_run.stdout and "| lr \\ batch_size |" in study_run.stdout

    # Optuna, in PostgreSQL: every trial COMPLETE with one intermediate value per epoch.
    trials = study_run.trials
    assert [t.number for t in trials] == list(range(N_TRIALS))
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    for t in trials:
        assert sorted(t.intermediate_values) == list(range(1, EPOCHS + 1))
        assert t.value == max(t.intermediate_values.values())
        assert set(t.params) == {"lr", "batch_size"}
    assert len({(t.params["lr"], t.params["batch_size"]) for t in trials}) == N_TRIALS  # distinct grid points

    # MLflow, through the tracking server: the study's parent run and one nested run per trial.
    client = MlflowClient(services.mlflow_url)
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None and experiment.experiment_id == study_run.experiment_id
    runs = client.search_runs([experiment.experiment_id])
    parent = client.get_run(study_run.parent_run_id)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == N_TRIALS + 1 and len(children) == N_TRIALS
    assert parent.info.run_name == f"study {STUDY}" and parent.data.params["definition"] == STUDY
    assert parent.data.metrics["best_val_acc"] == pytest.approx(study_run.study.best_value)
    assert {r.info.status for r in runs} == {"FINISHED"}
    by_number = {int(r.data.tags["optuna.trial_number"]): r for r in children}
    assert sorted(by_number) == list(range(N_TRIALS))
    for t in trials:
        run = by_number[t.number]
        assert run.info.run_id == t.user_attrs["mlflow_run_id"] and run.info.run_name == f"trial {t.number}"
        assert run.data.tags["optuna.state"] == "COMPLETE"
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert {m.step: m.value for m in history} == pytest.approx(t.intermediate_values)
        # Artifacts went through the server's artifact proxy into --artifacts-destination.
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"history.csv", "result.json"}
    assert list((services.root / "mlartifacts").rglob("history.csv"))

    # No password in what MLflow shows (params and tags of every run).
    for run in runs:
        shown = json.dumps([run.data.params, run.data.tags])
        for secret in services.secrets:
            assert secret not in shown, f"run {run.info.run_name!r} shows the PostgreSQL password"


def _listening(port: int) -> set[str]:
    """Local addresses (kernel hex notation) that listen on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                found.add(address)
    return found


def test_servers_listen_on_loopback_only_and_show_no_secret(services, postgres):
    loopback = {"0100007F"}  # 127.0.0.1
    for name, url in (("mlflow", services.mlflow_url), ("optuna-dashboard", services.dashboard_url)):
        assert _listening(int(url.rsplit(":", 1)[1])) == loopback, name
    assert _listening(postgres.port) == loopback, "postgresql"
    ray_processes = [Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                     for pid in pids_using(services.ray_temp_dir)]
    assert any("gcs_server" in c for c in ray_processes)  # it is this Ray that is looked at
    # --include-dashboard=false leaves Ray's dashboard head in minimal mode (usage stats only): no web UI.
    for argv in (c.split("\0") for c in ray_processes if "dashboard/dashboard.py" in c):
        assert "--minimal" in argv and "--disable-frontend" in argv, argv
        assert [a for a in argv if a.startswith("--host=")] in ([], ["--host=127.0.0.1"]), argv
    # No process shows the PostgreSQL password or the Ray token in its command line (readable by any
    # local user): the URLs carry no password (PGPASSFILE) and Ray reads its token from a file.
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace") if entry.name.isdigit() else ""
        except OSError:
            continue
        for secret in services.secrets:
            assert secret not in cmdline, f"process {entry.name} shows a secret: {cmdline[:200]!r}"


def test_a_driver_without_the_clusters_token_is_one_line_and_writes_nothing(services, data_dir, tmp_path):
    """The head runs with token auth; a driver without the token (RAY_AUTH_MODE unset, and a home with no
    ~/.ray/auth_token) is refused. Ray retries that for 20 s with a warning per retry on fd 2 and then a
    traceback; hpstudy says it in one line, before the study or an MLflow run exists."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    study = "refused-driver"
    cmd = [str(BIN / "hpstudy"), "run", STUDY, "--study-name", study, "--storage", services.optuna_storage,
           "--mlflow-tracking-uri", services.mlflow_url, "--ray-address", services.ray_address,
           "--epochs", "1", "--train-size", "256", "--val-size", "128", "--test-size", "128", "--n-trials", "1",
           "--data-dir", data_dir, "--workdir", str(cwd / "runs")]
    env = {**_clean_env(), "HOME": str(home), "PGPASSFILE": services.env["PGPASSFILE"]}  # no RAY_AUTH_*
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=cwd, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith("hpstudy: error: ray_address: ") and "token authentication" in line, line
    assert "RAY_AUTH_MODE=token" in line and services.ray_address in line
    assert list(cwd.iterdir()) == [] and list(home.iterdir()) == []
    assert study not in {s.study_name for s in optuna.get_all_study_summaries(services.optuna_storage)}
    assert MlflowClient(services.mlflow_url).get_experiment_by_name(study) is None


# ------------------------------------------------------------------------------------------ the browser

class Page:
    """Waits for what a React page renders; on a timeout, saves a screenshot and the page's text."""

    def __init__(self, driver, artifacts: Path):
        self.driver = driver
        self.artifacts = artifacts

    def open(self, url: str) -> None:
        self.driver.get(url)

    def text(self) -> str:
        from selenium.webdriver.common.by import By

        try:
            return self.driver.find_element(By.TAG_NAME, "body").text
        except Exception:  # the page is being replaced
            return ""

    def wait(self, what: str, condition, timeout: float = PAGE_TIMEOUT_S, explain=lambda: ""):
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.5).until(lambda d: condition())
        except TimeoutException:
            self.fail(f"{what}: not shown within {timeout:.0f} s. {explain()}")

    def wait_text(self, what: str, expected: list[str], timeout: float = PAGE_TIMEOUT_S) -> str:
        """The page's text once it shows every expected string."""
        state = {"text": ""}

        def shown():
            state["text"] = self.text()
            return state["text"] if all(e in state["text"] for e in expected) else False

        missing = lambda: f"Missing: {[e for e in expected if e not in state['text']]}"  # noqa: E731
        return self.wait(what, shown, timeout, missing)

    def fail(self, message: str) -> None:
        name = re.sub(r"[^A-Za-z0-9]+", "-", message[:40]).strip("-")
        shot = self.artifacts / f"{name}.png"
        try:
            self.driver.save_screenshot(str(shot))
            (self.artifacts / f"{name}.txt").write_text(self.text())
        except Exception as exc:  # the browser itself is gone
            shot = f"(no screenshot: {exc})"
        pytest.fail(f"{message}\nURL: {self.driver.current_url}\nscreenshot: {shot}", pytrace=False)


def js_number(x: float) -> str:
    """A number as JavaScript's toString() writes it (the dashboard shows values that way)."""
    if float(x).is_integer() and abs(x) < 1e21:
        return str(int(x))
    text = repr(float(x))
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent):+d}"
    return text


def test_optuna_dashboard_shows_the_study_its_trials_and_intermediate_values(services, study_run, browser, tmp_path):
    from selenium.webdriver.common.by import By

    page = Page(browser, tmp_path)
    trials = study_run.trials
    best = study_run.study.best_trial

    # The study list, then the study, as a user clicks through.
    page.open(f"{services.dashboard_url}/dashboard")
    link = page.wait("the study in the study list", lambda: next(
        (a for a in browser.find_elements(By.XPATH, "//a[contains(@href, '/dashboard/studies/')]")
         if STUDY in a.text), None))
    link.click()
    page.wait("the study page", lambda: re.search(r"/dashboard/studies/\d+$", browser.current_url))
    study_url = browser.current_url

    # The study page: the best trial, and the intermediate-values plot with one line per trial whose
    # rendered points are the trial's epochs.
    page.wait_text("the best trial", [f"Best Trial (number={best.number})", js_number(best.value),
                                      *[f"{k}: {js_number(v)}" for k, v in best.params.items()]])
    plot_id = "graph-intermediate-values"
    page.wait("the intermediate-values plot", lambda: len(browser.find_elements(
        By.CSS_SELECTOR, f"#{plot_id} .scatterlayer .trace")) == len(trials))
    legend = [e.text.strip() for e in browser.find_elements(By.CSS_SELECTOR, f"#{plot_id} .legendtext")]
    assert sorted(legend) == [f"trial #{t.number}" for t in trials]
    points = [len(trace.find_elements(By.CSS_SELECTOR, "path.point"))
              for trace in browser.find_elements(By.CSS_SELECTOR, f"#{plot_id} .scatterlayer .trace")]
    assert points == [EPOCHS] * len(trials)
    drawn = browser.execute_script(
        "return document.getElementById(arguments[0]).data.map(t => [t.name.trim(), t.x, t.y])", plot_id)
    assert {name: dict(zip(x, y)) for name, x, y in drawn} == {
        f"trial #{t.number}": pytest.approx(t.intermediate_values) for t in trials}

    # The trials page with every trial selected: number, state, value, each epoch's intermediate value
    # and the parameters, as the dashboard writes them.
    numbers = ",".join(str(t.number) for t in trials)
    page.open(f"{study_url}/trials?numbers={numbers}")
    expected = [f"{len(trials)} Trials"]
    for t in trials:
        values = "\n".join(f"{step} {js_number(v)}" for step, v in sorted(t.intermediate_values.items()))
        expected += [f"Trial {t.number} (trial_id=", f"Value\n{js_number(t.value)}\nIntermediate Values\n{values}\n"
                     f"Parameter\n", f"mlflow_run_id {t.user_attrs['mlflow_run_id']}"]
    text = page.wait_text("the trials with their intermediate values", expected)
    sections = re.split(r"\nTrial (\d+) \(trial_id=\d+\)\n", text)[1:]
    shown = dict(zip(sections[::2], sections[1::2]))
    assert sorted(shown, key=int) == [str(t.number) for t in trials]
    for t in trials:  # each trial's state, values and parameters under its own heading
        section = shown[str(t.number)]
        values = "\n".join(f"{step} {js_number(v)}" for step, v in sorted(t.intermediate_values.items()))
        assert section.startswith("Complete\n"), section[:300]
        assert f"Value\n{js_number(t.value)}\nIntermediate Values\n{values}\nParameter\n" in section, section[:300]
        for name, value in t.params.items():
            assert f"\n{name} {js_number(value)}\n" in section, (name, section[:300])
    for secret in services.secrets:
        assert secret not in text


def test_mlflow_ui_shows_the_study_run_with_its_nested_trial_runs(services, study_run, browser, tmp_path):
    from selenium.webdriver.common.by import By

    page = Page(browser, tmp_path)
    client = MlflowClient(services.mlflow_url)
    children = {int(r.data.tags["optuna.trial_number"]): r.info.run_id for r in client.search_runs(
        [study_run.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{study_run.parent_run_id}'")}
    parent_name = f"study {STUDY}"

    # The experiment's runs table (MLflow 3 opens an experiment on its GenAI overview; the training
    # runs are under /runs). Nested runs start collapsed under their parent: expand it.
    page.open(f"{services.mlflow_url}/#/experiments/{study_run.experiment_id}/runs")
    page.wait_text("the experiment's runs", [STUDY, parent_name, f"{len(children) + 1} matching runs"])
    parent_link = page.wait("the parent run", lambda: next(iter(browser.find_elements(
        By.XPATH, f"//a[normalize-space()='{parent_name}']")), None))

    def rows() -> set[str]:  # the runs the table shows (each row's id is its run id)
        return {r.get_attribute("row-id") for r in browser.find_elements(By.XPATH, "//*[@role='row'][@row-id]")}

    if not set(children.values()) <= rows():
        parent_link.find_element(By.XPATH, "./ancestor::*[@role='gridcell'][1]//button").click()
    page.wait("the nested trial runs", lambda: set(children.values()) <= rows(),
              explain=lambda: f"rows shown: {sorted(rows())}; trial runs: {children}")
    for number, run_id in children.items():
        row = browser.find_element(By.XPATH, f"//*[@role='row'][@row-id='{run_id}']")
        link = row.find_element(By.XPATH, f".//a[normalize-space()='trial {number}']")
        assert link.get_attribute("href").endswith(f"/runs/{run_id}")
        # Nested: drawn indented under the parent, not as a run of its own.
        assert link.location["x"] > parent_link.location["x"], (number, link.location, parent_link.location)

    # The parent run's page: its child runs, the study's best value and its parameters, no password.
    page.open(f"{services.mlflow_url}/#/experiments/{study_run.experiment_id}/runs/{study_run.parent_run_id}")
    text = page.wait_text("the parent run's page", [
        parent_name, "Child runs", *[f"trial {n}" for n in children], "best_val_acc",
        js_number(study_run.study.best_value), "definition\n" + STUDY, "Finished"])
    for secret in services.secrets:
        assert secret not in text
