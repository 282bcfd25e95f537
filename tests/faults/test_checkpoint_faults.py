"""Checkpoint faults: SIGTERM in the middle of a write, damaged files, a full disk, and a trial resumed
when its newest checkpoint is damaged. The newest readable checkpoint is always the one used, a failed
write is an error (never a short file under a checkpoint's name), and nothing is silently wrong.

What tests/trainables/test_checkpoints.py covers already (round trip, retention, a truncated, a
bit-flipped or a garbage newest file, a failing fsync, pickled code) is not repeated."""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest
import torch

from hpstudy.cli import main
from hpstudy.trainables import checkpoints
from tests.faults import EPOCHS, assert_undisturbed, register_one_point_study, run_with_killer, without_timing


def state(epoch: int, numel: int = 8) -> dict:
    """A checkpoint-shaped dict whose tensor says which epoch wrote it."""
    return {"format": 1, "config": {"lr": 0.1}, "epoch": epoch, "model": {"w": torch.full((numel,), float(epoch))},
            "optimizer": {}, "scheduler": {}, "history": [{"epoch": epoch}], "rng": {"torch": torch.get_rng_state()},
            "data_order": {"seed": 0, "next_epoch": epoch}, "monitor": {"step": 1}}


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def assert_every_checkpoint_whole(directory: Path) -> list[int]:
    """Every file under a checkpoint name reads back whole and holds the epoch its name says."""
    epochs = []
    for path in checkpoints.list_checkpoints(directory):
        loaded = checkpoints.read_checkpoint(path)  # raises on a partial or damaged file
        epoch = int(path.stem.split("_")[1])
        assert loaded["epoch"] == epoch and bool((loaded["model"]["w"] == float(epoch)).all()), path
        epochs.append(epoch)
    return epochs


REPO = Path(__file__).resolve().parents[2]  # children import tests.faults from here


def child(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)


# ------------------------------------------------------------------------- (a) SIGTERM mid-write

