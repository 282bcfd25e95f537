"""Atomic, checksummed checkpoint files: one dict per checkpointed epoch, newest good one wins.

A file is ``torch.save`` bytes followed by a footer holding their SHA-256, so a truncated or
bit-flipped file is detected before unpickling. Files are written to a temp name and renamed, so a crash
mid-write never leaves a half file under a real name; durable files are fsynced before the rename (scratch
files that are copied elsewhere at once are not: see save_checkpoint). Loading uses ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.utils.serialization

from hpstudy.processes import pid_exists

log = logging.getLogger(__name__)

_FOOTER = b"\nHPSTUDY-SHA256:"
_NAME = re.compile(r"^epoch_(\d{4,})\.pt$")
_TEMP = re.compile(r"^\.epoch_\d{4,}\.pt\.tmp(\d+)$")  # a write in progress, or one a killed process left
CHECKPOINT_KEYS = ("format", "config", "epoch", "model", "optimizer", "scheduler", "history",
                   "rng", "data_order", "monitor")


def checkpoint_path(directory: Path, epoch: int) -> Path:
    return Path(directory) / f"epoch_{epoch:04d}.pt"


def save_checkpoint(state: dict[str, Any], directory: Path, epoch: int, keep: int = 2, durable: bool = True) -> Path:
    """Write ``state`` as epoch ``epoch`` atomically, then keep only the newest ``keep`` files.

    durable: fsync the file and the directory, so that the file outlives a crash of the machine, not
    only of the process. False for a scratch file that is copied elsewhere at once and removed with its
    run (Ray Tune's trials): its fsync (about 20 ms for a 22 MB checkpoint here) would protect nothing."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    buffer = io.BytesIO()
    # The footer's SHA-256 covers every byte, so the zip's own CRC-32 of each record adds only time
    # (7 ms of 13 for a 22 MB checkpoint here); torch.load does not need it. The setting is thread-local.
    with torch.utils.serialization.config.patch("save.compute_crc32", False):
        torch.save(state, buffer)
    payload = buffer.getbuffer()  # no copy
    target = checkpoint_path(directory, epoch)
    tmp = directory / f".{target.name}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.write(_FOOTER + hashlib.sha256(payload).hexdigest().encode())
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write (full disk, signal) leaves nothing behind
        raise
    finally:
        payload.release()
    if durable:
        _fsync_dir(directory)
    for old in list_checkpoints(directory)[:-keep]:
        old.unlink(missing_ok=True)
    _remove_stale_temps(directory)
    return target


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint files in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Load one file; raises ValueError when it is truncated, altered or not a checkpoint."""
    data = Path(path).read_bytes()
    cut = data.rfind(_FOOTER)
    if cut < 0:
        raise ValueError(f"{path}: no checksum footer (truncated or not an hpstudy checkpoint)")
    payload, digest = data[:cut], data[cut + len(_FOOTER):]
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise ValueError(f"{path}: checksum mismatch (damaged file)")
    try:
        state = torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    except Exception as exc:  # intact bytes that torch cannot (or, with weights_only, will not) load
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ValueError(f"{path}: not loadable ({type(exc).__name__}: {first})") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not an hpstudy checkpoint (a {type(state).__name__}, not a dict)")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise ValueError(f"{path}: not an hpstudy checkpoint (missing {', '.join(missing)})")
    return state


def load_latest(directory: Path) -> tuple[dict[str, Any], Path] | None:
    """The newest readable checkpoint in ``directory``; damaged newer ones are skipped with a warning."""
    for path in reversed(list_checkpoints(directory)):
        try:
            return read_checkpoint(path), path
        except Exception as exc:  # any unreadable file: fall back to the previous one
            log.warning("skipping damaged checkpoint %s: %s", path, exc)
    return None


def _remove_stale_temps(directory: Path) -> None:
    """Temp files of writers that died mid-write (SIGTERM, kill -9, power loss) are as big as a
    checkpoint; without this they pile up, one per interrupted write. A live process's file stays."""
    for path in directory.iterdir():
        m = _TEMP.match(path.name)
        if m and int(m.group(1)) != os.getpid() and not pid_exists(int(m.group(1))):
            path.unlink(missing_ok=True)


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
