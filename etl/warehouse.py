"""Load: write validated days, raw responses, run records and credit snapshots.

Each day is written in one transaction together with its ``archived_days`` mark, so that
the day's current rows become exactly OpenRouter's latest answer for it: a row that did
not change is not touched; a revised row is updated in place after its previous values
are copied to the history table; a row the answer no longer lists (its endpoint id
changed, or the day shrank) is moved to the history table. Nothing is lost, and nothing
is counted twice. Callers own transactions (``with engine.begin() as conn``) so that a
day is committed whole or not at all.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, Table, bindparam, literal, select, update
from sqlalchemy.engine import Dialect

from etl import rawstore
from etl.db import Positional, insert_missing, positional, unnest_values, upsert
from etl.errors import WarehouseError
from etl.fetched import Fetched
from etl.logs import redact
from etl.schema import (
    ACTIVITY_ATTRIBUTES,
    ACTIVITY_METRICS,
    BREAKDOWN_SUBJECTS,
    BREAKDOWN_TABLES,
    HISTORY_TABLES,
    activity,
    api_keys,
    archived_breakdown_days,
    archived_days,
    credits_snapshots,
    raw_bodies,
    raw_body_chunks,
    raw_chunks,
    raw_responses,
    sync_runs,
)

if TYPE_CHECKING:
    from etl.validate import CreditBalance

_COMPARED = (*ACTIVITY_ATTRIBUTES, *ACTIVITY_METRICS)


@dataclass(frozen=True)
class RowDiff:
    """How an incoming day relates to what the warehouse already holds."""

    inserted: list[Mapping[str, Any]] = field(default_factory=list)
    updated: list[Mapping[str, Any]] = field(default_factory=list)
    unchanged: int = 0
    vanished: list[tuple[Any, ...]] = field(default_factory=list)  # keys of archived rows the API no longer lists


def diff_rows(
    existing: Mapping[tuple[Any, ...], Sequence[Any]],
    incoming: Sequence[Mapping[str, Any]],
    key: Sequence[str] = ("endpoint_id",),
    compared: Sequence[str] = _COMPARED,
) -> RowDiff:
    """Classify incoming rows against existing ones of the same day and scope.

    ``existing`` maps the values of ``key`` to the values of ``compared`` in that order.
    """
    return _classify([(*k, *v) for k, v in existing.items()], incoming, key, compared)


def _classify(
    current: Iterable[tuple[Any, ...]], incoming: Sequence[Mapping[str, Any]], key: Sequence[str], compared: Sequence[str],
) -> RowDiff:
    """``diff_rows`` for current rows as the database gives them: tuples of ``key`` then ``compared``.

    A row is unchanged when its whole tuple is among the current ones (a key identifies one
    row in the scope), so the usual re-sync, nothing changed, costs a tuple and a hash per
    row and one set comparison; only rows that differ are told apart (new, or revised) by
    their key. Rows are classified as given, not copied.
    """
    n = len(key)
    held = set(current)
    if not held:  # a new day (or scope): every row is new, nothing to compare
        return RowDiff(inserted=list(incoming))
    names = (*key, *compared)
    row_values = itemgetter(*names) if len(names) > 1 else lambda row: (row[names[0]],)  # always a tuple
    listed = set(map(row_values, incoming))
    if listed == held and len(listed) == len(incoming):
        return RowDiff(unchanged=len(incoming))  # every current row listed once again, as it was
    values = list(map(row_values, incoming))
    differ = [i for i, v in enumerate(values) if v not in held]
    unchanged = len(values) - len(differ)
    keys = {r[:n] for r in held}
    inserted: list[Mapping[str, Any]] = []
    updated: list[Mapping[str, Any]] = []
    for i in differ:
        (updated if values[i][:n] in keys else inserted).append(incoming[i])
    vanished = sorted(keys - {v[:n] for v in values})
    return RowDiff(inserted, updated, unchanged, vanished)


@dataclass(frozen=True)
class DayWrite:
    day: str
    rows: int
    inserted: int
    updated: int
    unchanged: int
    retired: int  # rows the answer no longer lists, moved to the history table


def save_rows(
    conn: Connection,
    table: Table,
    day: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    scope: Mapping[str, str | tuple[str, ...]] | None = None,
    key: Sequence[str] = ("endpoint_id",),
    run_id: int | None = None,
    raw_response_id: int | None = None,
    compared: Sequence[str] = _COMPARED,
) -> DayWrite:
    """Make ``table``'s rows of ``day`` (within ``scope``) exactly ``rows``, keeping history.

    A scope value may be a tuple: the rows of all those values at once (the rows themselves
    then carry the column). ``key`` identifies a row within the scope; ``compared`` are the value columns (those of
    ``activity`` by default); ``run_id`` and ``raw_response_id`` name the fetch that
    superseded the versions moved to the history table.

    The day's current rows are read and the new ones written through statements compiled
    once and sent with positional tuples to the driver, in ``conn``'s transaction (see
    ``etl.db.positional``): per-row parameter processing by SQLAlchemy cost a third of a
    load. Values are bound exactly as SQLAlchemy would bind them (the columns' own bind
    processors, each timestamp formatted once), so what is stored does not change.
    """
    scope = scope or {}
    # A tuple's values bound one by one, not as one expanding IN parameter: the statements
    # of _supersede run as executemany, which refuses expanding parameters.
    where = [
        table.c.date == day,
        *(table.c[c].in_([literal(x, table.c[c].type) for x in v]) if isinstance(v, tuple) else table.c[c] == v for c, v in scope.items()),
    ]
    fixed = {c: v for c, v in scope.items() if not isinstance(v, tuple)}
    shape = tuple((c, len(v) if isinstance(v, tuple) else None) for c, v in scope.items())
    current = _current_rows(conn.dialect, table, tuple(key), tuple(compared), shape)
    result = conn.exec_driver_sql(current.sql, current.bind(_scope_values(day, scope)))
    try:
        fetched = result.cursor.fetchall()  # the driver's tuples as they are: no Row objects to build
    finally:
        result.close()
    diff = _classify(fetched, rows, key, compared)
    revised = [tuple(r[k] for k in key) for r in diff.updated]
    if revised or diff.vanished:
        _supersede(conn, table, where, key, revised, diff.vanished, now, run_id, raw_response_id)
    changed = diff.inserted + diff.updated
    if changed:
        _write(conn, table, changed, {**fixed, "date": day, "first_archived_at": now, "updated_at": now}, compared)
    return DayWrite(day, len(rows), len(diff.inserted), len(diff.updated), diff.unchanged, len(diff.vanished))


@lru_cache(maxsize=256)
def _current_rows(
    dialect: Dialect, table: Table, key: tuple[str, ...], compared: tuple[str, ...], scope: tuple[tuple[str, int | None], ...],
) -> Positional:
    """``SELECT key, compared FROM table WHERE date = ? AND <scope>``; a tuple scope value of n items, ``IN`` n binds."""
    where = [table.c.date == bindparam("date")]
    for column, size in scope:
        if size is None:
            where.append(table.c[column] == bindparam(f"scope_{column}"))
        else:
            where.append(table.c[column].in_([bindparam(f"scope_{column}_{i}") for i in range(size)]))
    query = select(*(table.c[k] for k in key), *(table.c[c] for c in compared)).where(*where)
    return positional(dialect, query)


def _scope_values(day: str, scope: Mapping[str, str | tuple[str, ...]]) -> dict[str, Any]:
    """The bind values of ``_current_rows``' statement, by name."""
    values: dict[str, Any] = {"date": day}
    for column, value in scope.items():
        if isinstance(value, tuple):
            values.update((f"scope_{column}_{i}", v) for i, v in enumerate(value))
        else:
            values[f"scope_{column}"] = value
    return values


