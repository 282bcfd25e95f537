"""`hpstudy run --ray-address` on a real multi-node Ray cluster on this machine: a head node (the driver
only, no CPUs) and two 1-CPU worker nodes, each its own set of processes (raylet, object store,
workers). Trials land on both worker nodes; a worker node removed mid-trial takes its trial down, and
Tune's retry continues it from its last checkpoint in the shared storage path on another node, ending
with exactly the history of an undisturbed run."""

import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlparse

import optuna
import pytest
import ray
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from ray.cluster_utils import Cluster

from hpstudy.studies.builtin import STUDIES
from hpstudy.studies.runner import RunSettings, plan_run, run_study
from hpstudy.trainables import TIMING_FIELDS, TrainConfig, train

DEFINITION = "lenet5-sgd-lr-bs"


def start_cluster() -> Cluster:
    """A head node for the driver only (no CPUs, so no trial runs there) and two 1-CPU worker nodes."""
    started = Cluster()  # nodes added one by one, so that a failed start is still shut down
    try:
        started.add_node(num_cpus=0, include_dashboard=False)
        for _ in range(2):
            started.add_node(num_cpus=1)
        started.wait_for_nodes()
        return started
    except BaseException:
        started.shutdown()
        raise


@pytest.fixture(scope="module")
def cluster():
    assert not ray.is_initialized(), "another test left a Ray driver connected"
    # A private Ray temp dir: this cluster's sockets, logs and session files, and its address file
    # (Ray writes ray_current_cluster there, and a plain ray.init() anywhere on the machine connects to
    # the cluster named in the default one) stay out of the way of every other Ray on this machine.
    # Short, under /tmp: Ray's Unix socket paths must stay below 108 characters.
    temp = tempfile.mkdtemp(prefix="hpstudy-cluster-", dir="/tmp")
    with pytest.MonkeyPatch.context() as env:  # also around shutdown, which deletes the address file
        env.setenv("RAY_TMPDIR", temp)
        env.delenv("RAY_ADDRESS", raising=False)
        started = None
        try:
            try:
                started = start_cluster()
            except Exception:  # Ray gives a node a fixed 30 s to register: a busy machine may miss it once
                started = start_cluster()
            yield started
        finally:
            ray.shutdown()  # a driver a failed test left connected
            if started is not None:
                started.shutdown()
            shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(autouse=True)
def tune_result_log(monkeypatch):
    """These tests read which node made each report from Tune's own per-trial result log, written by a
    Tune default logger that `hpstudy run` turns off: it is turned on here."""
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")


def worker_ids(cluster) -> set[str]:
    return {node.node_id for node in cluster.worker_nodes}


def settings(tmp_path, data_dir, cluster, **extra) -> RunSettings:
    return RunSettings(definition=DEFINITION, storage=f"sqlite:///{tmp_path}/hpstudy.db",
                       mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", data_dir=data_dir,
                       workdir=str(tmp_path / "runs"), ray_address=cluster.address, max_concurrent=2, **extra)


def final_result(tmp_path, trial) -> dict:
    """The result.json the trainable wrote, as the driver logged it to the trial's MLflow run."""
    run = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_run(trial.user_attrs["mlflow_run_id"])
    return json.loads((Path(urlparse(run.info.artifact_uri).path) / "result.json").read_text())


def trial_dir(workdir: Path, number: int) -> Path:
    """The trial's folder in Tune's storage path (workdir/ray/<experiment>/optuna-NNNN)."""
    (found,) = (workdir / "ray").glob(f"*/optuna-{number:04d}")
    return found


def staging_dir(workdir: Path, number: int) -> Path | None:
    """The driver's staging copy of a trial's folder, in this cluster's Ray session dir: Tune's loggers
    write each result there at once (and sync the folder to the storage path later)."""
    experiment = trial_dir(workdir, number).parent.name
    pattern = f"ray/session_*/artifacts/*/{experiment}/driver_artifacts/optuna-{number:04d}"
    found = {p.resolve() for p in Path(os.environ["RAY_TMPDIR"]).glob(pattern)}  # session_latest links one
    assert len(found) <= 1, found
    return found.pop() if found else None


def reported_rows(path: Path) -> list[dict]:
    """Tune's per-result log of a trial (result.json, one JSON object a line)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            break
    return rows


def stored_checkpoint_epochs(folder: Path) -> set[int]:
    """Epochs of the checkpoint files under a trial's storage folder (checkpoint_*/epoch_NNNN.pt)."""
    return {int(p.stem.split("_")[1]) for p in folder.glob("checkpoint_*/epoch_*.pt")}


