"""Monthly summaries of the activity tables: how all-history reports avoid scanning every row.

``activity_monthly`` (and ``activity_by_key_monthly``, ``…_by_workspace_monthly``,
``…_by_member_monthly``) hold, per month and (subject,) model, permaslug and provider, the
number of base rows and the sum of every metric. A report over whole months reads them;
the partial months at the edges of its range are read from the base rows (etl/query.py).

Why triggers, not the load path: the summaries must be exact whoever writes the base
rows — ``warehouse.save_rows``, a migration, ``db copy``, a test or an operator's own
INSERT. Database triggers, created by migration 0008 on SQLite and PostgreSQL alike,
change a summary in the same statement, hence the same transaction, as the rows it
summarises; nothing outside can make them stale. SQLite has row triggers only (an upsert
of one summary row per base row written); PostgreSQL uses statement triggers with
transition tables (one grouped upsert per statement).

Why whole units: a float sum depends on the order of its terms, so a sum of monthly float
sums could differ from one flat sum in the last bits and, after rounding to 1e-9 USD,
print a different digit. Every money amount is therefore summed as a whole number of
``1/MONEY_UNITS`` USD (each row's amount rounded to 1e-10 USD, the precision OpenRouter
and its stand-in give): integer sums are exact in any order, so the summary path and the
plain path compute the very same number (etl/query.py does the same over base rows).
Each row's rounding moves it by at most 5e-11 USD: a million rows by at most 5e-5 USD,
far inside a cent.

``verify`` recomputes the summaries of some months from the base rows and lists every
difference (``status`` does so for the months of the API window); ``rebuild`` recomputes
them all in one transaction (``openrouter-archive db rebuild-summaries``), and with them the
monthly counts of migration 0009 (etl/counts.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, Connection, Select, Table, and_, cast, delete, func, literal_column, select

from etl.schema import SUMMARY_COUNTS, SUMMARY_DIMENSIONS, SUMMARY_MONEY, SUMMARY_SUBJECTS, SUMMARY_TABLES, metadata, month_counts

MONEY_UNITS = 10**10  # units per USD
_UNITS_SQL = "10000000000.0"
_NANO = Decimal("1e-9")


def units(expr: ColumnElement[Any]) -> ColumnElement[int]:
    """SQL: a row's amount as a whole number of units (rounded to 1e-10 USD)."""
    return cast(func.round(expr * literal_column(_UNITS_SQL)), BigInteger)


def usd(total_units: Any) -> float:
    """A sum of units as USD, rounded to 1e-9 (the reports' MONEY_DIGITS), exactly: no float sum in between."""
    return float((Decimal(int(total_units)) / MONEY_UNITS).quantize(_NANO))


def summary_keys(base: Table) -> list[str]:
    subject = SUMMARY_SUBJECTS[base.name]
    return ["month", *([subject] if subject else []), *SUMMARY_DIMENSIONS]


def summary_values() -> list[str]:
    return ["row_count", *SUMMARY_MONEY.values(), *SUMMARY_COUNTS]


def grouped(base: Table) -> Select[Any]:
    """The summary rows of ``base``, computed from its rows (add ``.where`` to restrict)."""
    subject = SUMMARY_SUBJECTS[base.name]
    month = func.substr(base.c.date, 1, 7)
    dims = [month.label("month"), *([base.c[subject]] if subject else []), *(base.c[d] for d in SUMMARY_DIMENSIONS)]
    sums = [
        cast(func.count(), BigInteger).label("row_count"),
        *(cast(func.sum(units(base.c[m])), BigInteger).label(name) for m, name in SUMMARY_MONEY.items()),
        *(cast(func.sum(func.coalesce(base.c[m], 0)), BigInteger).label(m) for m in SUMMARY_COUNTS),
    ]
    return select(*dims, *sums).group_by(*dims)


def base_tables() -> list[Table]:
    return [metadata.tables[name] for name in SUMMARY_TABLES]


def rebuild(conn: Connection) -> dict[str, int]:
    """Recompute every summary from its base rows (the caller's transaction); returns, per
    summary table, how many of its rows were wrong, missing or extra before."""
    changed = {}
    for base in base_tables():
        summary = SUMMARY_TABLES[base.name]
        changed[summary.name] = len(_differences(conn, base, None))
        conn.execute(delete(summary))
        conn.execute(summary.insert().from_select(summary_keys(base) + summary_values(), grouped(base)))
    from etl import counts

    changed[month_counts.name] = counts.rebuild(conn)  # after the summaries, whose triggers moved them
    return changed