def _fork_writer(directory: Path, first_epoch: int, ballast: torch.Tensor) -> int:
    """A child process (forked: no second torch import) that writes 16 MB checkpoints in a loop with
    the real writer until a signal ends it; returns its pid once it is about to write."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(ready_r)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # what an unprepared process does: die at once
            os.write(ready_w, b"r")
            os.close(ready_w)
            epoch = first_epoch
            while True:
                checkpoints.save_checkpoint({**state(epoch), "ballast": ballast}, directory, epoch)
                epoch += 1
        finally:
            os._exit(1)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"r"
    os.close(ready_r)
    return pid


def test_sigterm_during_checkpoint_writes_never_leaves_a_partial_file(tmp_path):
    rng = random.Random(1234)
    ballast = torch.arange(4_000_000, dtype=torch.float32)  # made here: the forked child only serialises
    rounds, mid_write = 16, 0

    def writing(pid: int) -> bool:
        return any(name.endswith(f".tmp{pid}") for name in temp_files(tmp_path))

    for round_ in range(rounds):
        existing = assert_every_checkpoint_whole(tmp_path)
        pid = _fork_writer(tmp_path, (existing[-1] if existing else 0) + 1, ballast)
        if round_ % 2:  # at a random moment
            time.sleep(rng.uniform(0.0, 1.0))
        else:  # while this writer's temp file is being written: between open() and the rename
            deadline = time.time() + 30
            while not writing(pid) and time.time() < deadline:
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.01))
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status
        mid_write += writing(pid)  # the killed writer left its temp file: it died inside a write
        # No partial file under a checkpoint name, ever; the newest one loads, with no warning needed.
        epochs = assert_every_checkpoint_whole(tmp_path)
        if epochs:
            loaded, path = checkpoints.load_latest(tmp_path)
            assert loaded["epoch"] == epochs[-1]
    assert mid_write >= rounds // 4, f"only {mid_write} of {rounds} signals landed inside a write"
    newest = assert_every_checkpoint_whole(tmp_path)[-1]
    assert newest >= 2
    # The temp files of killed writers do not pile up: the next successful write clears them.
    checkpoints.save_checkpoint(state(newest + 1), tmp_path, newest + 1)
    assert temp_files(tmp_path) == []
    assert assert_every_checkpoint_whole(tmp_path)[-2:] == [newest, newest + 1]


def test_a_live_writers_temp_file_is_left_alone(tmp_path):
    # Two writers never share a directory here, but a cleanup must not delete a file another live
    # process is writing: only temp files of processes that no longer exist go.
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        theirs = tmp_path / f".epoch_0003.pt.tmp{live.pid}"
        theirs.write_bytes(b"half")
        checkpoints.save_checkpoint(state(2), tmp_path, 2)
        assert theirs.exists()
    finally:
        live.kill()
        live.wait()
    checkpoints.save_checkpoint(state(3), tmp_path, 3)
    assert temp_files(tmp_path) == []


# ------------------------------------------------------------------------- (b) damaged files

def _payload_and_footer(path: Path) -> tuple[bytes, bytes]:
    data = path.read_bytes()
    cut = data.rfind(b"\nHPSTUDY-SHA256:")
    return data[:cut], data[cut:]


def _with_valid_footer(payload: bytes) -> bytes:
    import hashlib

    return payload + b"\nHPSTUDY-SHA256:" + hashlib.sha256(payload).hexdigest().encode()


DAMAGES = {
    # test_checkpoints.py flips a bit a third of the way in and cuts a file in half; these are the rest
    "bit flip in the middle of the payload": lambda p, f: (bytes([*p[:len(p) // 2], p[len(p) // 2] ^ 0x10,
                                                                  *p[len(p) // 2 + 1:]]) + f),
    "bit flip in the checksum": lambda p, f: p + f[:-1] + bytes([f[-1] ^ 0x01]),
    "last byte missing": lambda p, f: (p + f)[:-1],
    "footer missing": lambda p, f: p,
    "empty file": lambda p, f: b"",
    "checksummed, but not a torch file": lambda p, f: _with_valid_footer(b"\x00" * 4096),
    "checksummed, but not a checkpoint": lambda p, f: _checksummed_other_dict(),
}


def _checksummed_other_dict() -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save({"weights": torch.ones(3)}, buffer)
    return _with_valid_footer(buffer.getvalue())


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_newest_checkpoint_falls_back_with_a_warning_naming_it(tmp_path, caplog, damage):
    checkpoints.save_checkpoint(state(1, numel=100_000), tmp_path, 1)
    newest = checkpoints.save_checkpoint(state(2, numel=100_000), tmp_path, 2)
    newest.write_bytes(DAMAGES[damage](*_payload_and_footer(newest)))
    with caplog.at_level(logging.WARNING, logger="hpstudy.trainables.checkpoints"):
        loaded, path = checkpoints.load_latest(tmp_path)
    assert path.name == "epoch_0001.pt" and loaded["epoch"] == 1
    assert bool((loaded["model"]["w"] == 1.0).all())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(newest) in warnings[0], warnings
    with pytest.raises(ValueError, match="epoch_0002.pt"):
        checkpoints.read_checkpoint(newest)


def test_both_checkpoints_damaged_gives_none_and_a_warning_for_each(tmp_path, caplog):
    for epoch in (1, 2):
        path = checkpoints.save_checkpoint(state(epoch), tmp_path, epoch)
        path.write_bytes(path.read_bytes()[:-10])
    with caplog.at_level(logging.WARNING, logger="hpstudy.trainables.checkpoints"):
        assert checkpoints.load_latest(tmp_path) is None
    assert "epoch_0001.pt" in caplog.text and "epoch_0002.pt" in caplog.text


# ------------------------------------------------------------------------- (c) a full disk

FSIZE_WRITER = """
    import errno, resource, signal, sys
    from hpstudy.trainables import checkpoints
    from tests.faults.test_checkpoint_faults import state
    directory, limit = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so the write fails with EFBIG instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # `ulimit -f`
    try:
        checkpoints.save_checkpoint(state(3, numel=1_000_000), directory, 3)
    except OSError as exc:
        print(f"raised errno={exc.errno} {exc}", flush=True)
        sys.exit(3)
    print("no error", flush=True)
