import io
import logging
import zipfile

import pytest
import torch

from hpstudy.trainables import checkpoints


def state(epoch: int) -> dict:
    return {"format": 1, "config": {"lr": 0.1}, "epoch": epoch, "model": {"w": torch.full((3,), float(epoch))},
            "optimizer": {}, "scheduler": {}, "history": [{"epoch": epoch}], "rng": {"torch": torch.get_rng_state()},
            "data_order": {"seed": 0, "next_epoch": epoch}, "monitor": {"step": 1}}


def test_round_trip_and_retention(tmp_path):
    for epoch in range(1, 5):
        checkpoints.save_checkpoint(state(epoch), tmp_path, epoch, keep=2)
    assert [p.name for p in checkpoints.list_checkpoints(tmp_path)] == ["epoch_0003.pt", "epoch_0004.pt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left
    loaded, path = checkpoints.load_latest(tmp_path)
    assert path.name == "epoch_0004.pt" and torch.equal(loaded["model"]["w"], torch.full((3,), 4.0))


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "garbage"])
def test_damaged_latest_falls_back_to_previous_with_warning(tmp_path, caplog, damage):
    checkpoints.save_checkpoint(state(1), tmp_path, 1)
    latest = checkpoints.save_checkpoint(state(2), tmp_path, 2)
    data = bytearray(latest.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "bitflip":
        data[len(data) // 3] ^= 0x01
    else:
        data = bytearray(b"not a checkpoint")
    latest.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        loaded, path = checkpoints.load_latest(tmp_path)
    assert loaded["epoch"] == 1 and path.name == "epoch_0001.pt"
    assert "skipping damaged checkpoint" in caplog.text and "epoch_0002.pt" in caplog.text


def test_nothing_readable_gives_none(tmp_path):
    assert checkpoints.load_latest(tmp_path / "missing") is None
    (tmp_path / "epoch_0001.pt").write_bytes(b"junk")
    assert checkpoints.load_latest(tmp_path) is None


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def broken_fsync(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(checkpoints.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        checkpoints.save_checkpoint(state(1), tmp_path, 1)
    assert list(tmp_path.iterdir()) == []


def test_loading_refuses_pickled_code(tmp_path):
    # weights_only=True: a checkpoint carrying an arbitrary object is rejected, not executed.
    bad = state(1)
    bad["history"] = [logging.getLogger("x")]
    checkpoints.save_checkpoint(bad, tmp_path, 1)
    with pytest.raises(Exception):
        checkpoints.read_checkpoint(tmp_path / "epoch_0001.pt")


@pytest.mark.parametrize("durable, fsyncs", [(True, 2), (False, 0)])
def test_a_durable_write_fsyncs_the_file_and_its_folder_a_scratch_write_does_not(tmp_path, monkeypatch, durable, fsyncs):
    calls = []
    real_fsync = checkpoints.os.fsync
    monkeypatch.setattr(checkpoints.os, "fsync", lambda fd: calls.append(fd) or real_fsync(fd))
    path = checkpoints.save_checkpoint(state(1), tmp_path, 1, durable=durable)
    assert len(calls) == fsyncs
    assert checkpoints.read_checkpoint(path)["epoch"] == 1 and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_the_zip_records_carry_no_crc_the_footer_checks_every_byte(tmp_path):
    path = checkpoints.save_checkpoint(state(1), tmp_path, 1)
    payload = path.read_bytes()
    payload = payload[:payload.rfind(b"\nHPSTUDY-SHA256:")]
    records = zipfile.ZipFile(io.BytesIO(payload)).infolist()
    assert records and all(r.CRC == 0 for r in records if r.file_size)
    assert torch.utils.serialization.config.save.compute_crc32  # the setting was only patched for the write
