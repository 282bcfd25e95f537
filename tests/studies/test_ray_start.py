"""The local Ray that `hpstudy run` starts and stops (runner.RayStart), with a real Ray."""

import ray

from hpstudy.processes import pid_exists as alive  # Ray reaps the processes it stops: no zombie stays
from hpstudy.studies.runner import RayStart, stop_autoscaler_monitor


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
