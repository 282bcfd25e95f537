"""Whether a process still exists: how leftovers of killed processes (a checkpoint temp file, a driver's
lease) are told from those of live ones on the same host."""

from __future__ import annotations

import os


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
