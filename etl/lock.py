"""Single writer: at most one sync writes to a warehouse at a time, on one machine.

The lock is an advisory ``flock`` (through filelock) on a file beside a SQLite warehouse,
or, for other URLs, in the user data folder under a name derived from the URL. The
kernel drops a ``flock`` when its holder dies, even by SIGKILL, so a crashed sync never
leaves the archive locked. Readers (status, reports, SQL) never take it: SQLite's WAL
lets them read while the writer writes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import platformdirs
from filelock import FileLock, Timeout
from sqlalchemy.engine import make_url

from etl.config import APP_NAME
from etl.errors import ArchiveError, WarehouseError


class LockTimeout(ArchiveError):
    """Another writer held the warehouse for longer than we were willing to wait."""

    exit_code = 75  # EX_TEMPFAIL: cron wrappers and systemd treat it as "try again later"


def lock_path(warehouse_url: str) -> Path:
    url = make_url(warehouse_url)
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database and database != ":memory:" and not database.startswith("file:"):
        path = Path(database).expanduser().resolve()
        return path.with_name(path.name + ".lock")
    digest = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()[:16]
    return Path(platformdirs.user_data_dir(APP_NAME)) / f"warehouse-{digest}.lock"


@contextmanager
def writer_lock(warehouse_url: str, timeout: float) -> Iterator[Path]:
    """Hold the warehouse's writer lock, waiting up to ``timeout`` seconds for it."""
    path = lock_path(warehouse_url)
    lock = FileLock(path, is_singleton=False)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=timeout, poll_interval=0.05)
    except Timeout:  # an OSError subclass: catch it first
        raise LockTimeout(
            f"another sync is writing to this warehouse (lock {path}); gave up after {timeout:g}s, try again later"
        ) from None
    except OSError as exc:
        raise WarehouseError(f"cannot create the warehouse folder for {path}: {exc.strerror or exc}") from None
    try:
        yield path
    finally:
        lock.release()