def _write(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], constants: Mapping[str, Any], compared: Sequence[str]) -> None:
    """Upsert ``rows`` (their values, then ``constants`` for every row) in one executemany.

    The columns are those the first row names, plus the constants, as when the rows were
    passed to SQLAlchemy as dictionaries (other names are ignored, as they were then).
    """
    names = set(rows[0]) | set(constants)
    columns = tuple(c.name for c in table.columns if c.name in names)
    pk = tuple(c.name for c in table.primary_key.columns)
    stmt = _upsert_statement(conn.dialect, table, pk, (*compared, "updated_at"), columns)
    params = stmt.bind_many(rows, constants)
    if conn.dialect.name != "postgresql" or len(params) < 2:
        conn.exec_driver_sql(stmt.sql, params)
        return
    # One statement for the whole day, one array per column, not one statement per row:
    # PostgreSQL's statement triggers (the monthly summaries) then run once (etl.db.unnest_values).
    conn.exec_driver_sql(_unnest_sql(conn.dialect, table, stmt.sql, columns), tuple(list(column) for column in zip(*params)))


@lru_cache(maxsize=64)
def _unnest_sql(dialect: Dialect, table: Table, sql: str, columns: tuple[str, ...]) -> str:
    return unnest_values(sql, [table.c[c].type.compile(dialect=dialect) for c in columns])


