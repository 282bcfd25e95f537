"""The local Ray that `hpstudy run` starts and stops (ray_start.RayStart), with a real Ray."""

import ray

from hpstudy.processes import pid_exists as alive  # Ray reaps the processes it stops: no zombie stays
from hpstudy.studies.ray_start import RayStart, stop_autoscaler_monitor


def test_the_monitor_goes_first_while_the_gcs_still_runs_and_stop_leaves_no_ray_process():
    from ray._private import ray_constants, worker

    start = RayStart("local")
    start.wait()
    try:
        processes = {kind: [info.process.pid for info in infos]
                     for kind, infos in worker._global_node.all_processes.items()}
        [monitor] = processes[ray_constants.PROCESS_TYPE_MONITOR]  # Ray's private layout, as the runner expects
        [gcs] = processes[ray_constants.PROCESS_TYPE_GCS_SERVER]
        assert stop_autoscaler_monitor()
        assert not alive(monitor) and alive(gcs)
        assert ray.is_initialized()
    finally:
        start.stop()
    assert not ray.is_initialized()
    left = [pid for pids in processes.values() for pid in pids if alive(pid)]
    assert left == []


def test_rays_notice_that_token_auth_is_on_is_not_shown(monkeypatch):
    """Ray 2.59+ logs it on every start of a local Ray with RAY_AUTH_MODE unset, with advice to turn token
    auth off; hpstudy keeps it on. Read from the log records: Ray's handler writes to the stderr it found at
    import, which pytest's capture holds, not this test's."""
    import logging

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # ray.init sets it in this process: restored after
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    logger.addHandler(handler)
    start = RayStart("local")
    try:
        start.wait()
    finally:
        start.stop()
        logger.removeHandler(handler)
    assert not [r for r in records if "Token authentication is enabled" in r.getMessage()]


def test_held_stderr_writes_out_what_the_block_wrote_to_fd_2_unless_dropped(capfd):
    import os

    from hpstudy.studies.ray_start import HeldStderr

    with HeldStderr():
        os.write(2, b"kept: a warning of a connection that worked\n")  # as C++ code writes, past sys.stderr
    with HeldStderr() as held:
        os.write(2, b"dropped: a warning per retry\n")
        held.drop()
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "kept: a warning of a connection that worked\nafter\n"


def test_a_refused_token_is_told_apart_from_other_connection_errors(monkeypatch):
    from hpstudy.studies.ray_start import cluster_refusal

    def raised(inner: Exception) -> Exception:  # as ray.init raises: its ConnectionError from the real cause
        try:
            try:
                raise inner
            except Exception as exc:
                raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from exc
        except ConnectionError as outer:
            return outer

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    refused = cluster_refusal("head:6379", raised(RuntimeError(
        "Failed to connect to GCS. ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken")))
    assert "uses token authentication" in refused and "RAY_AUTH_MODE is unset" in refused
    assert "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH" in refused
    other = cluster_refusal("head:6379", raised(RuntimeError("Version mismatch: Ray 2.60.0 here, 2.59.0 there\nmore")))
    assert other == ("cannot connect to the Ray cluster at head:6379: RuntimeError: Version mismatch: "
                     "Ray 2.60.0 here, 2.59.0 there")
