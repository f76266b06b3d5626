"""Copy a whole archive from one warehouse into another (SQLite → PostgreSQL, and back).

Generic over ``etl.schema.metadata``: every table it defines is copied, parents before
children (foreign-key order), so a table added by a later migration is copied without a
change here. The source is read in one transaction (one consistent snapshot); the target
is written one transaction per batch of rows, so an interrupted copy leaves whole batches,
and ``merge`` (idempotent upserts on each table's primary key) finishes it.

A target that already holds rows is refused unless ``merge``. Even then, a row whose
surrogate id (runs, raw responses, history versions, credit snapshots) names a different
thing in the target than in the source means the target is another archive; merging would
tie one archive's days to the other's runs, so that is refused before anything is written.
Afterwards the copy is verified: row counts per table, and per day the row count and the
sums of every metric, must equal the source's (for ``merge``, on the source's days), and the
target's monthly summaries (kept by its triggers, not copied) must match its rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import BigInteger, Connection, Engine, Float, Integer, Table, cast, func, select, text

from etl.db import upsert
from etl.errors import CopyRefused, CopyVerificationFailed, WarehouseError
from etl.schema import ACTIVITY_METRICS, DERIVED_TABLES, metadata

BATCH_ROWS = 2_000
MONEY_TOLERANCE = 1e-6  # USD: the same floats summed in another order
# What a surrogate id names, for the check that the target is the same archive. Other
# tables with a surrogate id never change once written: every column must agree.
_IDENTITY = {
    "sync_runs": ("started_at", "trigger"), "raw_responses": ("fetched_at", "sha256"),
    # Content-addressed: the same id must name the same content.
    "raw_bodies": ("sha256",), "raw_chunks": ("sha256",),
}


@dataclass
class CopyReport:
    copied: dict[str, int] = field(default_factory=dict)  # rows written per table
    days_verified: int = 0


def tables() -> list[Table]:
    """Every table of the archive, parents first; not the monthly summaries and counts, which
    the target's own triggers derive from the rows copied (and ``verify`` checks)."""
    return [t for t in metadata.sorted_tables if t.name not in DERIVED_TABLES]


def _surrogate(table: Table) -> bool:
    pk = list(table.primary_key.columns)
    return len(pk) == 1 and isinstance(pk[0].type, Integer) and pk[0].autoincrement in (True, "auto")


def count_rows(conn: Connection) -> dict[str, int]:
    return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t in tables()}


def _identity(table: Table) -> list[str]:
    return list(_IDENTITY.get(table.name) or [c.name for c in table.columns])


def refuse_another_archive(source: Connection, target: Connection, batch_rows: int = BATCH_ROWS) -> None:
    """Before anything is merged: every surrogate id the target shares with the source must name the same thing."""
    for table in tables():
        if not _surrogate(table):
            continue
        (pk,) = table.primary_key.columns
        columns = [table.c[c] for c in dict.fromkeys([pk.name, *_identity(table)])]
        query = select(*columns).order_by(pk).execution_options(yield_per=batch_rows)
        for part in source.execute(query).mappings().partitions(batch_rows):
            _check_same_archive(target, table, part, columns)


def _check_same_archive(target: Connection, table: Table, batch: Sequence[Any], columns: Sequence[Any]) -> None:
    (pk,) = table.primary_key.columns
    theirs = {r[pk.name]: r for r in target.execute(select(*columns).where(pk.in_([r[pk.name] for r in batch]))).mappings()}
    compared = _identity(table)
    for row in batch:
        other = theirs.get(row[pk.name])
        if other is not None and any(other[c] != row[c] for c in compared):
            raise CopyRefused(
                f"refused: the target is another archive: {table.name} #{row[pk.name]} differs there "
                f"({', '.join(c for c in compared if other[c] != row[c])}); --merge only completes or repeats "
                "a copy of this same archive. Nothing was written"
            )


def _write(target: Engine, table: Table, batch: list[dict[str, Any]], merge: bool) -> None:
    with target.begin() as conn:
        if not merge:
            conn.execute(table.insert(), batch)
            return
        pk = [c.name for c in table.primary_key.columns]
        others = [c.name for c in table.columns if c.name not in pk]
        stmt = upsert(target, table, pk, others) if others else upsert(target, table, pk, pk)
        conn.execute(stmt, batch)


def _reset_sequences(target: Engine) -> None:
    """PostgreSQL: explicit ids do not move a serial's sequence; the next insert must not collide."""
    if target.dialect.name != "postgresql":
        return
    with target.begin() as conn:
        for table in tables():
            if not _surrogate(table):
                continue
            (pk,) = table.primary_key.columns
            conn.execute(
                text(
                    f"SELECT setval(pg_get_serial_sequence(:t, :c), coalesce(max({pk.name}), 1), max({pk.name}) IS NOT NULL) "
                    f"FROM {table.name}"
                ),
                {"t": table.name, "c": pk.name},
            )