def upsert_statement(dialect: Dialect, table: Table, pk: tuple[str, ...], update: tuple[str, ...], columns: tuple[str, ...]) -> Positional:
    """The upsert of ``columns`` into ``table`` on ``pk`` (updating ``update``), compiled once per dialect and shape."""
    return _upsert_statement(dialect, table, pk, update, columns)


@lru_cache(maxsize=256)
def _upsert_statement(
    dialect: Dialect, table: Table, pk: tuple[str, ...], update: tuple[str, ...], columns: tuple[str, ...],
) -> Positional:
    return positional(dialect, upsert(dialect.name, table, pk, update), columns)


def _supersede(
    conn: Connection, table: Table, where: list[Any], key: Sequence[str], revised: list[tuple[str, ...]],
    retired: list[tuple[str, ...]], now: datetime, run_id: int | None, raw_response_id: int | None,
) -> None:
    """Copy the current versions of ``revised`` and ``retired`` rows to history; drop the retired ones."""
    reasons = {**dict.fromkeys(revised, "revised"), **dict.fromkeys(retired, "retired")}
    # Read whole rows only here, when something changed: an unchanged refetch stays cheap.
    old = [r for r in conn.execute(select(table).where(*where)).mappings() if tuple(r[k] for k in key) in reasons]
    stamp = {"superseded_at": now, "superseded_by_run": run_id, "superseded_by_raw_response_id": raw_response_id}
    conn.execute(
        HISTORY_TABLES[table.name].insert(),
        [{**r, **stamp, "reason": reasons[tuple(r[k] for k in key)]} for r in old],
    )
    if retired:
        match = [table.c[k] == bindparam(f"key_{k}") for k in key]
        conn.execute(table.delete().where(*where, *match), [{f"key_{k}": v for k, v in zip(key, ident)} for ident in retired])


def save_day(
    conn: Connection,
    day: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    run_id: int | None = None,
    raw_response_id: int | None = None,
) -> DayWrite:
    """Make one day's account-level rows OpenRouter's answer and mark the day archived, in the caller's transaction."""
    written = save_rows(conn, activity, day, rows, now=now, run_id=run_id, raw_response_id=raw_response_id)
    _mark(conn, archived_days, {"date": day}, len(rows), now, run_id, raw_response_id)
    return written


