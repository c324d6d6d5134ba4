"""An exclusive lock on a run folder, so two profilers never append to the same results.

The lock is ``<folder>/.lock``: an advisory ``flock`` on that file plus the holder's pid, host, start time and
command written into it. The kernel drops the ``flock`` when the holder exits for any reason (including SIGKILL),
so liveness never depends on guessing from a pid:

* a second job on the same folder fails at once with :class:`RunLockedError`, naming the lock file and its holder;
* a lock file left by a killed run (its content is still there, but nobody holds the ``flock``) is reported as
  stale and taken over;
* a clean exit removes the file.

``flock`` works on local file systems and, through the lock manager, on NFS; it needs a POSIX system.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from typing_extensions import Self

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class RunLockedError(RuntimeError):
    """The run folder is locked by another running job; the message names the lock file and its holder."""


def _describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "an unknown process"
    return (f"pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('started')} "
            f"(command: {' '.join(holder.get('argv') or [])})")


def _read_holder(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    if not data.strip():
        return None
    try:
        return json.loads(data)
    except json.JSONDecodeError:
        return {"pid": "?", "host": "?", "started": "?", "argv": [data[:200].decode(errors="replace")]}


class RunLock:
    """Exclusive lock on ``folder`` (use as a context manager, or :meth:`acquire` / :meth:`release`).

    Attributes:
        path: the lock file.
        stale: the holder record of a stale lock that was taken over, else None.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.stale: dict[str, Any] | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`RunLockedError` at once (never waits)."""
        if fcntl is None:  # pragma: no cover
            raise RuntimeError("locking a run folder needs a POSIX system (fcntl.flock)")
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = _read_holder(fd)
                os.close(fd)
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                raise RunLockedError(
                    f"{self.path.parent} is being written by another job: lock file {self.path} is held by "
                    f"{_describe(holder)}. Wait for that job to finish or stop it, or use another output_dir."
                ) from None
            try:  # the previous holder may have removed the file between our open and flock: lock the live file
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.stale = _read_holder(fd)
        if self.stale:
            msg = (f"removed a stale lock {self.path} left by {_describe(self.stale)}: that process no longer "
                   "holds it (killed?); its finished results are kept and resumed")
            logger.warning(msg)
            print(f"[profile] {msg}", file=sys.stderr, flush=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "argv": list(sys.argv)}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(me) + "\n").encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and drop the lock (the file goes first, while still held)."""
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self._fd)  # closing the descriptor releases the flock
        self._fd = None

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