def day_sums(conn: Connection, table: Table) -> dict[str, tuple[Any, ...]]:
    """Per day: the row count and the sum of each metric (ints exact, money as floats)."""
    metrics = [m for m in ACTIVITY_METRICS if m in table.c]
    columns = [cast(func.sum(table.c[m]), Float if isinstance(table.c[m].type, Float) else BigInteger) for m in metrics]
    query = select(table.c.date, func.count(), *columns).group_by(table.c.date)
    return {r[0]: tuple(r[1:]) for r in conn.execute(query)}


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, float) or isinstance(y, float):
            if x is None or y is None or not math.isclose(x, y, rel_tol=0, abs_tol=MONEY_TOLERANCE):
                return False
        elif x != y:
            return False
    return True


def verify(source: Connection, target: Connection, merge: bool) -> int:
    """Raise CopyVerificationFailed unless the target holds the source's rows; the days checked."""
    problems = []
    theirs = count_rows(target)
    for name, n in count_rows(source).items():
        if theirs[name] < n or (not merge and theirs[name] != n):
            problems.append(f"{name}: {n} row(s) in the source, {theirs[name]} in the target")
    checked = 0
    for table in tables():
        if "date" not in table.c:
            continue
        mine, other = day_sums(source, table), day_sums(target, table)
        for day, sums in sorted(mine.items()):
            checked += 1
            if not _same(sums, other.get(day, ())):
                problems.append(f"{table.name} {day}: rows and sums {sums} in the source, {other.get(day)} in the target")
    from etl import summaries

    if summaries.tables_present(target):
        stale = summaries.verify(target, "0000-00", "9999-99")
        problems += [f"{s['table']} {s['month']}: the summary differs from the rows copied" for s in stale]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; … {len(problems) - 5} more" if len(problems) > 5 else "")
        raise CopyVerificationFailed(f"the copy does not match the source: {shown}")
    return checked


def copy_archive(
    source: Engine, target: Engine, *, merge: bool = False, batch_rows: int = BATCH_ROWS,
    on_start: Callable[[int], None] | None = None, on_rows: Callable[[str, int], None] | None = None,
) -> CopyReport:
    """Copy every table from ``source`` into the migrated, locked ``target``; then verify."""
    report = CopyReport()
    src = source.connect()
    if source.dialect.name == "postgresql":
        src = src.execution_options(isolation_level="REPEATABLE READ")
    with src, src.begin():  # one snapshot: the copy and its verification see the same archive
        counts = count_rows(src)
        with target.connect() as conn:
            held = {name: n for name, n in count_rows(conn).items() if n}
        if held and not merge:
            shown = ", ".join(f"{name} ({n:,})" for name, n in sorted(held.items())[:4])
            raise CopyRefused(f"refused: the target already holds rows ({shown}); give --merge to add to it, or an empty target")
        if held:
            with target.connect() as conn:
                refuse_another_archive(src, conn, batch_rows)
        if on_start:
            on_start(sum(counts.values()))
        for table in tables():
            pk = list(table.primary_key.columns)
            result = src.execute(select(table).order_by(*pk).execution_options(yield_per=batch_rows))
            copied = 0
            for part in result.mappings().partitions(batch_rows):
                batch = [dict(r) for r in part]
                _write(target, table, batch, merge)
                copied += len(batch)
                if on_rows:
                    on_rows(table.name, len(batch))
            report.copied[table.name] = copied
        _reset_sequences(target)
        with target.connect() as conn:
            report.days_verified = verify(src, conn, merge)
    return report


def same_warehouse(a: str, b: str) -> bool:
    """Whether two URLs name the same warehouse (as far as the URLs tell)."""
    from sqlalchemy.engine import make_url

    from etl.db import sqlite_file

    ua, ub = make_url(a), make_url(b)
    if ua.get_backend_name() != ub.get_backend_name():
        return False
    if ua.get_backend_name() == "sqlite":
        fa, fb = sqlite_file(ua.database), sqlite_file(ub.database)
        return fa is not None and fb is not None and fa.resolve() == fb.resolve()
    local = {"localhost", "127.0.0.1", "::1", None, ""}
    host_a, host_b = ("local" if ua.host in local else ua.host), ("local" if ub.host in local else ub.host)
    return (host_a, ua.port or 5432, ua.database) == (host_b, ub.port or 5432, ub.database)


def require_head(revision: str | None, head: str) -> None:
    if revision != head:
        raise WarehouseError(
            f"the source warehouse is at schema revision {revision}, not {head}: run `openrouter-archive db upgrade` first"
        )
