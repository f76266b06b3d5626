"""Unattended operation: ``openrouter-archive run``.

An APScheduler 3.x ``BlockingScheduler`` in UTC. It syncs once at start (catch-up after
any downtime), then on ``[schedule] sync_cron``. Catch-up is data-driven, since every
sync fetches whatever completed days are missing, so no persistent job store is needed.
Jobs coalesce, run one instance at a time and have no misfire grace limit; listeners log
missed and failed runs. A failed sync is retried after ``retry_delay_seconds``, at most
``max_retries`` times in a row, and the next scheduled run happens as usual.

SIGTERM and SIGINT set a stop event: the running sync finishes the day it is writing
(each day is one transaction), skips the rest, and the process exits 0.

The warehouse file: every job runs under the writer lock, opens the SQLite file at the
configured path (creating and migrating it if need be) and closes it at the end, so that
between jobs the daemon holds no descriptor, and no -wal or -shm file, that a file removed
or replaced in the meantime (``rm``, ``mv`` over it, a restored backup) could be confused
with. Each job compares the file's device and inode with those recorded at the end of the
previous one and logs a WARNING naming what happened; it then writes into the file at the
path. Reopening, rather than stopping, is deliberate: a daemon that stopped would miss
days unattended, while a new file at the path refetches the whole API window at once.
A file replaced *during* a sync got that sync's writes: the old file is checkpointed and
closed, its -wal and -shm (identified by inode) are removed from the path so the new file
cannot adopt them, and the sync runs again at once into the new file.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Engine

from etl import migrate, warehouse
from etl.client import OpenRouterClient
from etl.config import Config
from etl.db import checkpoint_wal, describe_failure, file_identity, is_operational_failure, sqlite_path
from etl.errors import ArchiveError, ConfigError, Interrupted, SyncFailed
from etl.lock import writer_lock
from etl.sync import SyncReport, pending_days, run_sync, sync_subject_plan
from etl.window import utc_today

log = logging.getLogger("etl.daemon")

SYNC_JOB, RETRY_JOB, CREDITS_JOB, ALERTS_JOB = "sync", "sync-retry", "credits", "alerts"


_CRON_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")  # cron: 0 and 7 are Sunday


def cron_weekdays(field: str) -> str:
    """A crontab day-of-week field in APScheduler's terms (pure).

    APScheduler 3 numbers weekdays from Monday = 0, and ``CronTrigger.from_crontab`` does not
    translate, so cron's ``2`` (Tuesday) would run on Wednesdays. Numbers, ranges and steps
    become explicit day names; names and ``*`` pass through.
    """
    parts = []
    for part in field.split(","):
        spec, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() else 1
        if spec == "*" and not step_text:
            parts.append("*")
            continue
        if spec == "*":
            first, last = 0, 6
        elif "-" in spec and all(x.isdigit() for x in spec.split("-", 1)):
            first, last = (int(x) for x in spec.split("-", 1))
        elif spec.isdigit():
            first = last = int(spec)
        else:
            parts.append(part)  # names ("mon-fri") mean the same to both
            continue
        if not 0 <= first <= last <= 7:
            raise ValueError(f"day of week {part!r} is outside 0-7")
        parts.append(",".join(dict.fromkeys(_CRON_WEEKDAYS[d] for d in range(first, last + 1, step))))
    return ",".join(parts)


def cron_trigger(expression: str, setting: str, source: str) -> CronTrigger:
    try:
        fields = expression.split()
        if len(fields) != 5:
            raise ValueError(f"wrong number of fields; got {len(fields)}, expected 5")
        minute, hour, day, month, weekday = fields
        trigger = CronTrigger(
            minute=minute, hour=hour, day=day, month=month, day_of_week=cron_weekdays(weekday), timezone=timezone.utc
        )
    except ValueError as exc:
        raise ConfigError(f"{source}: [schedule] {setting}: not a valid cron expression {expression!r} ({exc})") from None
    if trigger.get_next_fire_time(None, _now()) is None:  # e.g. "30 0 31 2 *", February 31st
        raise ConfigError(f"{source}: [schedule] {setting}: {expression!r} never fires; the daemon would never sync")
    return trigger


@dataclass
class Daemon:
    config: Config
    engine: Engine
    client: OpenRouterClient
    stop: threading.Event
    scheduler: BaseScheduler
    sync_trigger: BaseTrigger
    credits_trigger: BaseTrigger | None = None
    alerts_trigger: BaseTrigger | None = None
    on_report: Callable[[SyncReport], None] = lambda _: None
    failures_in_a_row: int = 0
    # (device, inode) of the SQLite file at the end of the last job (None: not opened yet),
    # and of its -wal and -shm files while a job has it open.
    identity: tuple[int, int] | None = None
    sidecars: dict[str, tuple[int, int] | None] = field(default_factory=dict)
    migrated: bool = False  # a job has opened the warehouse at its schema's head

    @classmethod
    def build(
        cls,
        config: Config,
        engine: Engine,
        client: OpenRouterClient,
        stop: threading.Event,
        *,
        scheduler: BaseScheduler | None = None,
        sync_trigger: BaseTrigger | None = None,
        alerts_trigger: BaseTrigger | None = None,
    ) -> Daemon:
        schedule = config.schedule
        scheduler = scheduler or BlockingScheduler(timezone=timezone.utc)
        scheduler.configure(
            timezone=timezone.utc,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        daemon = cls(
            config,
            engine,
            client,
            stop,
            scheduler,
            sync_trigger or cron_trigger(schedule.sync_cron, "sync_cron", config.source),
            cron_trigger(schedule.credits_cron, "credits_cron", config.source) if schedule.credits_cron.strip() else None,
        )
        if alerts_trigger is None and schedule.alerts_cron.strip():
            alerts_trigger = cron_trigger(schedule.alerts_cron, "alerts_cron", config.source)
        daemon.alerts_trigger = alerts_trigger
        path = sqlite_path(engine)
        if path is not None:
            daemon.identity = file_identity(path)
            engine.dispose()  # jobs open the file; between them the daemon holds nothing
        scheduler.add_listener(daemon._on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_EXECUTED)
        # next_run_time=now: the catch-up run at start, then the trigger's schedule.
        scheduler.add_job(daemon.sync_job, daemon.sync_trigger, id=SYNC_JOB, name="sync", next_run_time=_now())
        if daemon.credits_trigger is not None:
            scheduler.add_job(daemon.credits_job, daemon.credits_trigger, id=CREDITS_JOB, name="credits")
        if daemon.alerts_trigger is not None:
            scheduler.add_job(daemon.alerts_job, daemon.alerts_trigger, id=ALERTS_JOB, name="alerts")
        return daemon

    # -- jobs ------------------------------------------------------------------------------

    def sync_job(self) -> SyncReport:
        if self.stop.is_set():
            raise SyncFailed("not started: stopping")
        with self._lock():
            for _attempt in range(2):
                self._open_warehouse()
                try:
                    today, settings = utc_today(), self.config.sync
                    days = pending_days(self.engine, today, settings.refetch_days)
                    report = run_sync(
                        self.engine, self.client, days, trigger="daemon", stop=self.stop,
                        settings=settings, subject_plan=sync_subject_plan(today, settings.refetch_days),
                    )
                finally:
                    still_there = self._close_warehouse()
                if still_there or self.stop.is_set():
                    break
                log.warning(
                    "the warehouse file %s changed during the sync, whose writes went to the old file; syncing again "
                    "into the file now at that path", sqlite_path(self.engine), extra={"event": "warehouse_changed_during_sync"},
                )
        self.on_report(report)
        fields = {
            "event": "sync",
            "outcome": "ok" if report.ok else ("interrupted" if report.interrupted else "failed"),
            "run_id": report.run_id,
            "days_planned": len(report.planned),
            "days_archived": report.archived,
            "rows_inserted": report.total("inserted"),
            "rows_updated": report.total("updated"),
            "rows_unchanged": report.total("unchanged"),
            "requests": report.requests,
            "seconds": round(report.seconds, 3),
            "next_run": _iso(self.next_run()),
        }
        message = (
            f"sync {fields['outcome']}: {report.archived}/{len(report.planned)} day(s) archived, "
            f"{fields['rows_inserted']} new, {fields['rows_updated']} changed, {fields['rows_unchanged']} unchanged, "
            f"{report.requests} request(s), {report.seconds:.1f}s; next run {fields['next_run']}"
        )
        if report.ok:
            log.info(message, extra=fields)
            self._alerts_after_sync()
        elif report.interrupted:
            log.info(message, extra=fields)
        else:
            raise SyncFailed(f"{message}; error: {report.error or 'some days were rejected'}")
        return report

    def credits_job(self) -> None:
        fetched = self.client.credits()
        with self._lock():
            self._open_warehouse()
            try:
                with self.engine.begin() as conn:
                    balance = warehouse.record_credits(conn, fetched)
            finally:
                self._close_warehouse()
        log.info("credits snapshot: %.2f purchased, %.2f used", balance.total_credits, balance.total_usage, extra={"event": "credits"})

    def alerts_job(self) -> None:
        """Budgets and anomalies ([alerts]): evaluate, record, notify (etl.alerts.check)."""
        from etl.alerts.check import run_check

        if self.stop.is_set():
            return
        with self._lock():
            self._open_warehouse()
            try:
                result = run_check(self.engine, self.client, self.config)
            finally:
                self._close_warehouse()
        log.info(
            "alerts checked: %d active, %d new, %d resolved, %d sent, %d failed", len(result.active), len(result.fired),
            len(result.resolved), result.sent, len(result.failures),
            extra={"event": "alerts", "active": len(result.active), "fired": len(result.fired), "failed": len(result.failures)},
        )

    def _alerts_after_sync(self) -> None:
        try:
            self.alerts_job()
        except Exception as exc:  # a failing check never makes the sync a failure
            log.error("alerts check after the sync failed: %s", exc if isinstance(exc, ArchiveError) else f"unexpected {type(exc).__name__}: {exc}",
                      extra={"event": "failed", "job": ALERTS_JOB})

    # -- the warehouse file ------------------------------------------------------------------

    def _lock(self) -> Any:
        return writer_lock(self.config.warehouse_url, self.config.sync.lock_timeout_seconds, stop=self.stop)

    def _open_warehouse(self) -> None:
        """Under the writer lock: open (create, migrate) the file now at the configured path."""
        path = sqlite_path(self.engine)
        change: str | None = None
        found = file_identity(path) if path is not None else None
        if path is not None and self.identity is not None and found != self.identity:
            change = "removed" if found is None else "replaced"
        try:
            before, _after = migrate.upgrade(self.engine)  # logs it when it creates or migrates
        except BaseException:
            self.engine.dispose()  # hold nothing between jobs, even after a failure
            raise
        sidecars = {suffix: file_identity(_sidecar(path, suffix)) for suffix in ("-wal", "-shm")} if path is not None else {}
        opened = file_identity(path) if path is not None else None
        if path is not None and found is not None and before is not None and opened != found:
            # Moved over (or removed) while the migration had the old file open: the pool's connection is
            # the old file's, and so is the -wal at the path, which SQLite would read as the
            # new file's (mixing the two files' pages). Close the old file as a job's end
            # does for a file that left the path, then open and migrate the one now there.
            self.identity, self.sidecars = found, sidecars
            self._close_warehouse()
            try:
                before, _after = migrate.upgrade(self.engine)  # None: removed, and created anew just now
            except BaseException:
                self.engine.dispose()
                raise
            opened = file_identity(path)
        # An `rm` or `mv` between the comparison above and SQLite's open leaves the job itself
        # opening the file now at the path: an empty schema (the removed file's inode number
        # may even be reused), or another file there than a moment ago, says so regardless.
        if change is None and path is not None and self.migrated:
            if before is None:
                change = "removed"
            elif opened != found:
                change = "replaced"
        if change is not None and path is not None:
            what = "was removed" if change == "removed" else "was replaced (another file now sits at that path)"
            log.warning(
                "the warehouse file %s %s since the daemon last wrote to it; writing into the file now at that path%s",
                path, what, ", a new warehouse" if change == "removed" else "",
                extra={"event": "warehouse_reopened", "path": str(path), "change": change},
            )
        self.migrated = True
        if path is not None:
            self.identity = opened
            self.sidecars = {suffix: file_identity(_sidecar(path, suffix)) for suffix in ("-wal", "-shm")}

    def _close_warehouse(self) -> bool:
        """Close the file (SQLite then folds and removes its -wal); False if it left the path meanwhile."""
        path = sqlite_path(self.engine)
        if path is None:
            return True
        if file_identity(path) == self.identity:
            self.engine.dispose()
            return True
        # The pooled connections still point at the old file: fold its WAL into it (it may
        # live on under another name), close it, and take its -wal and -shm off the path,
        # where SQLite would otherwise read them as the new file's.
        pool = self.engine.pool
        if getattr(pool, "checkedin", lambda: 0)() > 0:  # a new connection would open the new file
            try:
                with self.engine.connect() as conn:
                    checkpoint_wal(conn)
            except Exception as exc:  # best effort: the old file is no longer the warehouse
                log.debug("checkpoint of the replaced warehouse file failed: %s", exc)
        self.engine.dispose()
        for suffix, identity in self.sidecars.items():
            side = _sidecar(path, suffix)
            if identity is not None and file_identity(side) == identity:
                side.unlink(missing_ok=True)
        return False

    # -- events ----------------------------------------------------------------------------

    def _on_event(self, event: Any) -> None:
        if event.code == EVENT_JOB_MISSED:
            log.warning("missed the run of job %s scheduled at %s", event.job_id, _iso(event.scheduled_run_time), extra={"event": "missed", "job": event.job_id})
            return
        if event.job_id not in (SYNC_JOB, RETRY_JOB):
            if event.code == EVENT_JOB_ERROR:
                log.error("job %s failed: %s", event.job_id, self._describe(event), extra={"event": "failed", "job": event.job_id})
            return
        if event.code == EVENT_JOB_EXECUTED:
            self.failures_in_a_row = 0
            return
        assert isinstance(event, JobExecutionEvent)
        if isinstance(event.exception, Interrupted) and self.stop.is_set():  # a stop, not a failure
            log.info("%s", event.exception, extra={"event": "interrupted", "job": event.job_id})
            return
        self.failures_in_a_row += 1
        detail = self._describe(event)
        log.error("%s", detail, extra={"event": "failed", "job": event.job_id, "failures_in_a_row": self.failures_in_a_row})
        self._schedule_retry()

    def _describe(self, event: Any) -> str:
        """One line for an expected failure (API, warehouse); a bug keeps its traceback."""
        exc = event.exception
        if isinstance(exc, ArchiveError):
            return str(exc)
        if is_operational_failure(exc):
            return describe_failure(exc, self.config.warehouse_url)
        return f"unexpected {type(exc).__name__}: {exc}\n{event.traceback}"

    def _schedule_retry(self) -> None:
        schedule = self.config.schedule
        if self.stop.is_set():
            return
        if self.failures_in_a_row > schedule.max_retries:
            log.error("giving up retrying after %d failure(s); next scheduled run at %s", self.failures_in_a_row, _iso(self.next_run()), extra={"event": "retries_exhausted"})
            self.failures_in_a_row = 0
            return
        when = _now() + timedelta(seconds=schedule.retry_delay_seconds)
        self.scheduler.add_job(self.sync_job, "date", run_date=when, id=RETRY_JOB, name="sync retry", replace_existing=True)
        log.warning("retry %d of %d at %s", self.failures_in_a_row, schedule.max_retries, _iso(when), extra={"event": "retry_scheduled"})

    # -- lifecycle -------------------------------------------------------------------------

    def next_run(self) -> datetime | None:
        # Asked of the trigger, not the scheduler: a job calling scheduler.get_job() while
        # shutdown(wait=True) holds the job-store lock and waits for that job deadlocks.
        now = _now()
        fire: datetime | None = self.sync_trigger.get_next_fire_time(now, now)
        return fire

    def request_stop(self, reason: str = "stop requested") -> None:
        """Safe from a signal handler: the shutdown itself waits in another thread."""
        if self.stop.is_set():
            return
        log.info("%s: finishing the day being written, then stopping", reason, extra={"event": "stopping"})
        self.stop.set()
        threading.Thread(target=self._shutdown, name="shutdown", daemon=True).start()

    def _shutdown(self) -> None:
        try:
            self.scheduler.shutdown(wait=True)
        except Exception:  # already stopped
            pass

    def run_forever(self) -> None:
        """Block until SIGTERM or SIGINT; returns once the running job has finished."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: self.request_stop(signal.Signals(signum).name))
        log.info(
            "daemon started: sync now, then on %r (UTC)%s",
            self.config.schedule.sync_cron,
            f", credits on {self.config.schedule.credits_cron!r}" if self.credits_trigger else "",
            extra={"event": "started"},
        )
        self.scheduler.start()
        log.info("daemon stopped", extra={"event": "stopped"})


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds") if moment else None
