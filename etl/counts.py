"""Monthly counts of marks and rows (``month_counts``): how ``status`` stays O(window).

``status`` reports how many days are archived (and how many are empty), how many rows
``activity`` holds, which days are missing, and any archived day whose mark's ``row_count``
differs from the rows its table holds, anywhere in history. Read from the marks and the
monthly summaries themselves, each of those grows with the archive's age; ``month_counts``
holds, per counted table, subject and month, the number of marks, of empty marks, the sum
of their ``row_count`` and the summary's rows: a few rows per month. A month whose marks
and rows agree holds no miscounted day unless its days err by amounts that cancel out
exactly (etl/status.py says why that does not happen); only the others are read day by day.

Why triggers, as for the summaries (etl/summaries.py): any writer keeps the counts exact in
its own transaction. The marks' triggers fire once per mark written (a day, a subject);
the summaries' ones once per summary row changed, on SQLite a row trigger with a single
upsert of the delta, on PostgreSQL one grouped upsert per statement (transition tables).
Migration 0009 builds the counts from the rows the archive holds; ``verify`` recomputes
some months (``status`` checks the window's), ``rebuild`` all (``db rebuild-summaries``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, and_, case, delete, func, literal, select

from etl.schema import (
    BREAKDOWN_SUBJECTS,
    BREAKDOWN_TABLES,
    SUMMARY_SUBJECTS,
    SUMMARY_TABLES,
    activity,
    archived_breakdown_days,
    archived_days,
    month_counts,
)

KEYS = ("counted", "subject", "month")
VALUES = ("marked_days", "empty_days", "marked_rows", "held_rows")
Key = tuple[str, str, str]
Counts = tuple[int, int, int, int]

# The marks' breakdown names map onto the tables' names, which the triggers rely on.
assert all(table.name == f"activity_by_{b}" for b, table in BREAKDOWN_TABLES.items())


def _summary_subject(base: str) -> str | None:
    """The summary column that is the counts' subject; None: '' (activity, every workspace)."""
    subject = SUMMARY_SUBJECTS[base]
    return None if subject is None or subject == BREAKDOWN_SUBJECTS["workspace"] else subject


def expected(conn: Connection, months: tuple[str, str] | None = None) -> dict[Key, Counts]:
    """The counts computed from the marks and the summaries (of ``months`` only, if given)."""
    out: dict[Key, list[int]] = {}

    def add(key: tuple[Any, ...], values: tuple[int, int, int, int]) -> None:
        have = out.setdefault((str(key[0]), str(key[1]), str(key[2])), [0, 0, 0, 0])
        for i, v in enumerate(values):
            have[i] += int(v or 0)

    def marks(table: Any, counted: Any, subject: Any) -> None:
        month = func.substr(table.c.date, 1, 7)
        query = select(counted, subject, month, func.count(), func.sum(case((table.c.row_count == 0, 1), else_=0)), func.sum(table.c.row_count))
        if months:
            query = query.where(and_(table.c.date >= f"{months[0]}-01", table.c.date <= f"{months[1]}-32"))
        for r in conn.execute(query.group_by(counted, subject, month)):
            add(r[:3], (r[3], r[4], r[5], 0))

    marks(archived_days, literal(activity.name), literal(""))
    b = archived_breakdown_days
    marks(b, literal("activity_by_") + b.c.breakdown, case((b.c.breakdown == "workspace", literal("")), else_=b.c.subject))
    for base, summary in SUMMARY_TABLES.items():
        column = _summary_subject(base)
        subject = summary.c[column] if column else literal("")
        query = select(literal(base), subject, summary.c.month, func.sum(summary.c.row_count))
        if months:
            query = query.where(and_(summary.c.month >= months[0], summary.c.month <= months[1]))
        for r in conn.execute(query.group_by(subject, summary.c.month)):
            add(r[:3], (0, 0, 0, r[3]))
    return {k: (v[0], v[1], v[2], v[3]) for k, v in out.items()}


def held(conn: Connection, months: tuple[str, str] | None = None) -> dict[Key, Counts]:
    """The counts the table holds (rows of zeros left by deletions are as good as none)."""
    c = month_counts
    query = select(*(c.c[k] for k in KEYS), *(c.c[v] for v in VALUES))
    if months:
        query = query.where(and_(c.c.month >= months[0], c.c.month <= months[1]))
    return {(r[0], r[1], r[2]): (int(r[3]), int(r[4]), int(r[5]), int(r[6])) for r in conn.execute(query) if any(r[3:])}