def save_breakdown_day(
    conn: Connection,
    breakdown: str,
    subject: str,
    day: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    now: datetime,
    run_id: int | None = None,
    raw_response_id: int | None = None,
) -> DayWrite:
    """Save one day of a breakdown (one key, one member, or all workspaces) and mark it."""
    table = BREAKDOWN_TABLES[breakdown]
    column = BREAKDOWN_SUBJECTS[breakdown]
    # One answer per key or member: that subject's rows of the day are the scope. One
    # answer holds every workspace of the day: the whole day is the scope.
    whole_day = breakdown == "workspace"
    scope: dict[str, str] = {} if whole_day else {column: subject}
    key: tuple[str, ...] = (column, "endpoint_id") if whole_day else ("endpoint_id",)
    written = save_rows(conn, table, day, rows, now=now, scope=scope, key=key, run_id=run_id, raw_response_id=raw_response_id)
    _mark(conn, archived_breakdown_days, {"breakdown": breakdown, "subject": subject, "date": day}, len(rows), now, run_id, raw_response_id)
    return written


def _mark(
    conn: Connection, table: Table, key: Mapping[str, str], row_count: int, now: datetime,
    run_id: int | None, raw_response_id: int | None,
) -> None:
    """Record a fetched day (keeping when it was first archived), even one without rows."""
    values = {**key, "row_count": row_count, "first_archived_at": now, "last_fetched_at": now, "run_id": run_id, "raw_response_id": raw_response_id}
    stmt = _upsert_statement(conn.dialect, table, tuple(key), ("row_count", "last_fetched_at", "run_id", "raw_response_id"), tuple(values))
    conn.exec_driver_sql(stmt.sql, stmt.bind(values))


def save_keys(conn: Connection, keys: Iterable[Mapping[str, Any]], now: datetime) -> int:
    """Upsert the account's API keys as GET /keys lists them; keys no longer listed stay."""
    rows = [
        {
            "hash": k["hash"], "name": k.get("name") or k["hash"][:12], "label": k.get("label") or "",
            "disabled": bool(k.get("disabled")), "created_at": k.get("created_at"), "workspace_id": k.get("workspace_id"),
            "creator_user_id": k.get("creator_user_id"), "first_seen_at": now, "last_seen_at": now,
        }
        for k in keys
    ]
    if rows:
        stmt = upsert(conn.engine, api_keys, ("hash",), ("name", "label", "disabled", "created_at", "workspace_id", "creator_user_id", "last_seen_at"))
        conn.execute(stmt, rows)
    return len(rows)


def archived_breakdown_dates(conn: Connection, breakdown: str, subject: str, first: str, last: str) -> set[str]:
    query = select(archived_breakdown_days.c.date).where(
        archived_breakdown_days.c.breakdown == breakdown,
        archived_breakdown_days.c.subject == subject,
        archived_breakdown_days.c.date >= first,
        archived_breakdown_days.c.date <= last,
    )
    return set(conn.execute(query).scalars())


def store_raw(conn: Connection, fetched: Fetched, run_id: int | None, packed: rawstore.Packed | None = None) -> int:
    """Keep the exact bytes OpenRouter sent, so any day can be re-derived; the fetch's id.

    Content-addressed (etl/rawstore.py): a body already stored (the same SHA-256) is only
    referenced again; a new one is stored as its pieces, each piece compressed and stored
    once whichever body it belongs to. ``packed``: the body already cut, hashed and
    compressed by the caller (``rawstore.pack``), used only if made from ``fetched.body``.
    """
    body = fetched.body
    packed = rawstore.made_from(packed, body)
    sha = packed.sha256 if packed is not None else rawstore.digest(body)
    body_id = store_body(conn, body, sha, packed)
    result = conn.execute(
        raw_responses.insert().values(
            run_id=run_id,
            fetched_at=fetched.fetched_at,
            endpoint=fetched.path,
            params=json.dumps(fetched.params, sort_keys=True),
            status=fetched.status,
            content_type=fetched.content_type[:200],
            sha256=sha,
            raw_body_id=body_id,
        )
    )
    return _inserted_id(result)


