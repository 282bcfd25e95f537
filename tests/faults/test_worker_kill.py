"""`kill -9` of a trial's worker process mid-epoch: Ray Tune retries the trial (FailureConfig
max_failures=2) from its last checkpoint, and the trial ends COMPLETE with exactly the history of an
undisturbed run of the same config and seed.

The study runs in this process through `plan_run`/`run_study` on one local Ray for the module; a
background thread waits until Tune has registered the trial's first checkpoint, finds the worker process
running the trial (a descendant of this process titled `ray::ImplicitFunc...`, Ray's actor for a
function trainable) and sends it SIGKILL while it is inside a later epoch.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import ray

from tests.faults import EPOCHS, assert_undisturbed, register_one_point_study, run_with_killer


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # address="local": a Ray of our own, never a cluster another process started on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_killed_worker_resumes_from_its_checkpoint_with_the_undisturbed_history(monkeypatch, tmp_path, data_dir):
    name = register_one_point_study(monkeypatch)
    scratch_at_kill: list[Path] = []  # the trial's local checkpoint folder(s) in /tmp when it was killed
    plan, study, killer, rows = run_with_killer(
        name, tmp_path, data_dir,
        before_kill=lambda _: scratch_at_kill.extend(Path(tempfile.gettempdir()).glob("hpstudy-trial-*")))
    assert killer.killed_pid is not None, killer.problem
    # The killed worker never cleaned up: the retry removed its folder (a dead process's), then its own.
    assert scratch_at_kill, "the trial had no local scratch folder when it was killed"
    assert not [p for p in scratch_at_kill if p.exists()], scratch_at_kill
    registered = int(killer.checkpoint_at_kill.name.split("_")[-1]) + 1  # the epochs it holds
    assert registered < EPOCHS, f"killed too late to test a resume: {killer.checkpoint_at_kill}"

    # Optuna: one trial, COMPLETE, with every epoch's intermediate value; no FAIL, nothing re-queued
    # (Tune retried the trial inside the same study run).
    assert [t.state.name for t in study.trials] == ["COMPLETE"], [(t.state.name, t.user_attrs) for t in study.trials]
    trial = study.trials[0]
    assert sorted(trial.intermediate_values) == list(range(1, EPOCHS + 1))

    # Tune's own result log of the trial: the killed worker reported the first epochs, a new worker
    # (Tune's retry) the rest, starting after a checkpoint and not from epoch 1.
    epochs = [r for r in rows if not r.get("final")]
    before = [r for r in epochs if r["pid"] == killer.killed_pid]
    after = [r for r in epochs if r["pid"] != killer.killed_pid]
    shown = [(r["pid"], r["epoch"], r.get("iterations_since_restore")) for r in rows]
    assert before and after, shown
    assert len({r["pid"] for r in after}) == 1, f"one retry should be enough: {shown}"
    resumed_at = after[0]["epoch"]
    assert after[0]["iterations_since_restore"] == 1, shown
    assert resumed_at == registered + 1, f"the retry started at epoch {resumed_at}, not after epoch {registered}: {shown}"
    assert [r["epoch"] for r in after] == list(range(resumed_at, EPOCHS + 1)), shown

    # The trial's own result, written by the retried worker: where it says it resumed, it agrees.
    last = next(r for r in rows if r.get("final"))
    assert json.loads(last["result_json"])["status"] == "completed"
    outputs = json.loads((Path(last["outputs_dir"]) / "result.json").read_text())
    if "resumed_from_epoch" in outputs:
        assert outputs["resumed_from_epoch"] == resumed_at - 1

    # The same history (timing aside), test metrics and value as an undisturbed run.
    assert_undisturbed(plan, trial)