def without_timing(history):
    return [{k: v for k, v in h.items() if k not in TIMING_FIELDS} for h in history]


def test_trials_land_on_both_worker_nodes(cluster, tmp_path, data_dir):
    plan = plan_run(settings(tmp_path, data_dir, cluster, n_trials=2, epochs=2,
                             overrides={"train_size": 800, "val_size": 200, "test_size": 200}))
    run_study(plan)
    assert not ray.is_initialized()  # the run detached from the cluster it attached to

    study = optuna.load_study(study_name=DEFINITION, storage=plan.settings.storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 2
    nodes = {}
    for trial in study.trials:
        result = final_result(tmp_path, trial)
        assert result["resumed_from_epoch"] == 0
        nodes[trial.number] = result["node_id"]
        # Checkpoints went to Tune's storage path under the work dir, which every node can reach.
        assert Path(trial.user_attrs["checkpoint"]).is_relative_to(tmp_path / "runs" / "ray")
        # Every epoch's report names its node too.
        rows = reported_rows(trial_dir(tmp_path / "runs", trial.number) / "result.json")
        epochs = [r for r in rows if not r.get("final")]
        assert [r["epoch"] for r in epochs] == [1, 2] and {r["node_id"] for r in epochs} == {result["node_id"]}
        # So did the trial's files (result.json, curves, ...) that the driver copies into MLflow.
        (final,) = [r for r in rows if r.get("final")]
        assert Path(final["outputs_dir"]).is_relative_to(tmp_path / "runs" / "ray")
    # Two at a time on two 1-CPU worker nodes: both ran trials; the CPU-less head ran none.
    assert set(nodes.values()) == worker_ids(cluster), nodes


class NodeRemover(threading.Thread):
    """Waits until a running trial has a checkpoint that Tune has taken in (the driver records it as
    the Optuna user attr "checkpoint") with at least `left` epochs still to run, then removes the worker
    node running it (all that node's processes, the trial's worker among them) and adds a fresh 1-CPU
    node in its place."""

    def __init__(self, cluster, storage: str, workdir: Path, epochs: int, left: int = 4):
        super().__init__(daemon=True)
        self.cluster, self.storage, self.workdir, self.epochs, self.left = cluster, storage, workdir, epochs, left
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.trial: int | None = None  # the Optuna trial number of the trial taken down
        self.registered_epoch: int | None = None  # its newest checkpoint Tune had taken in by then
        self.removed_id: str | None = None
        self.replacement_id: str | None = None
        self.removed_at: float | None = None
        self.remove_s: float | None = None
        self.checkpoints_at_removal: set[int] = set()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # re-raised by the test
            self.error = exc

    def _run(self) -> None:
        deadline = time.time() + 300
        study = None
        while not self.stop.is_set() and time.time() < deadline:
            time.sleep(0.2)
            try:
                study = study or optuna.load_study(study_name=DEFINITION, storage=self.storage)
                running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            except Exception:  # the study is not there yet, or the driver holds the database
                continue
            for trial in running:
                checkpoint = trial.user_attrs.get("checkpoint")
                if not checkpoint:
                    continue
                # Tune numbers a trial's checkpoints from 0, one per epoch here: checkpoint_00000k is epoch k+1.
                epoch = int(checkpoint.rsplit("_", 1)[1]) + 1
                if epoch > self.epochs - self.left:
                    continue
                node = self._node_running(trial.number)
                if node is None:
                    continue
                self.trial, self.registered_epoch, self.removed_id = trial.number, epoch, node.node_id
                self.removed_at = time.time()
                self.cluster.remove_node(node)
                self.remove_s = time.time() - self.removed_at
                # Nothing of that trial runs now: what is in storage is what a retry can continue from.
                self.checkpoints_at_removal = stored_checkpoint_epochs(trial_dir(self.workdir, trial.number))
                # Ray hooks a node's cleanup to signal handlers, which only the main thread may set;
                # this node is shut down with the others at teardown instead.
                self.cluster._shutdown_at_exit = False
                try:
                    self.replacement_id = self.cluster.add_node(num_cpus=1).node_id
                finally:
                    self.cluster._shutdown_at_exit = True
                return

    def _node_running(self, number: int):
        """The worker node of the trial's newest epoch report, while it runs."""
        staged = staging_dir(self.workdir, number)
        rows = [r for r in reported_rows(staged / "result.json") if "node_id" in r] if staged else []
        if rows and not rows[-1].get("final"):
            return next((n for n in self.cluster.worker_nodes if n.node_id == rows[-1]["node_id"]), None)
        return None


def test_node_removed_mid_trial_continues_from_its_checkpoint_on_another_node(cluster, tmp_path, data_dir,
                                                                             monkeypatch):
    epochs = 8
    # A checkpoint every epoch: the node is removed between them.
    overrides = {"train_size": 2000, "val_size": 200, "test_size": 200, "checkpoint_every_s": 0}
    storage = f"sqlite:///{tmp_path}/hpstudy.db"
    # The lr x batch-size grid without the stall rule, so whichever two points the grid sampler draws
    # (lr 0.001 sits at chance for a while), both train all their epochs.
    base = STUDIES[DEFINITION].base
    monkeypatch.setitem(STUDIES, DEFINITION, replace(STUDIES[DEFINITION], base={**base, "chance_warmup_steps": 0}))
    plan = plan_run(settings(tmp_path, data_dir, cluster, n_trials=2, epochs=epochs, overrides=overrides))
    workdir = tmp_path / "runs"
    remover = NodeRemover(cluster, storage, workdir, epochs)
    remover.start()
    try:
        run_study(plan)
    finally:
        remover.stop.set()
        remover.join(timeout=120)
    if remover.error:
        raise remover.error
    assert remover.trial is not None, "no trial was caught mid-run with a checkpoint"
    print(f"\nremoved node {remover.removed_id[:8]} running trial {remover.trial} (Tune had its checkpoint of "
          f"epoch {remover.registered_epoch}) in {remover.remove_s:.1f} s; checkpoints in storage then: "
          f"{sorted(remover.checkpoints_at_removal)}; replacement node {remover.replacement_id[:8]}")

    study = optuna.load_study(study_name=DEFINITION, storage=storage)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"], \
        [(t.number, t.state.name, t.user_attrs.get("reason")) for t in study.trials]
    hit = study.trials[remover.trial]
    result = final_result(tmp_path, hit)
    resumed = result["resumed_from_epoch"]
    # Tune's retry continued it from its newest checkpoint, which was in the storage path under the
    # work dir when the node died, on a node that is not the removed one.
    assert resumed >= remover.registered_epoch and resumed in remover.checkpoints_at_removal, \
        (resumed, remover.registered_epoch, remover.checkpoints_at_removal)
    assert result["node_id"] != remover.removed_id and result["node_id"] in worker_ids(cluster)
    assert Path(hit.user_attrs["checkpoint"]).is_relative_to(workdir / "ray")
    # Every epoch exactly once, in the final history and in Optuna.
    assert [h["epoch"] for h in result["history"]] == list(range(1, epochs + 1))
    assert hit.user_attrs["history"] == result["history"]
    assert sorted(hit.intermediate_values) == list(range(1, epochs + 1))
    # Tune's per-epoch log: epochs 1.. on the removed node (one past the checkpoint, if the node died
    # before Tune took that epoch's checkpoint in), then the rest from the checkpoint on one other node.
    rows = [r for r in reported_rows(trial_dir(workdir, hit.number) / "result.json") if not r.get("final")]
    first = [r["epoch"] for r in rows if r["node_id"] == remover.removed_id]
    retry = rows[len(first):]
    assert first == list(range(1, len(first) + 1)) and len(first) >= resumed, rows
    assert [r["epoch"] for r in retry] == list(range(resumed + 1, epochs + 1)), rows
    assert {r["node_id"] for r in retry} == {result["node_id"]}, rows
    error = staging_dir(workdir, hit.number) / "error.txt"  # Tune's record of the failure it retried
    print(f"Tune recorded the trial's failure {error.stat().st_mtime - remover.removed_at:.1f} s after the removal "
          f"began; trial {hit.number} resumed from epoch {resumed} on node {result['node_id'][:8]}, its first "
          f"epoch after the retry reported {retry[0]['timestamp'] - remover.removed_at:.0f} s after the removal")

    # The other trial was not disturbed.
    other = final_result(tmp_path, study.trials[1 - remover.trial])
    assert other["resumed_from_epoch"] == 0 and other["node_id"] != remover.removed_id

    # Determinism: the continued run ends exactly as an undisturbed one of the same config and seed
    # (every metric equal; only the timing fields, which measure the machine, are left out).
    reference = train(TrainConfig.from_dict({**plan.base, **hit.params}))
    assert without_timing(result["history"]) == without_timing(reference["history"])
    assert result["test"]["test_acc"] == reference["test"]["test_acc"]
    assert result["test"]["confusion_matrix"] == reference["test"]["confusion_matrix"]