def store_body(conn: Connection, body: bytes, sha: str | None = None, packed: rawstore.Packed | None = None) -> int:
    """The ``raw_bodies`` id of ``body``, storing it (and the pieces not yet stored) if new.

    ``packed``: ``rawstore.pack(body)``, done by the caller already (used only if made from
    this very ``body``); else the body is cut, hashed and compressed here."""
    packed = rawstore.made_from(packed, body)
    sha = sha or (packed.sha256 if packed is not None else rawstore.digest(body))
    found = conn.execute(select(raw_bodies.c.id).where(raw_bodies.c.sha256 == sha)).scalar()
    if found is not None:
        return int(found)
    if packed is not None:
        keys, sizes, compress = packed.keys, packed.sizes, packed.data.__getitem__
    else:  # compressed here, and only the pieces not stored yet (a daily /activity answer: one day's)
        pieces = rawstore.split(body)
        keys, sizes = tuple(rawstore.digest(p) for p in pieces), tuple(len(p) for p in pieces)
        by_key = dict(zip(keys, pieces))

        def compress(key: str) -> bytes:
            return rawstore.compress(by_key[key])

    ids = _chunk_ids(conn, set(keys))
    new = {k: n for k, n in zip(keys, sizes) if k not in ids}
    if new:
        rows = [{"sha256": k, "encoding": rawstore.ENCODING, "data": compress(k), "data_bytes": n} for k, n in new.items()]
        conn.execute(insert_missing(conn.engine, raw_chunks, ("sha256",)), rows)
        ids.update(_chunk_ids(conn, set(new)))
    conn.execute(
        insert_missing(conn.engine, raw_bodies, ("sha256",)),
        {"sha256": sha, "body_bytes": len(body), "chunk_count": len(keys)},
    )
    body_id = int(conn.execute(select(raw_bodies.c.id).where(raw_bodies.c.sha256 == sha)).scalar_one())
    if conn.execute(select(raw_body_chunks.c.seq).where(raw_body_chunks.c.body_id == body_id).limit(1)).first() is None:
        conn.execute(raw_body_chunks.insert(), [{"body_id": body_id, "seq": i, "chunk_id": ids[k]} for i, k in enumerate(keys)])
    return body_id


def _chunk_ids(conn: Connection, keys: set[str]) -> dict[str, int]:
    if not keys:
        return {}
    query = select(raw_chunks.c.sha256, raw_chunks.c.id).where(raw_chunks.c.sha256.in_(sorted(keys)))
    return {sha: int(i) for sha, i in conn.execute(query)}


def read_raw(conn: Connection, raw_id: int) -> bytes:
    """The exact body of fetch ``raw_id``, checked against its SHA-256."""
    query = (
        select(raw_bodies.c.sha256, raw_chunks.c.encoding, raw_chunks.c.data)
        .select_from(raw_responses.join(raw_bodies).join(raw_body_chunks).join(raw_chunks))
        .where(raw_responses.c.id == raw_id)
        .order_by(raw_body_chunks.c.seq)
    )
    rows = conn.execute(query).all()
    if not rows:
        raise WarehouseError(f"raw response #{raw_id} is not in the warehouse")
    try:
        body = rawstore.join((r.encoding, r.data) for r in rows)
    except (OSError, EOFError, ValueError, zlib.error):
        body = None
    if body is None or rawstore.digest(body) != rows[0].sha256:
        raise WarehouseError(f"raw response #{raw_id}: the stored body does not match its SHA-256 (the warehouse is damaged)")
    return body


def save_credits(conn: Connection, total_credits: float, total_usage: float, fetched_at: datetime, raw_response_id: int | None) -> None:
    conn.execute(
        credits_snapshots.insert().values(
            fetched_at=fetched_at, total_credits=total_credits, total_usage=total_usage, raw_response_id=raw_response_id
        )
    )


def _inserted_id(result: Any) -> int:
    key = result.inserted_primary_key
    if key is None:  # every table here has an autoincrement id
        raise RuntimeError("bug: an insert returned no primary key")
    return int(key[0])


