"""The ``openrouter-archive`` command line: one command per job, each a short path
(open the warehouse → fetch → save). Heavy imports happen inside commands so that
``--help`` and quick commands start fast.
"""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from etl import __version__
from etl.errors import ArchiveError, BadArgument, ConfigError
from etl.metrics import choices as metric_choices
from etl.metrics import resolve as resolve_metric

if TYPE_CHECKING:
    import threading

    from sqlalchemy import Engine

    from etl.analytics import AnalyticsProgress, AnalyticsRun
    from etl.client import OpenRouterClient
    from etl.config import Config
    from etl.sync import SyncReport


# httpx imports its own command-line client on import whenever click, rich and pygments are
# installed (they are: click and rich are ours); the archiver never runs it, and it cost every
# `sync` from cron 80 to 110 ms of CPU (scripts/bench_startup.py). A None entry makes that import fail, and httpx then
# falls back to a stub, as it does without its `cli` extra. Only in this process: the CLI's.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


@dataclass
class App:
    """What every command needs, built lazily from the global options."""

    config_path: str | None
    quiet: bool = False
    debug: bool = False
    verbose: int = 0
    log_format: str = "text"
    _locks_held: int = field(default=0, init=False, repr=False)

    @cached_property
    def config(self) -> Config:
        from etl.config import load_config
        from etl.db import register_url_secret

        config = load_config(self.config_path)
        register_url_secret(config.warehouse_url)  # a database password is masked like the API key
        return config

    def engine(self, migrate: bool = True, *, read_only: bool = False) -> Engine:
        """The warehouse: created and migrated (under the writer lock only), or opened to read.

        ``read_only`` never creates a folder or a file and cannot write.
        """
        from etl import migrate as migrations
        from etl.db import open_engine

        if read_only:
            return open_engine(self.config.warehouse_url, self.config.warehouse.busy_timeout_seconds, read_only=True)
        if migrate and not self._locks_held:
            # Two processes migrating at once, or a migration beside a running sync, is
            # how a warehouse gets damaged: every migrating command takes the lock first.
            raise RuntimeError("bug: migrating the warehouse without holding the writer lock")
        engine = open_engine(self.config.warehouse_url, self.config.warehouse.busy_timeout_seconds)
        if migrate:
            migrations.upgrade(engine)
        return engine

    @contextmanager
    def writer_lock(self, stop: threading.Event | None = None) -> Iterator[Path | str]:
        from etl.lock import writer_lock

        with writer_lock(self.config.warehouse_url, self.config.sync.lock_timeout_seconds, stop=stop) as path:
            self._locks_held += 1
            try:
                yield path
            finally:
                self._locks_held -= 1

    def client(self, api_key: str | None = None, stop: Any = None) -> OpenRouterClient:
        from etl.client import MANAGEMENT_KEYS_URL, OpenRouterClient
        from etl.config import read_api_key
        from etl.logs import register_secret

        cfg = self.config.openrouter
        key = api_key or read_api_key(self.config)
        if not key:
            raise ConfigError(
                f"no API key: set ${cfg.api_key_env} (or put it in ./.env) to a management key from "
                f"{MANAGEMENT_KEYS_URL}; or try `openrouter-archive demo`, which needs none"
            )
        register_secret(key)
        return OpenRouterClient.from_config(cfg, key, stop=stop)


