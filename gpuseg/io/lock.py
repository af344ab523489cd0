"""One writer per run directory: an advisory ``fcntl`` lock held while a command writes it.

Every gpuseg command that writes a run directory holds :class:`RunDirLock` on
``<run dir>/.gpuseg.lock`` for its whole run. A second writer does not wait: it stops at once with
one line naming the holder's pid, before it has written anything. The lock is the kernel's
(``flock``), so it is released when the holder exits however it exits (kill -9 included); the
file itself stays and only records who holds it.
"""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

from gpuseg.errors import RunDirError

LOCK_NAME = ".gpuseg.lock"


class RunDirLock:
    """``with RunDirLock(run_dir): ...``: the directory is created, then locked or refused.

    Not reentrant: a second ``RunDirLock`` on the same directory in the same process is refused
    like one from another process (flock locks belong to the open file).
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunDirLock:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RunDirError(
                f"{self.run_dir}: cannot create the run directory or its lock file "
                f"({exc.strerror or type(exc).__name__})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _holder(fd)
            os.close(fd)
            raise RunDirError(
                f"{self.run_dir}: in use by another gpuseg process ({holder}); wait for it to "
                "finish or use another out_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}: {' '.join(sys.argv[:3])[:200]}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases the lock
            self._fd = None


def _holder(fd: int) -> str:
    """What the holder wrote into the lock file: ``pid N: command`` (bounded read)."""
    try:
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").strip().splitlines()
    except OSError:
        text = []
    return text[0] if text else "pid unknown"