def record_credits(conn: Connection, fetched: Fetched) -> CreditBalance:
    """Check a ``/credits`` answer and store it (raw answer and snapshot), in ``conn``'s
    transaction: the one path of ``credits`` and the daemon's credits job."""
    from etl.validate import parse_credits  # pydantic: only for a command that fetches

    balance = parse_credits(fetched.document, fetched.body)
    raw_id = store_raw(conn, fetched, None)
    save_credits(conn, balance.total_credits, balance.total_usage, fetched.fetched_at, raw_id)
    return balance


def breakdown_archived(conn: Connection, breakdown: str) -> bool:
    """Whether any day of ``breakdown`` (key, workspace, member) was archived."""
    query = select(archived_breakdown_days.c.date).where(archived_breakdown_days.c.breakdown == breakdown).limit(1)
    return conn.execute(query).first() is not None


def archived_dates(conn: Connection, first: str | None = None, last: str | None = None) -> set[str]:
    query = select(archived_days.c.date)
    if first:
        query = query.where(archived_days.c.date >= first)
    if last:
        query = query.where(archived_days.c.date <= last)
    return set(conn.execute(query).scalars())



def demo_refusal(engine: Engine) -> str | None:
    """Why ``demo --db`` must not write into this warehouse, or None (only demos wrote it).

    `demo` writes simulated data: a real archive, tables of another program, credit
    snapshots or rows no demo run wrote are reasons to refuse, and so is a file that is
    not a warehouse at all.
    """
    from sqlalchemy import func, inspect, table
    from sqlalchemy.exc import SQLAlchemyError

    from etl.schema import metadata

    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names()) - {"alembic_version"}
            foreign = sorted(tables - set(metadata.tables))
            if foreign:
                return f"holds tables openrouter-archive does not make ({', '.join(foreign[:3])})"
            demo_runs = other_runs = 0
            if "sync_runs" in tables:
                is_demo = sync_runs.c.trigger == "demo"
                demo_runs = conn.execute(select(func.count()).where(is_demo)).scalar_one()
                other_runs = conn.execute(select(func.count()).where(~is_demo)).scalar_one()
            if other_runs:
                return f"is a real archive ({other_runs} run(s) of sync, backfill or the daemon)"
            holding = sorted(t for t in tables - {"sync_runs"} if conn.execute(select(1).select_from(table(t)).limit(1)).first())
            if "credits_snapshots" in holding or (holding and not demo_runs):
                return f"holds data no demo run wrote ({', '.join(holding[:3])})"
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).split("\n")[0]
        return f"is not a warehouse ({reason})"
    return None

# -- the run log ----------------------------------------------------------------------------


# The error recorded on a run found still `running` when the next one starts.
ABANDONED = "abandoned: the process ended before it could record how the run ended (killed, hung up, or the database failed)"


def start_run(engine: Engine, trigger: str, now: datetime) -> int:
    """Record a new run; first close any run still marked running as abandoned.

    Callers hold the single-writer lock, which proves that no other run is live: a run
    still `running` is one whose process died (SIGKILL, SIGHUP, power loss) or could not
    write its end (a database error). It becomes `interrupted`, its end time unknown.
    """
    with engine.begin() as conn:
        conn.execute(update(sync_runs).where(sync_runs.c.outcome == "running").values(outcome="interrupted", error=ABANDONED))
        result = conn.execute(
            sync_runs.insert().values(
                started_at=now,
                trigger=trigger,
                outcome="running",
                days_requested=0,
                days_fetched=0,
                requests=0,
                rows_inserted=0,
                rows_updated=0,
                rows_unchanged=0,
            )
        )
        return _inserted_id(result)


def finish_run(engine: Engine, run_id: int, *, now: datetime, outcome: str, error: str | None = None, **counts: Any) -> None:
    # The run log outlives the process that knew the key: mask secrets before storing.
    if error is not None:
        error = redact(error)
    if isinstance(counts.get("details"), str):
        counts["details"] = redact(counts["details"])
    with engine.begin() as conn:
        conn.execute(
            update(sync_runs).where(sync_runs.c.id == run_id).values(finished_at=now, outcome=outcome, error=error, **counts)
        )