def build(conn: Connection) -> None:
    """Fill the (empty) summaries from the rows the archive holds (migration 0008); a fresh
    warehouse has none, and gets no statement at all."""
    for base in base_tables():
        if conn.execute(select(base.c.date).limit(1)).first() is not None:
            summary = SUMMARY_TABLES[base.name]
            conn.execute(summary.insert().from_select(summary_keys(base) + summary_values(), grouped(base)))


def verify(conn: Connection, first_month: str, last_month: str, *, with_counts: bool = True) -> list[dict[str, Any]]:
    """Every summary row of the months ``first_month`` .. ``last_month`` (``YYYY-MM``) that
    differs from its base rows: wrong, missing or extra; with ``with_counts`` (revision 0009
    on), also every ``month_counts`` row of those months that differs from the marks and
    the summaries (etl/counts.py)."""
    found = []
    for base in base_tables():
        found += _differences(conn, base, (first_month, last_month))
    if with_counts:
        from etl import counts

        found += counts.differences(conn, (first_month, last_month))
    return found


def _differences(conn: Connection, base: Table, months: tuple[str, str] | None) -> list[dict[str, Any]]:
    summary = SUMMARY_TABLES[base.name]
    keys, values = summary_keys(base), summary_values()
    expected_query, held_query = grouped(base), select(*(summary.c[c] for c in keys + values))
    if months is not None:
        first, last = months
        # Dates compare as text: every day of the last month sorts before "YYYY-MM-32".
        expected_query = expected_query.where(and_(base.c.date >= f"{first}-01", base.c.date <= f"{last}-32"))
        held_query = held_query.where(and_(summary.c.month >= first, summary.c.month <= last))
    expected = {tuple(r[:len(keys)]): tuple(int(v) for v in r[len(keys):]) for r in conn.execute(expected_query)}
    held = {tuple(r[:len(keys)]): tuple(int(v) for v in r[len(keys):]) for r in conn.execute(held_query)}
    out = []
    for key in sorted(set(expected) | set(held), key=lambda k: tuple(str(x) for x in k)):
        want, have = expected.get(key), held.get(key)
        if want != have:
            out.append({
                "table": summary.name, **dict(zip(keys, key)),
                "expected": dict(zip(values, want)) if want else None, "held": dict(zip(values, have)) if have else None,
            })
    return out


def describe(found: list[dict[str, Any]], first_month: str, last_month: str) -> list[str]:
    """The health problem of summaries that differ from their base rows, if any (pure)."""
    if not found:
        return []
    tables = sorted({f["table"] for f in found})
    months = sorted({f["month"] for f in found})
    return [
        f"{len(found)} summary row(s) of {', '.join(tables)} differ from the rows they summarise "
        f"(months {', '.join(months[:6])}, checked {first_month} .. {last_month}): all-history reports over them are wrong; "
        "run `openrouter-archive db rebuild-summaries`"
    ]


# -- triggers (migration 0008) ----------------------------------------------------------


def _names(base: Table) -> tuple[str, list[str], list[str]]:
    return SUMMARY_TABLES[base.name].name, summary_keys(base), summary_values()


def _row_terms(base: Table, alias: str, sign: str, dialect: str) -> list[str]:
    """Per base row: its summary key then its signed contributions, as SQL text."""
    subject = SUMMARY_SUBJECTS[base.name]
    integer = "INTEGER" if dialect == "sqlite" else "BIGINT"
    terms = [f"substr({alias}.date, 1, 7)", *([f"{alias}.{subject}"] if subject else []), *(f"{alias}.{d}" for d in SUMMARY_DIMENSIONS)]
    terms.append(f"{sign}1")
    terms += [f"{sign}CAST(round({alias}.{m} * {_UNITS_SQL}) AS {integer})" for m in SUMMARY_MONEY]
    terms += [f"{sign}coalesce({alias}.{m}, 0)" for m in SUMMARY_COUNTS]
    return terms


def trigger_ddl(dialect: str) -> list[str]:
    """The statements that create every summary trigger (and PostgreSQL's functions)."""
    out: list[str] = []
    for base in base_tables():
        out += _sqlite_triggers(base) if dialect == "sqlite" else _postgresql_triggers(base)
    return out