def differences(conn: Connection, months: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """Every count of ``months`` (all, if None) that differs from the marks and summaries."""
    want, have = expected(conn, months), held(conn, months)
    want = {k: v for k, v in want.items() if any(v)}
    out = []
    for key in sorted(set(want) | set(have)):
        if want.get(key) != have.get(key):
            w, h = want.get(key), have.get(key)
            out.append({"table": month_counts.name, **dict(zip(KEYS, key)),
                        "expected": dict(zip(VALUES, w)) if w else None, "held": dict(zip(VALUES, h)) if h else None})
    return out


def build(conn: Connection) -> None:
    """Fill the (empty) counts from the marks and summaries the archive holds (migration 0009)."""
    rows = [dict(zip(KEYS + VALUES, (*k, *v))) for k, v in expected(conn).items() if any(v)]
    if rows:
        conn.execute(month_counts.insert(), rows)


def rebuild(conn: Connection) -> int:
    """Recompute every count (the caller's transaction); returns how many were wrong, missing or extra."""
    wrong = len(differences(conn))
    conn.execute(delete(month_counts))
    build(conn)
    return wrong


# -- triggers (migration 0009) ----------------------------------------------------------

Terms = Callable[[str], list[str]]  # alias -> SQL of counted, subject, month, then the VALUES


def _sources() -> list[tuple[str, str, Terms]]:
    """Per watched table: a name for its triggers, the table, and its terms for a row."""
    def day_marks(a: str) -> list[str]:
        return [f"'{activity.name}'", "''", f"substr({a}.date, 1, 7)", "1", f"CASE WHEN {a}.row_count = 0 THEN 1 ELSE 0 END", f"{a}.row_count", "0"]

    def breakdown_marks(a: str) -> list[str]:
        return [f"'activity_by_' || {a}.breakdown", f"CASE WHEN {a}.breakdown = 'workspace' THEN '' ELSE {a}.subject END",
                f"substr({a}.date, 1, 7)", "1", f"CASE WHEN {a}.row_count = 0 THEN 1 ELSE 0 END", f"{a}.row_count", "0"]

    out: list[tuple[str, str, Terms]] = [("days", archived_days.name, day_marks), ("breakdown_days", archived_breakdown_days.name, breakdown_marks)]
    for base, summary in SUMMARY_TABLES.items():
        column = _summary_subject(base)

        def rows(a: str, base: str = base, column: str | None = column) -> list[str]:
            return [f"'{base}'", f"{a}.{column}" if column else "''", f"{a}.month", "0", "0", "0", f"{a}.row_count"]

        out.append((summary.name, summary.name, rows))
    return out


def _signed(terms: list[str], sign: str) -> list[str]:
    return terms[:3] + [f"{sign}({t})" for t in terms[3:]]


_CONFLICT = f"ON CONFLICT ({', '.join(KEYS)}) DO UPDATE SET " + ", ".join(f"{v} = {{alias}}{v} + excluded.{v}" for v in VALUES)
_COLUMNS = ", ".join(KEYS + VALUES)


def trigger_ddl(dialect: str) -> list[str]:
    """The statements that create every counting trigger (and PostgreSQL's functions)."""
    out: list[str] = []
    for name, table, terms in _sources():
        out += _sqlite(name, table, terms) if dialect == "sqlite" else _postgresql(name, table, terms)
    return out


def drop_ddl(dialect: str) -> list[str]:
    out = []
    for name, table, _ in _sources():
        for op in ("ins", "upd", "upd_moved", "del"):
            if dialect == "sqlite":
                out.append(f"DROP TRIGGER IF EXISTS month_counts_{name}_{op}")
            elif op != "upd_moved":
                out.append(f"DROP TRIGGER IF EXISTS month_counts_{name}_{op} ON {table}")
                out.append(f"DROP FUNCTION IF EXISTS month_counts_{name}_{op}()")
    return out


def _sqlite(name: str, table: str, terms: Terms) -> list[str]:
    conflict = _CONFLICT.format(alias="")

    def upsert(values: list[str]) -> str:
        return f"INSERT INTO month_counts ({_COLUMNS}) VALUES ({', '.join(values)}) {conflict};"

    new, old = terms("NEW"), terms("OLD")
    same_key = " AND ".join(f"{n} = {o}" for n, o in zip(new[:3], old[:3]))
    delta = new[:3] + [f"({n}) - ({o})" for n, o in zip(new[3:], old[3:])]
    trigger = f"month_counts_{name}"
    return [
        f"CREATE TRIGGER {trigger}_ins AFTER INSERT ON {table} BEGIN {upsert(new)} END",
        # An upsert into a summary changes one row in place: one upsert of the difference.
        f"CREATE TRIGGER {trigger}_upd AFTER UPDATE ON {table} WHEN {same_key} BEGIN {upsert(delta)} END",
        f"CREATE TRIGGER {trigger}_upd_moved AFTER UPDATE ON {table} WHEN NOT ({same_key}) "
        f"BEGIN {upsert(new)} {upsert(_signed(old, '-'))} END",
        f"CREATE TRIGGER {trigger}_del AFTER DELETE ON {table} BEGIN {upsert(_signed(old, '-'))} END",
    ]


def _postgresql(name: str, table: str, terms: Terms) -> list[str]:
    conflict = _CONFLICT.format(alias="c.")

    def part(alias: str, sign: str) -> str:
        values = _signed(terms(alias), sign) if sign else terms(alias)
        return f"SELECT {', '.join(f'{t} AS {c}' for t, c in zip(values, KEYS + VALUES))} FROM {alias}"

    def body(parts: list[str]) -> str:
        sums = ", ".join(f"sum({v})" for v in VALUES)
        return (f"INSERT INTO month_counts AS c ({_COLUMNS}) SELECT {', '.join(KEYS)}, {sums} FROM ({' UNION ALL '.join(parts)}) d "
                f"GROUP BY {', '.join(KEYS)} {conflict};")

    events = {
        "ins": ("INSERT", "REFERENCING NEW TABLE AS new_rows", body([part("new_rows", "")])),
        "upd": ("UPDATE", "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows", body([part("new_rows", ""), part("old_rows", "-")])),
        "del": ("DELETE", "REFERENCING OLD TABLE AS old_rows", body([part("old_rows", "-")])),
    }
    out = []
    for op, (event, referencing, sql) in events.items():
        fn = f"month_counts_{name}_{op}"
        out.append(f"CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {sql} RETURN NULL; END $$")
        out.append(f"CREATE TRIGGER {fn} AFTER {event} ON {table} {referencing} FOR EACH STATEMENT EXECUTE FUNCTION {fn}()")
    return out