"""


def test_write_beyond_ulimit_f_raises_and_keeps_the_older_checkpoints(tmp_path):
    for epoch in (1, 2):
        checkpoints.save_checkpoint(state(epoch), tmp_path, epoch)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    proc = child(FSIZE_WRITER, str(tmp_path), str(1 << 20))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3 and f"errno={errno.EFBIG}" in out, out + err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no epoch 3, no temp file
    loaded, path = checkpoints.load_latest(tmp_path)
    assert path.name == "epoch_0002.pt" and loaded["epoch"] == 2


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs: a real ENOSPC. Needs mount (root in a container); skipped otherwise."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (not root)")
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_full_disk_raises_enospc_cleans_up_and_keeps_the_older_checkpoints(small_disk):
    # About 1.2 MB each: two fit, and with both kept a third (written before the oldest goes) does not.
    for epoch in (1, 2):
        checkpoints.save_checkpoint(state(epoch, numel=300_000), small_disk, epoch)
    with pytest.raises(OSError) as raised:
        checkpoints.save_checkpoint(state(3, numel=300_000), small_disk, 3)
    assert raised.value.errno == errno.ENOSPC
    assert sorted(p.name for p in small_disk.iterdir()) == ["epoch_0001.pt", "epoch_0002.pt"]  # no temp file
    assert assert_every_checkpoint_whole(small_disk) == [1, 2]
    # The space the failed temp file took is free again: a smaller state still fits.
    checkpoints.save_checkpoint(state(3), small_disk, 3)
    assert assert_every_checkpoint_whole(small_disk) == [2, 3]


TINY = ["--dataset", "synthetic", "--model", "mlp", "--model-arg", "hidden=[512]", "--train-size", "128",
        "--val-size", "64", "--test-size", "64", "--batch-size", "32", "--threads", "1", "--optimizer", "momentum",
        "--lr", "0.05", "--checkpoint-every-s", "0"]  # a checkpoint every epoch, as these tests count them


def test_training_under_ulimit_f_goes_on_and_says_each_checkpoint_was_not_written(tmp_path, data_dir):
    """`hpstudy train` whose checkpoints (about 3 MB here) exceed `ulimit -f` 1 MiB: every epoch's
    failed write is a warning naming the epoch and the reason, the run completes, and no short file
    is left under a checkpoint name."""
    limit = 1 << 20

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "hpstudy", "train", *TINY, "--epochs", "2", "--data-dir", data_dir,
                           "--out", str(out)], capture_output=True, text=True, timeout=300, preexec_fn=limited)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for epoch in (1, 2):
        assert f"checkpoint for epoch {epoch} not written" in proc.stderr and "File too large" in proc.stderr
    assert list((out / "checkpoints").iterdir()) == []
    assert len((out / "history.csv").read_text().splitlines()) == 3


# ------------------------------------------------------------------------- (d) resuming past a damaged one

def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_train_resume_with_a_damaged_newest_checkpoint_continues_from_the_previous_one(tmp_path, data_dir, capsys,
                                                                                     caplog):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "3", "--data-dir", data_dir, "--out", str(out)]) == 0
    newest = out / "checkpoints" / "epoch_0003.pt"
    _flip_middle_byte(newest)
    capsys.readouterr()
    assert main(["train", *TINY, "--epochs", "5", "--data-dir", data_dir, "--out", str(out), "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "skipping damaged checkpoint" in caplog.text and str(newest) in caplog.text
    # Epoch 3 runs again from epoch 2's checkpoint; epochs 1-2 are not retrained.
    assert [line.split()[1] for line in printed.splitlines() if line.startswith("epoch ")] == ["3", "4", "5"]
    assert main(["train", *TINY, "--epochs", "5", "--data-dir", data_dir, "--out", str(tmp_path / "whole")]) == 0
    resumed = json.loads((out / "result.json").read_text())
    whole = json.loads((tmp_path / "whole" / "result.json").read_text())
    assert without_timing(resumed["history"]) == without_timing(whole["history"])
    assert resumed["test"] == whole["test"]


@pytest.fixture
def local_ray():
    import ray

    # address="local": a Ray of our own, never a cluster another process started on this machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_retried_trial_whose_newest_checkpoint_is_damaged_resumes_from_the_previous_one(
        local_ray, monkeypatch, tmp_path, data_dir):
    """In a study: once Tune has registered the trial's second checkpoint, that newest checkpoint is
    damaged in Ray's storage (a bit flip mid-file) and the trial's worker is killed. Tune's retry
    restores the damaged one; the trial must continue from the previous checkpoint (not from epoch 1)
    and end with the history of an undisturbed run."""
    damaged = []

    def damage_newest(registered: Path) -> None:
        [newest] = checkpoints.list_checkpoints(registered)  # Ray's checkpoint dir holds the newest file
        _flip_middle_byte(newest)
        damaged.append(int(newest.stem.split("_")[1]))

    name = register_one_point_study(monkeypatch)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        plan, study, killer, rows = run_with_killer(name, tmp_path, data_dir, min_checkpoints=2,
                                                    before_kill=damage_newest)
    assert killer.killed_pid is not None, killer.problem
    assert damaged and damaged[0] < EPOCHS, damaged
    # The retry repeats the epochs after its checkpoint: their values are not sent to Optuna a second time.
    assert not [w for w in warned if "already reported" in str(w.message)], [str(w.message) for w in warned]
    assert [t.state.name for t in study.trials] == ["COMPLETE"], [(t.state.name, t.user_attrs) for t in study.trials]
    trial = study.trials[0]
    after = [r for r in rows if not r.get("final") and r["pid"] != killer.killed_pid]
    shown = [(r["pid"], r["epoch"]) for r in rows]
    assert after, shown
    # Resumed from the checkpoint before the damaged one: its first epoch is the damaged epoch again.
    assert after[0]["epoch"] == damaged[0], f"damaged epoch {damaged[0]}'s checkpoint; the retry ran {shown}"
    assert_undisturbed(plan, trial)