def drop_ddl(dialect: str) -> list[str]:
    out = []
    for base in base_tables():
        name = SUMMARY_TABLES[base.name].name
        for op in ("ins", "upd", "del"):
            if dialect == "sqlite":
                out.append(f"DROP TRIGGER IF EXISTS {name}_{op}")
            else:
                out.append(f"DROP TRIGGER IF EXISTS {name}_{op} ON {base.name}")
                out.append(f"DROP FUNCTION IF EXISTS {name}_{op}()")
    return out


def _sqlite_triggers(base: Table) -> list[str]:
    name, keys, values = _names(base)
    columns = ", ".join(keys + values)
    conflict = f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET " + ", ".join(f"{v} = {v} + excluded.{v}" for v in values)

    def add(alias: str, sign: str) -> str:
        return f"INSERT INTO {name} ({columns}) VALUES ({', '.join(_row_terms(base, alias, sign, 'sqlite'))}) {conflict};"

    def drop_empty(alias: str) -> str:
        match = " AND ".join(f"{k} = {t}" for k, t in zip(keys, _row_terms(base, alias, "", "sqlite")))
        return f"DELETE FROM {name} WHERE {match} AND row_count = 0;"

    watched = ", ".join(["date", *keys[1:], *SUMMARY_MONEY, *SUMMARY_COUNTS])
    return [
        f"CREATE TRIGGER {name}_ins AFTER INSERT ON {base.name} BEGIN {add('NEW', '')} END",
        f"CREATE TRIGGER {name}_upd AFTER UPDATE OF {watched} ON {base.name} BEGIN "
        f"{add('NEW', '')} {add('OLD', '-')} {drop_empty('OLD')} END",
        f"CREATE TRIGGER {name}_del AFTER DELETE ON {base.name} BEGIN {add('OLD', '-')} {drop_empty('OLD')} END",
    ]


def _postgresql_triggers(base: Table) -> list[str]:
    name, keys, values = _names(base)
    n_keys = len(keys)

    def part(alias: str, sign: str) -> str:
        terms = _row_terms(base, alias, sign, "postgresql")
        labelled = [f"{t} AS {c}" for t, c in zip(terms, keys + values)]
        return f"SELECT {', '.join(labelled)} FROM {alias}"

    def body(parts: list[str], old: bool) -> str:
        union = " UNION ALL ".join(parts)
        sums = ", ".join(f"sum({v})" for v in values)
        upsert = (
            f"INSERT INTO {name} AS s ({', '.join(keys + values)}) SELECT {', '.join(keys)}, {sums} FROM ({union}) d "
            f"GROUP BY {', '.join(str(i + 1) for i in range(n_keys))} "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET " + ", ".join(f"{v} = s.{v} + excluded.{v}" for v in values) + ";"
        )
        if not old:
            return upsert
        old_keys = ", ".join(f"{t} AS {k}" for t, k in zip(_row_terms(base, "old_rows", "", "postgresql"), keys))
        match = " AND ".join(f"s.{k} = o.{k}" for k in keys)
        return upsert + f" DELETE FROM {name} s USING (SELECT DISTINCT {old_keys} FROM old_rows) o WHERE {match} AND s.row_count = 0;"

    events = {
        "ins": ("INSERT", "REFERENCING NEW TABLE AS new_rows", body([part("new_rows", "")], False)),
        "upd": ("UPDATE", "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
                body([part("new_rows", ""), part("old_rows", "-")], True)),
        "del": ("DELETE", "REFERENCING OLD TABLE AS old_rows", body([part("old_rows", "-")], True)),
    }
    out = []
    for op, (event, referencing, sql) in events.items():
        out.append(f"CREATE FUNCTION {name}_{op}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {sql} RETURN NULL; END $$")
        out.append(f"CREATE TRIGGER {name}_{op} AFTER {event} ON {base.name} {referencing} FOR EACH STATEMENT EXECUTE FUNCTION {name}_{op}()")
    return out


def tables_present(conn: Connection, names: Iterable[str] = ("activity_monthly",)) -> bool:
    """Whether the warehouse has the summaries (revision 0008 or later)."""
    from sqlalchemy import inspect

    inspector = inspect(conn)
    return all(inspector.has_table(n) for n in names)
