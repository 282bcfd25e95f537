"""The driver's watch on Ray's GCS after a stop signal (stop_watch.py), with real sockets and threads.
The whole path, a driver and its Ray sent SIGTERM at once, is tested in test_resume.py."""

import socket
import threading
import time

import pytest

from hpstudy.studies.stop_watch import GcsWatch, Once, accepts_connections

PROBE_S = 0.02


@pytest.fixture
def listening():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server
    server.close()


def closed_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens once it is closed


def test_accepts_connections_tells_a_listening_port_from_a_closed_one(listening):
    assert accepts_connections(f"127.0.0.1:{listening.getsockname()[1]}")
    assert not accepts_connections(closed_port())
    assert not accepts_connections("not an address")


def test_once_runs_the_function_once_for_every_thread():
    calls = []

    def slow():
        calls.append(threading.current_thread().name)
        time.sleep(0.05)
        return [3, 5]

    once = Once(slow)
    results = []
    threads = [threading.Thread(target=lambda: results.append(once())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results == [[3, 5]] * 4


def test_once_raises_the_error_again_without_running_again():
    calls = []

    def failing():
        calls.append(1)
        raise RuntimeError("storage gone")

    once = Once(failing)
    for _ in range(2):
        with pytest.raises(RuntimeError, match="storage gone"):
            once()
    assert calls == [1]


def wait_until(condition, timeout_s=5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(PROBE_S)
    return False


def test_the_watch_acts_only_after_a_stop_request_and_the_gcs_gone():
    requested, gone = threading.Event(), threading.Event()
    watch = GcsWatch(requested, closed_port, gone.set, probe_s=PROBE_S, misses=3)
    time.sleep(20 * PROBE_S)
    assert not gone.is_set(), "acted without a stop request"
    requested.set()
    assert wait_until(gone.is_set)
    watch.cancel()


def test_the_watch_leaves_a_reachable_gcs_alone(listening):
    requested, gone = threading.Event(), threading.Event()
    requested.set()
    address = f"127.0.0.1:{listening.getsockname()[1]}"
    watch = GcsWatch(requested, lambda: address, gone.set, probe_s=PROBE_S, misses=2)
    time.sleep(30 * PROBE_S)
    assert not gone.is_set()
    # Then the GCS goes (the signal reached it after all): the watch acts.
    listening.close()
    assert wait_until(gone.is_set)
    watch.cancel()


def test_the_watch_has_nothing_to_watch_without_ray():
    requested, gone = threading.Event(), threading.Event()
    requested.set()
    watch = GcsWatch(requested, lambda: None, gone.set, probe_s=PROBE_S, misses=1)
    time.sleep(20 * PROBE_S)
    watch.cancel()
    assert not gone.is_set()


def test_a_cancelled_watch_never_acts():
    requested, gone = threading.Event(), threading.Event()
    watch = GcsWatch(requested, closed_port, gone.set, probe_s=PROBE_S, misses=1)
    watch.cancel()
    requested.set()
    time.sleep(20 * PROBE_S)
    assert not gone.is_set()


def test_cancel_waits_for_an_action_under_way():
    requested, entered, finished = threading.Event(), threading.Event(), threading.Event()

    def slow_stop():
        entered.set()
        time.sleep(0.2)
        finished.set()

    requested.set()
    watch = GcsWatch(requested, closed_port, slow_stop, probe_s=PROBE_S, misses=1)
    assert entered.wait(5)
    watch.cancel()
    assert finished.is_set(), "cancel() returned while the watch's stop was still running"