class ArchiveGroup(click.Group):
    """Turns expected failures into one line on stderr and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ArchiveError as exc:
            _fail(ctx, str(exc), exc.exit_code, type(exc).__name__)
        except KeyboardInterrupt:
            _fail(ctx, "Interrupted.", 130, "KeyboardInterrupt", prefix="")
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as exc:
            app = ctx.obj
            if isinstance(app, App) and app.debug:
                raise
            from etl.db import describe_failure, is_operational_failure

            if is_operational_failure(exc) and isinstance(app, App):
                _fail(ctx, describe_failure(exc, app.config.warehouse_url), 1, type(exc).__name__)
            _fail(ctx, f"unexpected {type(exc).__name__}: {exc} (run with --debug for details)", 1, type(exc).__name__)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        """Every command (and sub-group) also takes the global options, and says its exit codes."""
        _dress(cmd)
        super().add_command(cmd, name)


def _dress(cmd: click.Command) -> None:
    """The global options and the exit codes on ``cmd`` and, for a group built elsewhere
    (``etl/alerts/commands.py``), on the commands it already holds."""
    _add_global_options(cmd)
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _dress(sub)
    elif cmd.epilog is None:
        cmd.epilog = EXIT_CODES.get(cmd.name or "", EXIT_CODES["*"])


def _fail(ctx: click.Context, message: str, code: int, kind: str, prefix: str = "Error: ") -> None:
    """The final line of a failed command on stderr, as text or (--log-format json) JSON."""
    from etl.logs import redact

    app = ctx.obj
    if isinstance(app, App) and app.log_format == "json":
        from datetime import datetime, timezone

        entry = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "level": "error",
                 "logger": "etl.cli", "message": message, "error": kind, "exit_code": code}
        click.echo(redact(json.dumps(entry)), err=True)
    else:
        click.echo(redact(f"{prefix}{message}"), err=True)
    ctx.exit(code)


ArchiveGroup.group_class = type  # sub-groups (`db`) are ArchiveGroups too

# The exit status of each command, shown at the end of its --help (and in the README).
_COMMON_CODES = "2 bad usage, arguments or configuration; 75 another process holds the warehouse's writer lock (try again later); 130 interrupted"
EXIT_CODES = {
    "*": f"Exit status: 0 done; 1 failed (the API, the warehouse); {_COMMON_CODES}.",
    "sync": f"Exit status: 0 every day asked for was archived; 1 a day, a breakdown or the API failed "
            f"(what was fetched is kept); {_COMMON_CODES}.",
    "status": "Exit status: 0 shown (and, with --check, healthy); 1 --check found the archive stale, damaged or "
              "about to lose days, or the warehouse cannot be read; 2 bad usage or configuration.",
    "report": "Exit status: 0 written (also for an empty report, with a note); 1 no archive yet, or the warehouse "
              "cannot be read; 2 bad arguments (unknown group or metric, bad dates, a file that cannot be written).",
    "sql": "Exit status: 0 the statement ran; 1 it was refused (it would write) or failed (syntax, unknown table), "
           "or no archive yet; 2 bad usage or configuration.",
    "run": "Exit status: 0 stopped by SIGTERM or SIGINT; 2 bad configuration (a schedule that cannot work); "
           "75 another process holds the writer lock; 1 the service could not start.",
    "demo": "Exit status: 0 the demo archived every day; 1 it did not; 2 --db names a file that holds other data.",
}
EXIT_CODES["backfill"] = EXIT_CODES["sync"]


def _set_global(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """A global option given after the command: it overrides (-v adds to) the one before."""
    from click.core import ParameterSource

    if ctx.get_parameter_source(param.name or "") in (ParameterSource.DEFAULT, None):
        return
    app = ctx.find_object(App)
    if app is None:
        return
    if param.name == "verbose":
        app.verbose += value
    elif param.name == "config_path":
        if "config" in app.__dict__:
            del app.__dict__["config"]  # not read yet in practice: commands read it later
        app.config_path = value
    else:
        setattr(app, param.name or "", value)
    from etl.logs import setup_logging

    setup_logging(app.verbose, app.quiet, app.log_format)


def global_options() -> list[click.Option]:
    """--config, -v, -q, --debug and --log-format: before the command or after it
    (``openrouter-archive sync --config X``, as a cron line is easily written)."""
    common: dict[str, Any] = {"expose_value": False, "callback": _set_global}
    return [
        # No envvar here: $OPENROUTER_ARCHIVE_CONFIG is read once, by the group's --config.
        click.Option(["--config", "config_path"], metavar="PATH",
                     help="Config file (default: ./config.toml, then the user config dir).", **common),
        click.Option(["-v", "--verbose"], count=True, help="More log output (-vv for debug).", **common),
        click.Option(["-q", "--quiet"], is_flag=True, help="Only errors and the final summary.", **common),
        click.Option(["--debug"], is_flag=True, help="Show tracebacks of unexpected errors.", **common),
        click.Option(["--log-format"], type=click.Choice(["text", "json"]), help="Log lines (and the final Error: line) on stderr as text or JSON.", **common),
    ]


def _add_global_options(cmd: click.Command) -> None:
    names = {p.name for p in cmd.params}
    cmd.params.extend(o for o in global_options() if o.name not in names)



pass_app = click.make_pass_decorator(App)


ENVIRONMENT = """\b
Environment:
  OPENROUTER_API_KEY          the management key (also read from ./.env)
  OPENROUTER_BASE_URL         the API's base URL (default: https://openrouter.ai/api/v1)
  OPENROUTER_ARCHIVE_DB       the warehouse URL (sqlite:///PATH or postgresql://...)
  OPENROUTER_ARCHIVE_CONFIG   the config file (as --config)
  OPENROUTER_ARCHIVE_ANALYTICS  off: do not archive the Analytics API's history

\b
Exit status: 0 done; 1 failed; 2 bad usage or configuration; 75 the writer lock is held
by another process (try again later); 130 interrupted. Each command's --help says more."""


@click.group(cls=ArchiveGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=ENVIRONMENT)
@click.option("--config", "config_path", metavar="PATH", envvar="OPENROUTER_ARCHIVE_CONFIG", help="Config file (default: ./config.toml, then the user config dir).")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and the final summary.")
@click.option("--debug", is_flag=True, help="Show tracebacks of unexpected errors.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True, help="Log lines on stderr as text or JSON objects.")
@click.version_option(__version__, prog_name="openrouter-archive")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, verbose: int, quiet: bool, debug: bool, log_format: str) -> None:
    """Keep a permanent history of an OpenRouter account's usage.

    OpenRouter's /activity endpoint only serves the last 30 completed UTC days; this tool
    archives every day into a SQLite warehouse before it disappears.

    The global options may also follow the command (`sync --config X -q`).
    """
    from etl.logs import setup_logging

    setup_logging(verbose, quiet, log_format)
    ctx.obj = App(config_path, quiet=quiet, debug=debug, verbose=verbose, log_format=log_format)


# While a sync runs, the cyclic collector's youngest generation is collected after this many
# allocations instead of 700: a first sync allocates a row's dict and tuple 70,000 times over,
# nearly none of them in a cycle, and the collections they set off were a twentieth of its
# time. It still runs, so a run's cyclic garbage stays bounded.
SYNC_GC_THRESHOLD = 100_000


@contextmanager
def _collector_skips_what_exists() -> Iterator[None]:
    """Leave the objects that exist now (modules, the engine, the client) out of the cyclic
    collector's scans while the body runs, and collect less often (``SYNC_GC_THRESHOLD``): a
    first sync makes hundreds of thousands of objects, and each full collection rescanned
    everything imported too (0.2 s of CPU on a year of 70,000 rows). Afterwards they are
    collectable again and the thresholds are as before, so nothing is kept."""
    thresholds = gc.get_threshold()
    gc.freeze()
    if thresholds[0]:  # 0: the collector is switched off, and stays so
        gc.set_threshold(max(thresholds[0], SYNC_GC_THRESHOLD), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _run_and_report(
    app: App, trigger: str, plan: Callable[[Engine, Any], list[Any]], api_key: str | None = None,
    subject_plan: Callable[[set[str]], list[Any]] | None = None, guard: Callable[[], None] | None = None,
) -> SyncReport:
    from etl.analytics import DeferredProgress
    from etl.render import DayPrinter, describe_report
    from etl.sync import run_sync

    with app.writer_lock():
        if guard is not None:  # checked under the lock, before anything is migrated
            guard()
        with app.client(api_key) as client:
            progress = DeferredProgress()
            early = _analytics_before_the_warehouse(app, client, trigger, progress)
            try:
                engine = app.engine()
                days = plan(engine, app.config)
                with _collector_skips_what_exists(), DayPrinter(len(days), quiet=app.quiet) as printer:
                    progress.attach(printer)
                    report = run_sync(
                        engine, client, days, trigger=trigger, on_day=printer, settings=app.config.sync, subject_plan=subject_plan,
                        analytics_progress=printer, analytics=early,
                    )
            finally:
                if early is not None:
                    early.abandon()  # the warehouse could not be made, or the run ended: nothing more is fetched
    click.echo(describe_report(report))
    for breakdown in report.breakdowns:
        click.echo(breakdown.describe())
    for line in report.analytics.describe() if report.analytics else []:
        click.echo(line)
    if report.error:
        raise ArchiveError(report.error)
    return report


def _analytics_before_the_warehouse(app: App, client: OpenRouterClient, trigger: str, progress: AnalyticsProgress) -> AnalyticsRun | None:
    """A first sync's Analytics API series, fetching before its warehouse is created and migrated.

    A year of history is most of a first sync's requests, and a warehouse that does not
    exist yet holds none of it: what to fetch is known without it (everything), so the
    requests need not wait for the file and the migrations (``AnalyticsRun`` with no
    engine). Any other run plans from what its warehouse holds, once it is migrated.
    """
    import threading

    from etl.analytics import AnalyticsRun
    from etl.db import new_sqlite_file
    from etl.window import utc_today

    settings = app.config.sync
    if trigger != "sync" or not settings.analytics_series or not new_sqlite_file(app.config.warehouse_url):
        return None
    return AnalyticsRun(None, client, settings, utc_today(), refetch_days=settings.refetch_days, stop=threading.Event(), progress=progress)


def _plan_sync(engine: Engine, config: Config) -> list[Any]:
    from etl.sync import pending_days
    from etl.window import utc_today

    return pending_days(engine, utc_today(), config.sync.refetch_days)


@cli.command()
@pass_app
def sync(app: App) -> None:
    """Archive every completed day not yet archived, plus the most recent ones again.

    Fetches the days of the 30-day API window that the warehouse does not hold yet and
    the [sync] refetch_days most recent days (late data). Exits 0 only when every day
    asked for was archived.
    """
    from etl.sync import sync_subject_plan
    from etl.window import utc_today

    subject_plan = sync_subject_plan(utc_today(), app.config.sync.refetch_days)
    report = _run_and_report(app, "sync", _plan_sync, subject_plan=subject_plan)
    if not report.ok:
        sys.exit(1)


@cli.command()
@click.option("--days", type=click.IntRange(1, 30), default=None, help="Only the last N completed days (default: all 30).")
@pass_app
def backfill(app: App, days: int | None) -> None:
    """Fetch the whole API window (or its last N days) again and upsert it."""
    from etl.sync import plan_backfill
    from etl.window import utc_today

    report = _run_and_report(app, "backfill", lambda _e, _c: plan_backfill(utc_today(), days))
    if not report.ok:
        sys.exit(1)


@cli.command()
@pass_app
def credits(app: App) -> None:
    """Fetch, store and print the credit balance (purchased, used, remaining)."""
    from etl import warehouse
    from etl.render import usd

    with app.client() as client, app.writer_lock():
        engine = app.engine()
        fetched = client.credits()
        with engine.begin() as conn:
            balance = warehouse.record_credits(conn, fetched)
        engine.dispose()
    total, used = balance.total_credits, balance.total_usage
    click.echo(f"purchased  {usd(total)}\nused       {usd(used)}\nremaining  {usd(total - used)}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--check", is_flag=True, help="Exit 1 when the archive is stale or days are about to be lost (for monitoring).")
@pass_app
def status(app: App, as_json: bool, check: bool) -> None:
    """Show what the archive holds: days, gaps, days already lost, the last run, health.

    Warns when the newest archived day is older than yesterday by more than
    [health] stale_after_days, or when days not yet archived are about to leave the API
    window; with --check, either makes the exit status 1.
    """
    from etl.render import status_lines
    from etl.status import read_status
    from etl.window import utc_today

    from etl.alerts.status import active_alerts, lines

    engine = app.engine(read_only=True)
    report = read_status(engine, utc_today(), app.config.health, check_integrity=check)
    alerts, over_budget = active_alerts(engine)
    if as_json:
        click.echo(json.dumps({**report.as_dict(), "alerts": alerts, "healthy": report.healthy and not over_budget}, indent=2))
    else:
        click.echo("\n".join([*status_lines(report), *lines(alerts, over_budget)]))
    if check and (not report.healthy or over_budget):
        sys.exit(1)


@cli.group()
def db() -> None:
    """Warehouse maintenance."""


@db.command("upgrade")
@pass_app
def db_upgrade(app: App) -> None:
    """Create the warehouse or migrate it to the newest schema."""
    from etl import migrate

    with app.writer_lock():
        before, after = migrate.upgrade(app.engine(migrate=False))
    from etl.db import display_url

    where = display_url(app.config.warehouse_url)  # never the password
    click.echo(f"{where}: already at revision {after}" if before == after else f"{where}: migrated {before or 'empty'} -> {after}")


@db.command("rebuild-summaries")
@pass_app
def db_rebuild_summaries(app: App) -> None:
    """Recompute the monthly summaries from the base rows, in one transaction.

    Triggers keep them exact on every write, so this is a repair for what `status --check`
    would report (a summary changed by hand, a restored file); it prints how many rows were
    wrong. Safe to run at any time: reports read the old or the new summaries, never a mix.
    """
    from etl import summaries
    from etl.db import display_url

    with app.writer_lock():
        engine = app.engine()
        with engine.connect() as conn, conn.execution_options(sqlite_begin="IMMEDIATE").begin():
            changed = summaries.rebuild(conn)
        engine.dispose()
    fixed = sum(changed.values())
    detail = ", ".join(f"{name}: {n}" for name, n in changed.items() if n)
    click.echo(f"{display_url(app.config.warehouse_url)}: summaries rebuilt; "
               + (f"{fixed} row(s) were wrong, missing or extra ({detail})" if fixed else "they were already exact"))


@db.command("copy")
@click.option("--to", "target_url", required=True, metavar="URL", help="The warehouse to copy into, e.g. postgresql+psycopg://writer@db.example/archive.")
@click.option("--merge", is_flag=True, help="Add to a target that already holds rows (idempotent upserts); to finish or repeat a copy.")
@pass_app
def db_copy(app: App, target_url: str, merge: bool) -> None:
    """Copy the whole archive into another warehouse (SQLite -> PostgreSQL, and back).

    Every table, raw responses and run log included. The target is created or migrated
    first; a target that holds rows is refused unless --merge. The copy is verified
    afterwards: row counts per table, and per day the rows and the sums of every metric.
    """
    from etl import migrate
    from etl.copy import copy_archive, require_head, same_warehouse
    from etl.db import display_url, open_engine, register_url_secret
    from etl.lock import writer_lock
    from etl.render import CopyProgress

    register_url_secret(target_url)
    if same_warehouse(app.config.warehouse_url, target_url):
        raise BadArgument(f"refused: --to {display_url(target_url)} is the configured warehouse itself")
    with app.writer_lock():  # no sync writes to the source while it is copied
        source = _readable_engine(app)
        require_head(migrate.current_revision(source), migrate.head_revision())
        with writer_lock(target_url, app.config.sync.lock_timeout_seconds):
            target = open_engine(target_url, app.config.warehouse.busy_timeout_seconds)
            try:
                migrate.upgrade(target)
                with CopyProgress(quiet=app.quiet) as progress:
                    report = copy_archive(source, target, merge=merge, on_start=progress.start, on_rows=progress.advance)
            finally:
                target.dispose()
                source.dispose()
    rows = sum(report.copied.values())
    click.echo(
        f"copied {rows:,} row(s) of {len(report.copied)} table(s) from {display_url(app.config.warehouse_url)} "
        f"to {display_url(target_url)}; verified: row counts of every table, rows and sums of {report.days_verified} table-day(s)"
    )


@cli.command()
@click.option("--db", "db_path", type=click.Path(dir_okay=False), help="Keep the demo warehouse at this path (default: a temporary folder).")
@pass_app
def demo(app: App, db_path: str | None) -> None:
    """Archive a simulated account end to end, with no key and no set-up.

    Starts the bundled OpenRouter stand-in on loopback, backfills a demo warehouse from
    it, and prints the archive's status and a spend summary.
    """
    import secrets
    import tempfile
    from datetime import timedelta
    from pathlib import Path

    from etl.config import BASE_URL_ENV, DB_ENV, apply_env_overrides
    from etl.query import ReportSpec, run_report
    from etl.render import status_lines
    from etl.standin import Dataset, StandIn
    from etl.status import read_status
    from etl.sync import plan_backfill
    from etl.window import utc_today

    tmp = None
    if db_path is None:
        tmp = tempfile.TemporaryDirectory(prefix="openrouter-archive-demo-")
        db_path = str(Path(tmp.name) / "demo.db")
    target = Path(db_path).expanduser().resolve()
    _refuse_unless_demo(target)  # before taking a lock beside someone's archive
    key = "sk-or-v1-demo-" + secrets.token_hex(16)
    try:
        # An account with more than a year of history: the Analytics API serves 365 days of it.
        with StandIn(Dataset(anchor=utc_today(), first_key_age_days=400), management_key=key) as api:
            app.config = apply_env_overrides(app.config, {BASE_URL_ENV: api.base_url, DB_ENV: f"sqlite:///{target}"})
            click.echo(f"Demo: a simulated OpenRouter account at {api.base_url}, warehouse {db_path}\n")
            report = _run_and_report(
                app, "demo", lambda _e, _c: plan_backfill(utc_today()), api_key=key, guard=lambda: _refuse_unless_demo(target)
            )
        engine = app.engine(read_only=True)
        click.echo("")
        click.echo("\n".join(status_lines(read_status(engine, utc_today()))))
        click.echo("")
        click.echo("Spend by model, last 30 days:")
        with engine.connect() as conn:
            _print_table(run_report(conn, ReportSpec(("model",))), human=True, width=_table_width())
            if report.analytics and report.analytics.days_archived:
                click.echo("\nSpend by month, the year the Analytics API still held (recovered by the first sync):")
                year = ReportSpec(("month",), since=(utc_today() - timedelta(days=365)).isoformat(), history=True)
                _print_table(run_report(conn, year), human=True, width=_table_width())
        engine.dispose()
        if tmp is None:
            click.echo(f"\nThe demo warehouse stays at {db_path}; try: OPENROUTER_ARCHIVE_DB=sqlite:///{db_path} openrouter-archive status")
    finally:
        if tmp is not None:
            tmp.cleanup()
    if not report.ok:
        sys.exit(1)


def _refuse_unless_demo(path: Path) -> None:
    """`demo` writes simulated data: only into a new file or a warehouse only demos wrote."""
    from etl.db import open_engine
    from etl.warehouse import demo_refusal

    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return
    why = "is not a file" if not path.is_file() else None
    if why is None:
        engine = open_engine(f"sqlite:///{path}", read_only=True)
        try:
            why = demo_refusal(engine)
        finally:
            engine.dispose()
    if why is not None:
        raise BadArgument(f"refused: {path} {why}; `demo --db` writes simulated data, so only into a new file "
                          "or an earlier demo warehouse: give it another path")


@cli.command()
@click.option("--interval-seconds", type=click.FloatRange(min=0.01), hidden=True, help="Sync on a fixed interval instead of sync_cron (tests, soak runs).")
@pass_app
def run(app: App, interval_seconds: float | None) -> None:
    """Run as a service: sync now, then on [schedule] sync_cron (UTC), until stopped.

    Catches up at start after any downtime. A failed sync is retried after
    [schedule] retry_delay_seconds; SIGTERM or SIGINT finish the day being written and
    exit 0. One log line per run on stderr (--log-format json for log collectors).
    """
    import logging
    import signal
    import threading

    from etl.daemon import Daemon, cron_trigger
    from etl.errors import Interrupted
    from etl.logs import setup_logging

    schedule = app.config.schedule  # a schedule that cannot work is refused before anything else
    cron_trigger(schedule.sync_cron, "sync_cron", app.config.source)

    if not app.quiet and app.verbose == 0:
        setup_logging(0, fmt=app.log_format, level=logging.INFO)
    trigger = None
    if interval_seconds is not None:
        from apscheduler.triggers.interval import IntervalTrigger

        trigger = IntervalTrigger(seconds=interval_seconds)
    stop = threading.Event()
    with app.client(stop=stop) as client:
        # A SIGTERM while the first migration waits for another writer's lock stops the
        # daemon cleanly (exit 0), as one during a run does.
        previous = {sig: signal.signal(sig, lambda _signum, _frame: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            with app.writer_lock(stop=stop):  # the first migration; then the daemon locks each job
                engine = app.engine()
        except Interrupted:
            logging.getLogger("etl.daemon").info("daemon stopped before its first run: a stop came while waiting for the writer lock", extra={"event": "stopped"})
            return
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        daemon = Daemon.build(app.config, engine, client, stop, sync_trigger=trigger)
        daemon.run_forever()
    daemon.engine.dispose()  # the daemon may have reopened it


def _readable_engine(app: App) -> Engine:
    """The warehouse for reading; never creates or migrates it."""
    from etl import migrate
    from etl.db import display_url, sqlite_path
    from etl.errors import WarehouseError

    engine = app.engine(read_only=True)
    path = sqlite_path(engine)
    missing = WarehouseError(f"no archive at {display_url(app.config.warehouse_url)} yet: run `openrouter-archive sync` first")
    if path is not None and not path.is_file():
        raise missing
    revision = migrate.current_revision(engine)
    if revision is None:
        raise missing
    migrate.ensure_known(revision)
    return engine


FORMATS = ("table", "csv", "json", "ndjson", "pdf", "png")


def output_options(formats: tuple[str, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--format and --output, shared by `report` and `sql` (written through etl/export.py)."""
    def decorator(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True),
                         help="Write to FILE instead of stdout (atomically).")(f)
        return click.option("--format", "-f", "fmt", type=click.Choice(formats), default="table", show_default=True,
                            help="Output format.")(f)
    return decorator


@cli.command()
@click.option("--group-by", "-g", default="model", show_default=True, metavar="G[,G]",
              help="One or two of: date, week, month, year, model, permaslug, variant, provider, endpoint, key, workspace, member, app.")
@click.option("--since", metavar="YYYY-MM-DD", help="First day, inclusive (UTC).")
@click.option("--until", metavar="YYYY-MM-DD", help="Last day, inclusive (UTC).")
@click.option("--last", metavar="N[dwmy]", help="The last N complete days, weeks, months or years, e.g. 7d, 4w, 3m, 1y.")
@click.option("--model", "models", multiple=True, metavar="PATTERN", help="Only these models (exact, or a glob such as 'openai/*'). Repeatable.")
@click.option("--provider", "providers", multiple=True, metavar="PATTERN", help="Only these providers (exact or glob). Repeatable.")
@click.option("--key", "keys", multiple=True, metavar="NAME", help="Only these API keys, by name (exact or glob). Repeatable; needs the key breakdown.")
@click.option("--top", type=click.IntRange(min=1), metavar="N", help="Keep the N biggest values of the last group; fold the rest into 'other'.")
@click.option("--sort", metavar="METRIC|group", help=f"Order by a metric (default: spend) or by the group values: group, {', '.join(metric_choices())}.")
@click.option("--asc", "ascending", is_flag=True, help="Smallest first.")
@output_options(FORMATS)
@click.option("--chart", is_flag=True, help="Also print a bar chart of the metric per first group.")
@click.option("--metric", default="spend", show_default=True, metavar="METRIC",
              help=f"Metric for --chart, PDF and PNG, and a column of its own when not a default one (spend incl BYOK, "
                   f"cost components); a latency metric makes a latency report: {', '.join(metric_choices())}.")
@click.option("--columns", metavar="M[,M]", help="Table columns to show, e.g. spend,requests,total_tok (default: all that fit the terminal); names as for --metric. "
              "Metrics beyond the default ones named here (spend_incl_byok, cost components) are CSV and JSON columns too.")
@pass_app
def report(app: App, group_by: str, since: str | None, until: str | None, last: str | None, models: tuple[str, ...],
           providers: tuple[str, ...], keys: tuple[str, ...], top: int | None, sort: str | None, ascending: bool, fmt: str,
           output: str | None, chart: bool, metric: str, columns: str | None) -> None:
    """Grouped spend and usage from the archive, as a table, CSV, JSON, PDF or PNG.

    Spend (OpenRouter credits) and BYOK spend are separate columns, never added together.
    Every format agrees to the cent with a SQL sum over the same rows.
    """
    from etl.export import parse_columns
    from etl.warehouse import breakdown_archived
    from etl.query import ReportSpec, last_range, parse_group_by, run_report
    from etl.window import utc_today

    picked = parse_columns(columns)

    if last:
        if since or until:
            raise BadArgument("--last cannot be combined with --since or --until")
        since, until = last_range(last, utc_today())
    if sort is not None and sort.strip().lower() != "group":
        sort = resolve_metric(sort, "sort")
    metric = resolve_metric(metric)
    spec = ReportSpec(parse_group_by(group_by), since, until, models, providers, top, sort, ascending, keys, history=True,
                      metrics=(metric, *(picked or ())))
    if spec.latency and fmt in ("pdf", "png"):
        raise BadArgument(f"{fmt.upper()} charts stack amounts, and latency is averaged, never added up: "
                          "use --format table|csv|json|ndjson, or --chart")
    if fmt in ("pdf", "png") and output is None and sys.stdout.isatty():
        raise BadArgument(f"{fmt.upper()} output is binary: give --output FILE (or redirect stdout)")

    engine = _readable_engine(app)
    with engine.connect() as conn:
        result = run_report(conn, spec)  # BadArgument e.g. for a --key name that matches no key
        if spec.breakdown and not result.rows and not breakdown_archived(conn, spec.breakdown):
            click.echo(f"note: no {spec.breakdown} breakdown archived yet; add \"{spec.breakdown}\" to [sync] breakdowns", err=True)
        if result.note and (fmt != "table" or not result.rows):  # a table has it as its footnote
            click.echo(f"note: {result.note}", err=True)
        if not result.rows:
            _nothing_to_show(conn, spec, fmt)
            if fmt in ("pdf", "png"):
                return
        if fmt in ("pdf", "png"):
            _write_binary(conn, result, fmt, output, metric)
            return
    _write_text(result, fmt, output, chart, metric, picked)


def _nothing_to_show(conn: Any, spec: Any, fmt: str) -> None:
    """A note for an empty report: an empty archive, or nothing in the range and filters."""
    from dataclasses import replace

    from etl.query import archive_range

    everything = replace(spec, since=None, until=None, models=(), providers=(), keys=())
    account = replace(everything, group_by=("date",), metrics=(), sort=None)  # /activity and its history, not a breakdown
    if archive_range(conn, everything) == (None, None) and archive_range(conn, account) == (None, None):
        why = "the archive holds no activity yet (run `openrouter-archive sync`)"
    elif archive_range(conn, everything) == (None, None):
        why = f"the archive holds no {spec.breakdown + ' breakdown' if spec.breakdown else 'history for ' + ', '.join(spec.group_by)}"
    else:
        period = f" from {spec.since or 'the start'} to {spec.until or 'the end'}" if spec.since or spec.until else ""
        why = f"no activity archived{period} for these filters"
    skipped = f"; no {fmt.upper()} written" if fmt in ("pdf", "png") else ""
    click.echo(f"note: nothing to show: {why}{skipped}", err=True)


def _write_binary(conn: Any, result: Any, fmt: str, output: str | None, metric: str) -> None:
    import io

    from etl import charts

    buffer = io.BytesIO()
    if fmt == "pdf":
        pages = charts.write_pdf(conn, result, buffer, metric)
    else:
        charts.write_png(conn, result, buffer, metric)
        pages = 1
    _deliver(buffer.getvalue(), output)
    if output:
        click.echo(f"wrote {output} ({pages} page(s))" if fmt == "pdf" else f"wrote {output}", err=True)


def _write_text(result: Any, fmt: str, output: str | None, chart: bool, metric: str,
                columns: tuple[str, ...] | None = None) -> None:
    from etl import export

    if fmt == "table":
        import io

        buffer = io.StringIO() if output else None
        tty = sys.stdout.isatty() and not output
        _print_table(result, human=tty, width=None if tty else _table_width(output is None), file=buffer, columns=columns)
        footnote = f"note: {result.note}\n" if result.note and result.rows else ""  # where the rows came from, what was left out
        if buffer is None:
            click.echo(footnote, nl=False)
        text = buffer.getvalue() + footnote if buffer else ""
    else:
        text = {"csv": export.to_csv, "json": export.to_json, "ndjson": export.to_ndjson}[fmt](result)
    if chart:
        text += ("\n" if text else "") + export.bar_chart(result, metric)
    if text:
        _deliver(text.encode(), output) if output else click.echo(text, nl=False)


def _table_width(honour_columns: bool = True) -> int | None:
    """The terminal's width on a terminal (None: rich asks it); else $COLUMNS when set, or
    250 so that a pipe or a file gets the whole table."""
    import os

    if sys.stdout.isatty():
        return None
    columns = os.environ.get("COLUMNS", "") if honour_columns else ""
    return int(columns) if columns.isdigit() and int(columns) > 0 else 250


def _print_table(result: Any, human: bool, width: int | None, file: Any = None, columns: tuple[str, ...] | None = None) -> None:
    """The report table; a note on stderr names the columns left out to fit the terminal."""
    from etl.export import print_table

    dropped = print_table(result, human=human, width=width, file=file, columns=columns)
    sys.stdout.flush()  # the table before the note, also when both go to one terminal
    if dropped:
        click.echo(f"note: left out to fit the terminal: {', '.join(dropped)} (pick columns with --columns)", err=True)


def _file_mode(target: Path) -> int:
    """The mode ``open(target, "w")`` would leave: the existing file's, else 0o666 & ~umask."""
    import os
    import stat

    try:
        return stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _deliver(data: bytes, output: str | None) -> None:
    """Write atomically: a half-written export is never left behind."""
    import os
    import tempfile
    from pathlib import Path

    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return
    target = Path(output)
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", prefix=f".{target.name}.")
        # mkstemp makes the file 0600; an export gets the mode any new file would (the
        # umask), or keeps the mode of the file it replaces.
        os.fchmod(fd, _file_mode(target))
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, target)
    except OSError as exc:
        raise BadArgument(f"cannot write {output}: {exc.strerror}") from None


@cli.command()
@click.argument("query")
@output_options(("table", "csv", "json", "ndjson"))
@pass_app
def sql(app: App, query: str, fmt: str, output: str | None) -> None:
    """Run one SQL statement against the archive, read-only.

    Anything that would change the archive, attach a database or set a pragma is refused.
    Views for common questions: daily_spend, monthly_spend, monthly_spend_by_model,
    spend_by_provider; raw_response_bodies gives each raw answer's body (gzip).
    """
    from etl import export
    from etl.db import run_read_only

    if not query.strip():
        raise BadArgument("sql: the statement is empty; give one, e.g. openrouter-archive sql \"SELECT * FROM monthly_spend\"")
    columns, rows = run_read_only(app.config.warehouse_url, query)
    if not columns:
        click.echo("note: the statement ran and returned no columns: nothing to show", err=True)
        return
    if fmt == "table":
        import io

        buffer = io.StringIO()
        export.print_rows(columns, rows, width=None if sys.stdout.isatty() and not output else _table_width(output is None),
                          file=buffer if output else None)
        if output:
            _deliver(buffer.getvalue().encode(), output)
        return
    text = export.TEXT_FORMATS[fmt](columns, rows)
    _deliver(text.encode(), output) if output else click.echo(text, nl=False)


from etl.alerts.commands import alerts_group  # noqa: E402  (light: click only)

cli.add_command(alerts_group)


def main() -> None:
    cli(prog_name="openrouter-archive")
