"""Single writer: at most one sync writes to a warehouse at a time.

On PostgreSQL, a session-level advisory lock on the server itself (etl/postgres.py): it
excludes writers on every host and under every spelling of the URL. What follows is the
file lock of SQLite (and of any other URL).

The lock is an advisory ``flock`` (through filelock) on a file beside a SQLite warehouse,
or, for other URLs, in the user data folder under a name derived from the URL. The
kernel drops a ``flock`` when its holder dies, even by SIGKILL, so a crashed sync never
leaves the archive locked. Readers (status, reports, SQL) never take it: SQLite's WAL
lets them read while the writer writes.

Who holds the lock (pid, host, command, since when) is written, once the lock is taken,
to a sidecar file ``<lock>.info``: filelock truncates the lock file itself when it opens
it, so the lock file cannot carry it. A waiting writer reads it to say whom it waits for.
The holder removes it before releasing; one left by a killed holder is overwritten by the
next, and a waiter that finds its pid gone on this host says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import platformdirs
from sqlalchemy.engine import make_url

from etl.config import APP_NAME
from etl.db import sqlite_file
from etl.errors import Interrupted, LockTimeout, WarehouseError

log = logging.getLogger(__name__)


def lock_path(warehouse_url: str) -> Path:
    url = make_url(warehouse_url)
    database = url.database or ""
    file = sqlite_file(database) if url.get_backend_name() == "sqlite" else None
    if file is not None:
        path = file.resolve()
        return path.with_name(path.name + ".lock")
    digest = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()[:16]
    return Path(platformdirs.user_data_dir(APP_NAME)) / f"warehouse-{digest}.lock"


def info_path(lock: Path) -> Path:
    return lock.with_name(lock.name + ".info")


def _this_command() -> str:
    from etl.logs import redact

    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if name in ("__main__.py", "-c", "-m"):
        name = "openrouter-archive" if name == "__main__.py" else "python"
    return redact(" ".join([name, *sys.argv[1:]]))[:200]


def read_holder(lock: Path) -> dict[str, Any] | None:
    """What the sidecar says about the current holder, or None when there is nothing to read."""
    try:
        info = json.loads(info_path(lock).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def describe_holder(info: dict[str, Any] | None) -> str:
    if not info:
        return "holder unknown"
    pid, host = info.get("pid"), info.get("host")
    text = f"pid {pid} on {host}, `{info.get('command', '?')}`, since {info.get('since', '?')}"
    if host == socket.gethostname() and isinstance(pid, int) and not _alive(pid):
        text += " (that process has exited; the lock changes hands now)"
    return text


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _write_info(lock: Path, command: str | None) -> dict[str, Any]:
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command or _this_command(),
        "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    target = info_path(lock)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(info) + "\n")
        os.replace(tmp, target)
    except OSError as exc:  # only a courtesy to waiters: never a reason to fail the writer
        log.debug("could not write %s: %s", target, exc)
        with suppress(OSError):
            tmp.unlink()
    return info


def _remove_info(lock: Path) -> None:
    info = read_holder(lock)
    if info is not None and info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
        with suppress(OSError):
            info_path(lock).unlink()


def _postgresql(warehouse_url: str) -> Any:
    url = make_url(warehouse_url)
    return url if url.get_backend_name() == "postgresql" else None


@contextmanager
def writer_lock(warehouse_url: str, timeout: float, command: str | None = None, stop: threading.Event | None = None) -> Iterator[Path | str]:
    """Hold the warehouse's writer lock, waiting up to ``timeout`` seconds for it.

    ``command`` is how waiters will see the holder (default: this process's command line).
    ``stop``, once set, ends the wait with Interrupted: a daemon told to stop must not sit
    out a ``lock_timeout_seconds`` longer than its service manager's patience.
    On PostgreSQL the lock is an advisory lock on the server (etl/postgres.py), held for
    as long as this context lasts; elsewhere a file lock.
    """
    pg = _postgresql(warehouse_url)
    if pg is not None:
        from etl import postgres

        with postgres.writer_lock(pg, timeout, command or _this_command(), warehouse_url, stop) as held:
            yield held
        return
    yield from _file_lock(warehouse_url, timeout, command, stop)


def interrupted_waiting() -> Interrupted:
    return Interrupted("stopped while waiting for the writer lock; nothing was written")


def _file_lock(warehouse_url: str, timeout: float, command: str | None, stop: threading.Event | None) -> Iterator[Path]:
    from filelock import FileLock, Timeout

    path = lock_path(warehouse_url)
    lock = FileLock(path, is_singleton=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if timeout <= 0:
                raise
            log.warning(
                "waiting up to %gs for the writer lock of this warehouse, held by %s",
                timeout, describe_holder(read_holder(path)), extra={"event": "lock_wait"},
            )
            deadline = time.monotonic() + timeout
            while True:
                try:
                    lock.acquire(timeout=max(min(0.2, deadline - time.monotonic()), 0), poll_interval=0.05)
                    break
                except Timeout:
                    if stop is not None and stop.is_set():
                        raise interrupted_waiting() from None
                    if time.monotonic() >= deadline:
                        raise
    except Timeout:  # an OSError subclass: catch it first
        raise LockTimeout(
            f"another sync is writing to this warehouse ({describe_holder(read_holder(path))}; lock {path}); "
            f"gave up after {timeout:g}s, try again later"
        ) from None
    except OSError as exc:
        raise WarehouseError(f"cannot create the warehouse folder for {path}: {exc.strerror or exc}") from None
    try:
        _write_info(path, command)
        yield path
    finally:
        _remove_info(path)
        lock.release()


def writer_active(warehouse_url: str) -> bool:
    """Whether a writer holds the lock right now; creates nothing (for readers such as status)."""
    pg = _postgresql(warehouse_url)
    if pg is not None:
        from etl import postgres
        from etl.db import open_engine

        engine = open_engine(warehouse_url, read_only=True)
        try:
            with engine.connect() as conn:
                return postgres.writer_active(conn)
        finally:
            engine.dispose()
    try:
        import fcntl
    except ImportError:  # no flock here: filelock fell back to another kind of lock
        return False
    try:
        fd = os.open(lock_path(warehouse_url), os.O_RDONLY)
    except OSError:  # no lock file: no writer has ever run here
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
