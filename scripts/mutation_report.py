#!/usr/bin/env python3
"""Mutation audit: does the suite notice when the core code is quietly wrong?

A fixed, printed list of small hand-made mutants (a comparison flipped, a constant off by
one, two metric columns swapped, a condition dropped, an exit code changed, an early
return) over the core modules. Each mutant is applied to a temporary copy of the tree
(the worktree is never touched), and a fast, targeted selection of tests runs against it
with ``-x`` and a timeout. A mutant the tests do not notice *survives*: a place where a
wrong number could ship silently. The score per module is killed / applicable.

Run it on demand, not in CI (CPU: one module at a time is kind to a shared machine)::

    python scripts/mutation_report.py --list                 # the mutants, nothing run
    python scripts/mutation_report.py --module validate      # one module
    python scripts/mutation_report.py                        # every module
    python scripts/mutation_report.py --tests-from 98c881a   # the tests as of a commit
    python scripts/mutation_report.py --auto 8 --only-auto   # a seeded sample of mechanical mutants

The hand-made list is the measure (the goal is 90% per module). ``--auto N`` adds a sample
of mechanical operator mutants per module (flipped comparisons, and/or, dropped ``not``,
integers off by one), chosen by a fixed seed rather than by hand and scored apart: a check
that the list is not merely what the tests already catch. Some of those are equivalent
(a change no behaviour can show), so their score is read, not required.

A mutant whose original text is no longer in the file (the code moved on) is reported as
*stale*, not counted, so that the list can be brought up to date. Exit status: 0 when every
module scored at least ``--threshold`` (90%), else 1.
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    module: str  # the report group
    path: str  # file, relative to the repository root
    old: str  # exact original text (must occur in the file)
    new: str  # its replacement
    why: str  # what would go wrong for a user
    nth: int = 1  # which occurrence of ``old``, when it is not unique


def m(module: str, path: str, old: str, new: str, why: str, nth: int = 1) -> Mutant:
    return Mutant(module, path, old, new, why, nth)


V, W, S, Q, ST, C, D, X = "etl/validate.py", "etl/warehouse.py", "etl/sync.py", "etl/query.py", "etl/status.py", "etl/client.py", "etl/db.py", "etl/cli.py"
VA = "etl/validate_analytics.py"

MUTANTS: tuple[Mutant, ...] = (
    # -- validation: what is refused before anything is written
    m("validate", V, "MAX_COUNT = 2**63 - 1", "MAX_COUNT = 2**63", "a count of exactly 2**63 (beyond SQLite INTEGER) is accepted"),
    m("validate", V, "    if isinstance(value, bool):\n        raise", "    if False:\n        raise", "a boolean count (True) is accepted"),
    m("validate", V, "if isinstance(value, bool) or not isinstance(value, (int, float)):", "if not isinstance(value, (int, float)):", "a boolean amount (True) is stored as $1.00"),
    m("validate", V, "if not value.is_integer():", "if False:", "a fractional count (5.5) is truncated and stored"),
    m("validate", V, "    if not isinstance(value, int):\n        raise", "    if False:\n        raise", "a count given as a string (\"5\") is accepted"),
    m("validate", V, "Field(ge=0, le=MAX_COUNT)", "Field(ge=-1, le=MAX_COUNT)", "a negative count of -1 is accepted"),
    m("validate", V, "Field(allow_inf_nan=False)", "Field()", "NaN and Infinity amounts are stored"),
    m("validate", V, "Field(min_length=1, max_length=1000)", "Field(min_length=0, max_length=1000)", "an empty model or endpoint name is accepted"),
    m("validate", V, "if not isinstance(value, str) or not value:", "if not isinstance(value, str):", "an empty workspace_id is stored"),
    m("validate", V, "if (scope, item.endpoint_id) in seen:", "if False:", "a duplicate (date, endpoint) is accepted"),
    m("validate", V, "if not first <= day <= last:", "if not first <= day:", "a day after the requested window is loaded"),
    m("validate", V, "if not first <= day <= last:", "if not first < day <= last:", "the first day of the window is rejected"),
    m("validate", V, "(?:[ T]00:00:00", "(?:[ T]\\d\\d:\\d\\d:\\d\\d", "a date with a time of day other than midnight is accepted"),
    m("validate", V, "return {name: getattr(self, name) for name in ROW_COLUMNS}",
      "return {name: getattr(self, {'prompt_tokens': 'completion_tokens', 'completion_tokens': 'prompt_tokens'}.get(name, name)) for name in ROW_COLUMNS}",
      "prompt_tokens and completion_tokens are swapped"),
    m("validate", V, "return {name: getattr(self, name) for name in ROW_COLUMNS}",
      "return {name: getattr(self, {'usage': 'byok_usage_inference', 'byok_usage_inference': 'usage'}.get(name, name)) for name in ROW_COLUMNS}",
      "usage and byok_usage_inference are swapped"),
    m("validate", V, "cached_tokens: Count | None = None", "cached_tokens: Count | None = 0", "a missing cached_tokens is stored as 0 instead of NULL"),
    # -- warehouse: how a validated day is written
    m("warehouse", W, "differ = [i for i, v in enumerate(values) if v not in held]", "differ = [i for i, v in enumerate(values) if v[:n] not in {r[:n] for r in held}]", "a revised row is counted unchanged and never updated"),
    m("warehouse", W, "_COMPARED = (*ACTIVITY_ATTRIBUTES, *ACTIVITY_METRICS)", "_COMPARED = (*ACTIVITY_ATTRIBUTES, *ACTIVITY_METRICS[:-1])", "a change of cached_tokens alone is not noticed"),
    m("warehouse", W, "stmt = _upsert_statement(conn.dialect, table, pk, (*compared, \"updated_at\"), columns)", "stmt = _upsert_statement(conn.dialect, table, pk, (*compared[1:], \"updated_at\"), columns)", "a revised model name is not written"),
    m("warehouse", W, "changed = diff.inserted + diff.updated", "changed = diff.inserted", "revised rows are counted but not written"),
    m("warehouse", W, '("row_count", "last_fetched_at", "run_id", "raw_response_id")', '("row_count", "first_archived_at", "last_fetched_at", "run_id", "raw_response_id")', "a day's first_archived_at moves at every refetch"),
    m("warehouse", W, '_mark(conn, archived_days, {"date": day}, len(rows), now', '_mark(conn, archived_days, {"date": day}, written.inserted, now', "archived_days.row_count counts only new rows"),
    m("warehouse", W, "            where.append(table.c[column] == bindparam(f\"scope_{column}\"))", "            pass", "per-key rows are compared with other keys' rows"),
    m("warehouse", W, '"disabled": bool(k.get("disabled"))', '"disabled": False', "a disabled key is stored as enabled"),
    m("warehouse", W, "packed.sha256 if packed is not None else rawstore.digest(body)\n    body_id",
      "packed.sha256 if packed is not None else rawstore.digest(body[:-1])\n    body_id", "the stored checksum does not match the raw body"),
    m("warehouse", W, "query = query.where(archived_days.c.date <= last)", "query = query.where(archived_days.c.date < last)", "the last day of a range is never seen as archived"),
    m("warehouse", W, "archived_breakdown_days.c.date >= first,", "archived_breakdown_days.c.date > first,", "a breakdown's first window day is refetched forever"),
    m("warehouse", W, "values(finished_at=now, outcome=outcome, error=error, **counts)", "values(finished_at=now, error=error, **counts)", "a run's outcome is never recorded"),
    m("warehouse", W, "vanished = sorted(keys - {v[:n] for v in values})", "vanished: list[tuple[Any, ...]] = []", "rows the API stopped listing go unreported"),
    # -- sync: what is fetched, and how a run ends
    m("sync", S, "if d.isoformat() not in have or d in recent]", "if d.isoformat() not in have and d in recent]", "missing days are fetched only when recent"),
    m("sync", S, "last - timedelta(days=refetch_days - 1)", "last - timedelta(days=refetch_days)", "one day more than refetch_days is refetched"),
    m("sync", S, "first = max(first, last - timedelta(days=days - 1))", "first = max(first, last - timedelta(days=days))", "backfill --days N fetches N+1 days"),
    m("sync", "etl/context.py", "if len(days) == 1:", "if False:", "a single missing day costs the whole window"),
    m("sync", "etl/context.py", "if self.stop.is_set():", "if False:", "a stop request does not stop the run between days"),
    m("sync", S, "settings.breakdowns and report.error is None:", "settings.breakdowns:", "breakdowns run after the account-level fetch failed"),
    m("sync", S, "elif report.archived or any(", "elif report.archived > 1 or any(", "a run with one archived day of many is recorded as failed"),
    m("sync", S, "settled >= set(self.planned) and all(b.ok for b in self.breakdowns) and analytics_ok",
      "settled >= set(self.planned) and analytics_ok", "a failed breakdown still counts as a successful sync"),
    m("sync", S, "return self.error is None and settled >= set(self.planned) and",
      "return self.error is None and settled >= set(self.planned[1:]) and", "a run that missed its first day counts as ok"),
    m("sync", S, "if isinstance(exc, SQLAlchemyError):", "if False:", "a database error while writing escapes as a raw exception"),
    m("sync", S, "[d for d in days if request.covers[0] <= d <= request.covers[1]]", "[d for d in days if request.covers[0] < d <= request.covers[1]]", "the first day of the window is never loaded"),
    m("sync", S, "report.interrupted = isinstance(exc, Interrupted)\n            done", "report.interrupted = False\n            done", "a stopped run is not recorded as interrupted"),
    m("sync", S, "        self.report.outcomes.append(outcome)\n        self.on_day(outcome)", "        self.report.outcomes.append(outcome)", "per-day progress lines are never printed"),
    m("sync", S, "raw_id: int) -> None:\n        self.ctx.check_stop()\n", "raw_id: int) -> None:\n", "a stop request does not stop the run between days"),
    m("sync", S, "self.day(day, parsed.days.get(key, []), raw_id)", "self.day(day, parsed.days.get(key, [])[1:], raw_id)", "the first row of every day is dropped"),
    # -- query: what reports say
    m("query", Q, '"month": func.substr(t.c.date, 1, 7),', '"month": func.substr(t.c.date, 1, 6),', "month labels are cut short"),
    m("query", Q, '"year": func.substr(t.c.date, 1, 4),', '"year": func.substr(t.c.date, 1, 3),', "year labels are cut short"),
    m("query", Q, '"permaslug": t.c.model_permaslug,', '"permaslug": t.c.model,', "permaslug groups show the model"),
    m("query", Q, '"cached_tokens": _count(t.c.cached_tokens),', '"cached_tokens": _count(t.c.reasoning_tokens),', "cached_tokens reports reasoning tokens"),
    m("query", Q, "_count(t.c.prompt_tokens + t.c.completion_tokens)", "_count(t.c.prompt_tokens + t.c.completion_tokens + t.c.reasoning_tokens)", "total_tokens counts reasoning twice"),
    m("query", Q, '"prompt_tokens": _count(t.c.prompt_tokens),', '"prompt_tokens": _count(t.c.completion_tokens),', "prompt_tokens reports completion tokens"),
    m("query", Q, '"byok_usage_inference": _money(t.c.byok_usage_inference),', '"byok_usage_inference": _money(t.c.usage),', "BYOK spend reports the credit spend"),
    m("query", D, '.replace("?", "_")', '.replace("?", "%")', "a ? in a glob matches any number of characters"),
    m("query", D, '.replace("_", "\\\\_")', "", "a _ in a glob matches any character"),
    m("query", Q, 'if "*" in pattern or "?" in pattern:', 'if "*" in pattern:', "a glob with only ? is taken literally"),
    m("query", Q, "where.append(t.c.date >= spec.since)", "where.append(t.c.date > spec.since)", "--since is exclusive"),
    m("query", Q, "where.append(t.c.date <= spec.until)", "where.append(t.c.date < spec.until)", "--until is exclusive"),
    m("query", Q, "if spec.providers:\n        where.append", "if False:\n        where.append", "--provider is ignored"),
    m("query", Q, "return sorted(rows, key=lambda r: str(r[groups[0]]))", "return sorted(rows, key=lambda r: str(r[groups[0]]), reverse=True)", "time groups come newest first"),
    m("query", Q, "return sorted(rows, key=lambda r: (str(r[groups[0]]), *by_metric(r)))", "return sorted(rows, key=by_metric)", "two-level time reports are not in chronological blocks"),
    m("query", Q, "sign = 1 if spec.ascending else -1", "sign = 1", "reports come smallest first"),
    m("query", Q, "(parse_day(until) - parse_day(since)).days <= 92", "(parse_day(until) - parse_day(since)).days <= 31", "charts of two or three months use monthly bars"),
    m("query", Q, "(parse_day(until) - parse_day(since)).days <= 92", "(parse_day(until) - parse_day(since)).days < 92", "charts of exactly 92 days use monthly bars"),
    m("query", Q, "any(glob_matches(name, p) for p in patterns)", "any(name == p for p in patterns)", "--key globs match nothing"),
    m("query", Q, "if counts[name] > 1", "if counts[name] >= 1", "key names always carry their label"),
    m("query", Q, "keep = set(sorted(ranking, key=lambda k: (-ranking[k], str(k)))[:top])", "keep = set(sorted(ranking, key=lambda k: (ranking[k], str(k)))[:top])", "--top keeps the smallest groups"),
    # -- status: what the health check says
    m("status", ST, "pending=[d.isoformat() for d in missing if d >= window_first],", "pending=[d.isoformat() for d in missing if d > window_first],", "the window's first day is listed as lost, not pending"),
    m("status", ST, "if behind > stale_after_days:", "if behind >= stale_after_days:", "an archive one day behind is called stale"),
    m("status", ST, "if behind > stale_after_days:", "if behind > stale_after_days + 1:", "an archive two days behind is called fresh"),
    m("status", ST, "deadline = window_first + timedelta(days=window_margin_days)", "deadline = window_first + timedelta(days=window_margin_days - 1)", "the last at-risk day is not flagged"),
    m("status", ST, "if date.fromisoformat(d) < deadline)", "if date.fromisoformat(d) <= deadline)", "one day too many is flagged at risk"),
    m("status", ST, "timedelta(days=WINDOW_DAYS + 1)", "timedelta(days=WINDOW_DAYS)", "the first day that will be lost is a day early"),
    m("status", ST, "MONEY_TOLERANCE = 1e-6", "MONEY_TOLERANCE = 0.05", "a per-key money difference of one cent is hidden"),
    m("status", ST, 'CHECKED_METRICS = ("usage", "byok_usage_inference", "requests",', 'CHECKED_METRICS = ("byok_usage_inference", "requests",', "per-key spend is never compared"),
    # Since revision 0009 status reads the empty days from the monthly counts, kept by triggers.
    m("status", "etl/counts.py", 'f"CASE WHEN {a}.row_count = 0 THEN 1 ELSE 0 END", f"{a}.row_count", "0"]',
      'f"CASE WHEN {a}.row_count <= 1 THEN 1 ELSE 0 END", f"{a}.row_count", "0"]', "days with one row count as empty"),
    m("status", ST, 'where(sync_runs.c.outcome == "ok")', 'where(sync_runs.c.outcome != "failed")', "a partial run counts as the last success"),
    m("status", ST, "select(sync_runs).order_by(sync_runs.c.id.desc())", "select(sync_runs).order_by(sync_runs.c.id)", "the last run shown is the first one"),
    m("status", ST, "first_day, last_day = conn.execute(select(func.min(archived_days.c.date),",
      "first_day, last_day = conn.execute(select(func.max(archived_days.c.date),", "the first archived day is wrong"),
    m("status", ST, 'for breakdown in ("key", "workspace"):', 'for breakdown in ("key",):', "per-workspace sums are never checked"),
    m("status", ST, "        behind = (yesterday - date.fromisoformat(last_day)).days", "        behind = (today - date.fromisoformat(last_day)).days", "staleness is counted from today"),
    # -- client: retries and refusals
    m("client", C, "RETRYABLE_STATUSES = frozenset({408, 429})", "RETRYABLE_STATUSES = frozenset({429})", "a 408 is final"),
    m("client", C, "policy.initial * policy.multiplier ** (attempt - 1)", "policy.initial * policy.multiplier ** attempt", "the first backoff is already multiplied"),
    m("client", C, "return min(policy.max_wait, base + rand() * policy.initial)", "return base + rand() * policy.initial", "a wait can exceed backoff_max"),
    m("client", C, "return backoff if retry_after is None else max(retry_after, backoff)", "return backoff", "the server's Retry-After is ignored: retries come too early"),
    m("client", C, "if declared and declared.isdigit() and int(declared) > self._max_bytes:", "if declared and declared.isdigit() and int(declared) >= self._max_bytes:", "a body of exactly the limit is refused"),
    m("client", C, "if size > self._max_bytes:", "if size > self._max_bytes + 1:", "a body one byte over the limit is read"),
    m("client", C, 'raise InvalidResponseError(f"{what}: response of', 'raise _Retryable(f"{what}: response of', "an oversized body is retried instead of refused"),
    m("client", C, "return max(0.0, float(reset) / 1000.0 - now())", "return max(0.0, float(reset) - now())", "X-RateLimit-Reset is read as seconds"),
    m("client", C, "follow_redirects=False", "follow_redirects=True", "the key follows redirects to other hosts"),
    m("client", C, "if status == 401:", "if status == 4010:", "a 401 is not explained as a bad key"),
    m("client", C, '"Authorization": f"Bearer {api_key}"', '"Authorization": f"Bearer {api_key} "', "the key is sent mangled"),
    m("client", C, "            if not data:\n                return keys, pages", "            if len(data) < 2:\n                return keys, pages", "key listing stops at a short page"),
    # -- db: engine settings and the read-only SQL connection
    m("db", D, 'cursor.execute("PRAGMA synchronous=FULL")', 'cursor.execute("PRAGMA synchronous=NORMAL")', "a power cut can lose the last committed day"),
    m("db", D, 'cursor.execute("PRAGMA journal_mode=WAL")', 'cursor.execute("PRAGMA journal_mode=DELETE")', "readers block the writer"),
    m("db", D, 'cursor.execute("PRAGMA foreign_keys=ON")', 'cursor.execute("PRAGMA foreign_keys=OFF")', "foreign keys are not enforced"),
    m("db", D, "set_={c: stmt.excluded[c] for c in update}", "set_={c: table.c[c] for c in update}", "an upsert keeps the old values"),
    m("db", D, "sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE):", "sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE, sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE):", "the authorizer lets writes through"),
    m("db", D, "sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE):", "sqlite3.SQLITE_FUNCTION):", "a recursive CTE is refused"),
    m("db", D, "(arg2 is None or arg1 in _PRAGMAS_WITH_ARGUMENT)", "True", "the authorizer lets a pragma be assigned"),
    m("db", D, '        conn.execute("PRAGMA query_only=ON")\n', "", "the read-only connection is not query_only"),
    m("db", D, "'-3 days', 'weekday 4'", "'-2 days', 'weekday 4'", "ISO weeks are cut on the wrong day"),
    m("db", D, "AS INTEGER) - 1) / 7 + 1))", "AS INTEGER)) / 7 + 1))", "ISO week numbers are off by one on some days"),
    m("db", D, 'if "not authorized" in message or "authorization denied" in message or "readonly" in message:', 'if "readonly" in message:', "an authorizer refusal is reported as an SQL error"),
    # -- summaries: the monthly summary tables and the reports' fast path over them
    m("summaries", Q, "whole = (stop + timedelta(days=1)).day == 1", "whole = (stop + timedelta(days=2)).day == 1",
      "a range ending the day before a month's last day takes that whole month from the summaries (one day too many)"),
    m("summaries", Q, "first = spec.since[:7] if start.day == 1 else", "first = spec.since[:7] if start.day <= 2 else",
      "a range starting on the 2nd takes the whole month from the summaries (the 1st counted too)"),
    m("summaries", Q, "end = _month_after(start) - timedelta(days=1)", "end = _month_after(start) - timedelta(days=2)",
      "the last day of a leading partial month is dropped"),
    m("summaries", Q, "begin = stop.replace(day=1).isoformat()", "begin = stop.replace(day=2).isoformat()",
      "the first day of a trailing partial month is dropped"),
    m("summaries", "etl/summaries.py", "return cast(func.round(expr * literal_column(_UNITS_SQL)), BigInteger)",
      "return cast(expr * literal_column(_UNITS_SQL), BigInteger)", "a row's amount is truncated, not rounded, to 1e-10 USD"),
    m("summaries", "etl/summaries.py", "terms += [f\"{sign}CAST(round({alias}.{m} * {_UNITS_SQL}) AS {integer})\"",
      "terms += [f\"{sign}CAST(({alias}.{m} * {_UNITS_SQL}) AS {integer})\"", "the triggers truncate amounts: summaries disagree with the base rows"),
    m("summaries", "etl/summaries.py", "return float((Decimal(int(total_units)) / MONEY_UNITS).quantize(_NANO))",
      "return float((Decimal(int(total_units)) / MONEY_UNITS).quantize(Decimal(\"1e-8\")))", "report amounts are rounded to 1e-8 USD, not 1e-9"),
    # -- the raw store, glob escaping, the request rule, the analytics limiter
    m("rawstore", "etl/rawstore.py", "offsets = [0, *cuts(body), len(body)]", "offsets = [0, *cuts(body), len(body) - 1]",
      "a stored body loses its last byte"),
    m("rawstore", W, ".order_by(raw_body_chunks.c.seq)", ".order_by(raw_body_chunks.c.chunk_id)",
      "a body whose pieces were stored out of order (shared with an older body) is reassembled wrongly"),
    m("rawstore", "etl/rawstore.py", "return Packed(body, digest(body),", "return Packed(body, digest(body[:-1]),",
      "an answer packed in a fetch thread is stored under another body's checksum"),
    m("rawstore", "etl/rawstore.py", "return packed if packed is not None and packed.body is body else None", "return packed",
      "a pack made from other bytes is stored as the body (the writer trusts it)"),
    m("query", D, 'glob = pattern.replace("[", "[[]")', "glob = pattern", "on SQLite a '[' in a glob starts a character class"),
    m("query", D, '.replace("%", "\\\\%")', "", "on PostgreSQL a % in a glob matches any run of characters"),
    m("sync", "etl/context.py", "if len(days) == 1:", "if len(days) <= 2:", "of two missing days only the first is fetched"),
    m("limiter", "etl/config.py", "analytics_requests_per_minute: int = _setting(64,", "analytics_requests_per_minute: int = _setting(65,",
      "the analytics series go out at 65 requests a minute, over the API's 64"),
    m("limiter", "etl/analytics.py", "if len(self._ends) < self._limit:", "if len(self._ends) <= self._limit:", "one request more than the limit in a minute"),
    m("limiter", "etl/analytics.py", "rate_window: float = 60.0,", "rate_window: float = 59.0,", "64 requests in 59 seconds"),
    # -- analytics writes: held until every series has answered, abandoned with /activity, one bound on requests in flight
    m("analytics writes", "etl/analytics.py", "        self.holding = True  # from the start", "        self.holding = False  # from the start",
      "series answered early are committed before a refusal can still come"),
    m("analytics writes", "etl/analytics.py", "            held.close()  # closing a connection in a transaction rolls it back",
      "            held.commit()\n            held.close()", "a refusal commits the series already written instead of rolling them back"),
    m("analytics writes", "etl/analytics.py", "                             gate.refuse, in_flight)", "                             gate.refuse, None)",
      "each series has analytics_concurrency requests in flight of its own"),
    m("analytics writes", S, "        if analytics is not None and report.error is None:", "        if analytics is not None:",
      "the analytics fetched beside a failed /activity are written anyway"),
    # -- analytics rows: completed in place and bound by position on the writing thread
    m("analytics rows", "etl/analytics.py", '    if "subject" not in given:', "    if True:",
      "an app's title is overwritten by the series' subject '*'"),
    m("analytics rows", "etl/analytics.py", "            label = row.pop(LABEL, None)", "            label = row.get(LABEL)",
      "the label dimension stays in the rows (and the writer's SQL names only table columns)"),
    m("analytics rows", "etl/analytics.py", "        if len(set(models)) < len(models):", "        if False:",
      "one model under two labels of a key is stored twice, the split between them guessed"),
    m("analytics rows", "etl/analytics.py", "    tail = tuple(stamp[name] if process is None else process(stamp[name])",
      "    tail = tuple(stamp[name] if True else process(stamp[name])", "the stamp is bound without its column's processor"),
    # -- a first sync's series, fetching before its warehouse exists
    m("analytics writes", "etl/cli.py", "    if trigger != \"sync\" or not settings.analytics_series or not new_sqlite_file(app.config.warehouse_url):",
      "    if True:", "a first sync's series wait for its warehouse to be created and migrated"),
    m("analytics writes", S, "    if analytics is not None and analytics.today != today:", "    if False:",
      "a series run started before midnight is written a day short"),
    m("analytics writes", "etl/cli.py", "                    early.abandon()  # the warehouse could not be made", "                    pass  # the warehouse could not be made",
      "a first sync whose warehouse cannot be made leaves its series fetching"),
    # -- analytics answers: the compiled fast path and the row by row checks behind it
    m("analytics", VA, "COUNT: cs.int_schema(strict=True, ge=0, le=MAX_COUNT)", "COUNT: cs.int_schema(ge=0, le=MAX_COUNT)",
      "a count sent as a string or 12.5 is accepted by the fast path, unchecked"),
    m("analytics", VA, "cs.float_schema(strict=True, allow_inf_nan=False, ge=0)", "cs.float_schema(strict=True, allow_inf_nan=False)",
      "a negative latency is stored"),
    m("analytics", VA, "AMOUNT: cs.nullable_schema(cs.float_schema(strict=True, allow_inf_nan=False))",
      "AMOUNT: cs.nullable_schema(cs.float_schema(strict=True))", "an infinite cost is stored"),
    m("analytics", VA, 'return "" if value is None else value', 'return value',
      "the unset bucket (no app, no variant) is stored as NULL on the fast path, not as ''"),
    m("analytics", VA, "validation_alias=f\"date__{granularity}\"", "validation_alias=\"date__hour\"",
      "every usual answer falls back to the slow path (or reads the wrong bucket)"),
    m("analytics", VA, "if isinstance(document, CheckedAnswer) and document.shape != _shape(dimensions, metrics, granularity):",
      "if False:", "an answer checked for other metrics is read as rows with missing values"),
    m("analytics", VA, "            parsed = row  # already the stored form", "            parsed = {**row, \"date\": day[:7]}",
      "the fast path's rows land on the wrong day"),
    m("analytics", VA, "if metrics[name] == COUNT and twin[name] > MAX_COUNT:", "if False:",
      "app rows that add up beyond the column's range crash the load instead of rejecting the day"),
    m("analytics", VA, "return len(days), date.fromisoformat(min(days)) if days else None",
      "return len(days) + 1, date.fromisoformat(min(days)) if days else None", "a truncated answer's days are miscounted"),
    m("analytics", VA, "    except OverflowError:  # an integer beyond any double\n        number = math.inf",
      "    except OverflowError:  # an integer beyond any double\n        raise", "a cost too large for a double crashes the sync"),
    # -- exit codes
    m("exit codes", "etl/errors.py", "    exit_code = 1\n", "    exit_code = 0\n", "a failed sync exits 0"),
    m("exit codes", "etl/errors.py", "    exit_code = 2\n", "    exit_code = 1\n", "a configuration error exits 1, not 2"),
    m("exit codes", "etl/errors.py", "exit_code = 75", "exit_code = 1", "a busy warehouse exits 1, not 75"),
    m("exit codes", "etl/errors.py", "    exit_code = 2\n", "    exit_code = 1\n", "a bad report argument exits 1, not 2", nth=2),
    m("exit codes", "etl/errors.py", "    exit_code = 1\n", "    exit_code = 2\n", "a refused SQL statement exits 2, not 1", nth=2),
    m("exit codes", X, '"Interrupted.", 130,', '"Interrupted.", 1,', "Ctrl-C exits 1, not 130"),
    m("exit codes", X, "(run with --debug for details)\", 1,", "(run with --debug for details)\", 0,", "an unexpected error exits 0"),
    m("exit codes", X, "    report = _run_and_report(app, \"sync\", _plan_sync, subject_plan=subject_plan)\n    if not report.ok:\n        sys.exit(1)",
      "    report = _run_and_report(app, \"sync\", _plan_sync, subject_plan=subject_plan)\n    if not report.ok:\n        sys.exit(0)", "sync exits 0 when a day was rejected"),
    m("exit codes", X, "    report = _run_and_report(app, \"backfill\", lambda _e, _c: plan_backfill(utc_today(), days))\n    if not report.ok:\n        sys.exit(1)",
      "    report = _run_and_report(app, \"backfill\", lambda _e, _c: plan_backfill(utc_today(), days))\n    if not report.ok:\n        sys.exit(0)", "backfill exits 0 when a day was rejected"),
    m("exit codes", X, "if check and (not report.healthy or over_budget):\n        sys.exit(1)", "if check and (not report.healthy or over_budget):\n        sys.exit(0)", "status --check exits 0 on a stale archive"),
    m("exit codes", X, "    if report.error:\n        raise ArchiveError(report.error)", "    if False:\n        raise ArchiveError(report.error)", "a failed request is not reported on stderr"),
)

# Fast-first test selections: -x stops at the first failure, so a killed mutant is cheap.
_E2E = "tests/test_sync_cli.py"
TESTS: dict[str, list[str]] = {
    "validate": ["tests/test_validate.py", "tests/test_oracle_validate.py", "tests/test_reliability.py::test_hostile_items_are_loaded_exactly_or_rejected", _E2E, "tests/test_oracle_sync.py", "tests/test_breakdowns.py"],
    "warehouse": ["tests/test_warehouse.py", "tests/test_oracle_warehouse.py", _E2E, "tests/test_oracle_sync.py", "tests/test_breakdowns.py", "tests/test_oracle_status.py"],
    "sync": ["tests/test_mutants_sync.py", "tests/test_plan.py", "tests/test_oracle_sync.py", _E2E, "tests/test_breakdowns.py", "tests/test_daemon.py"],
    "query": ["tests/test_mutants_query.py", "tests/test_report.py", "tests/test_oracle_report.py", "tests/test_breakdowns.py"],
    "status": ["tests/test_plan.py", "tests/test_oracle_status.py", _E2E, "tests/test_breakdowns.py", "tests/test_daemon.py"],
    "client": ["tests/test_client.py", "tests/test_oracle_client.py", _E2E, "tests/test_breakdowns.py"],
    "db": ["tests/test_warehouse.py", "tests/test_oracle_sql.py", "tests/test_report.py", "tests/test_oracle_report.py"],
    "summaries": ["tests/test_mutants_summaries.py", "tests/test_summaries_exact.py", "tests/test_summaries_status.py", "tests/test_report.py"],
    "rawstore": ["tests/test_mutants_rawstore.py", "tests/test_hspeed_raw.py", "tests/test_storage_raw.py", "tests/test_warehouse.py"],
    "limiter": ["tests/test_mutants_limiter.py", "tests/test_hfetch_fetch.py", "tests/test_analytics_sync.py"],
    "analytics": ["tests/test_analytics_validate.py", "tests/test_analytics_sync.py", "tests/test_hfetch_fetch.py"],
    "analytics writes": ["tests/test_hfetch_fetch.py", "tests/test_analytics_sync.py"],
    "analytics rows": ["tests/test_analytics_rows.py", "tests/test_analytics_sync.py"],
    "exit codes": ["tests/test_oracle_exit.py", _E2E, "tests/test_report.py", "tests/test_daemon.py", "tests/test_breakdowns.py"],
}
# Slow and beside the point of any mutant here (charts, a 3 s stall, load, big SIGTERM runs).
DESELECT = [
    "tests/test_report.py::test_pdf_has_a_summary_page_and_one_page_per_group",
    "tests/test_report.py::test_png_is_the_chart_alone",
    "tests/test_sync_cli.py::test_each_transient_fault_is_retried_to_success[slow]",
    "tests/test_sync_cli.py::test_demo_needs_no_key_and_no_setup",
    # Timing-sensitive in the original suite (flaky on a loaded machine); no mutant here touches it.
    "tests/test_breakdowns.py::test_pacer_spaces_request_starts",
]
MODULES = list(TESTS)
# Where --auto draws its sample of operator mutants from, per module.
FILES = {"validate": [V], "warehouse": [W], "sync": [S], "query": [Q], "status": [ST], "client": [C], "db": [D],
         "exit codes": ["etl/errors.py", "etl/lock.py"], "summaries": ["etl/summaries.py"], "rawstore": ["etl/rawstore.py"],
         "limiter": ["etl/analytics.py"], "analytics": ["etl/validate_analytics.py"],
         "analytics writes": ["etl/analytics.py"], "analytics rows": ["etl/analytics.py"]}

_SWAPS: dict[type, type] = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                            ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}


def operator_mutants(module: str, count: int) -> list[Mutant]:
    """A fixed sample (seeded by the file name) of mechanical mutants: a comparison flipped at
    its boundary or negated, ``and``/``or`` swapped, ``not`` dropped, an integer off by one.

    They are not chosen by hand, so their score is a check on the hand-made list's.
    """
    import random

    found: list[Mutant] = []
    for path in FILES[module]:
        source = (ROOT / path).read_text()
        tree = ast.parse(source)
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for n in ast.walk(node)}
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) and node.body
                      and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if id(node) in skip or id(node) in docstrings or not hasattr(node, "lineno"):
                continue
            old = ast.get_source_segment(source, node)
            if old is None or "\n" in old:
                continue
            replacement = None
            if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _SWAPS:
                replacement = ast.Compare(node.left, [_SWAPS[type(node.ops[0])]()], node.comparators)
            elif isinstance(node, ast.BoolOp):
                replacement = ast.BoolOp(ast.Or() if isinstance(node.op, ast.And) else ast.And(), node.values)
            elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
                replacement = node.operand
            elif isinstance(node, ast.Constant) and type(node.value) is int:
                replacement = ast.Constant(node.value + 1)
            if replacement is None:
                continue
            new = ast.unparse(replacement)
            new = new if isinstance(node, ast.Constant) else f"({new})"
            nth = _occurrence(source, old, _offset(source, node.lineno, node.col_offset))
            found.append(Mutant(module, path, old, new, f"auto: {old!r} -> {new!r}", nth))
    return sorted(random.Random(module).sample(found, min(count, len(found))), key=lambda mu: (mu.path, mu.why))


def _offset(source: str, line: int, col: int) -> int:
    """The character offset of an AST position (``col`` counts UTF-8 bytes)."""
    lines = source.splitlines(keepends=True)
    return sum(len(text) for text in lines[: line - 1]) + len(lines[line - 1].encode()[:col].decode())


def _occurrence(source: str, text: str, start: int) -> int:
    """Which occurrence of ``text`` (1-based) begins at ``start``."""
    n, at = 0, -1
    while True:
        at = source.find(text, at + 1)
        if at < 0 or at > start:
            return max(n, 1)
        n += 1
        if at == start:
            return n


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed, survived, timeout, stale, invalid
    line: int = 0
    seconds: float = 0.0
    detail: str = ""


def apply(source: str, mutant: Mutant) -> tuple[str, int] | None:
    """The mutated source and the 1-based line of the change, or None when ``old`` is gone."""
    start = -1
    for _ in range(mutant.nth):
        start = source.find(mutant.old, start + 1)
        if start < 0:
            return None
    return source[:start] + mutant.new + source[start + len(mutant.old) :], source.count("\n", 0, start) + 1


def copy_tree(target: Path, tests_from: str | None) -> None:
    ignore = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".hypothesis", ".pytest_cache", "*.db", "*.db-*", "*.egg-info")
    shutil.copytree(ROOT, target, ignore=ignore, dirs_exist_ok=True)
    if tests_from:
        # Measure the tests as they were at a commit, against today's code.
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", tests_from, "tests", "scripts/reliability_report.py"],
                                 check=True, capture_output=True).stdout
        shutil.rmtree(target / "tests")
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")


def environment(tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENROUTER_", "PYTEST_"))}
    env["PYTHONPATH"] = str(tree)  # before site-packages: the copy, not the editable install
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a same-size mutant within a second must not reuse a stale .pyc
    return env


def pytest_command(tree: Path, module: str) -> list[str]:
    selected = [t for t in TESTS[module] if (tree / t.split("::")[0]).exists()]
    deselect = [arg for d in DESELECT for arg in ("--deselect", d)]
    return [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow",
            "--hypothesis-seed=0", *deselect, *selected]


def run_tests(tree: Path, module: str, timeout: float, full: bool = False) -> tuple[str, float, str]:
    shutil.rmtree(tree / ".hypothesis", ignore_errors=True)  # no failing example carried from one mutant to the next
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mutant-pycache-") as cache:
        # The suite lets its CLI subprocesses write bytecode (tests/conftest.py): into a
        # folder of this mutant's own, so that no later mutant can load it.
        env = {**environment(tree), "PYTHONPYCACHEPREFIX": cache}
        try:
            done = subprocess.run(pytest_command(tree, module), cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", time.monotonic() - started, ""
    seconds = time.monotonic() - started
    if done.returncode == 0:
        return "survived", seconds, ""
    lines = done.stdout.strip().splitlines()
    failed = next((line for line in lines if line.startswith(("FAILED", "ERROR"))), lines[-1] if lines else "")
    return "killed", seconds, failed if not full else "\n".join(lines[-60:] + done.stderr.strip().splitlines()[-20:])


def audit(module: str, mutants: list[Mutant], tests_from: str | None, timeout: float | None, verbose: bool) -> list[Outcome]:
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        tree = Path(tmp)
        copy_tree(tree, tests_from)
        where = subprocess.run([sys.executable, "-c", "import etl; print(etl.__file__)"], cwd=tree, env=environment(tree),
                               capture_output=True, text=True, check=True).stdout.strip()
        if not where.startswith(str(tree)):
            raise SystemExit(f"the copy is not what the tests import ({where}); refusing to go on")
        status, seconds, detail = run_tests(tree, module, timeout or 1800, full=True)
        if status != "survived":
            raise SystemExit(f"{module}: the unmutated tests do not pass ({status}); fix that first:\n{detail}")
        limit = timeout or max(120.0, 3 * seconds + 30)
        print(f"{module}: {len(mutants)} mutant(s); the unmutated selection passes in {seconds:.0f}s; timeout {limit:.0f}s", flush=True)
        for mutant in mutants:
            path = tree / mutant.path
            original = path.read_text()
            applied = apply(original, mutant)
            if applied is None:
                outcomes.append(Outcome(mutant, "stale"))
                continue
            source, line = applied
            try:
                ast.parse(source)
            except SyntaxError as exc:
                outcomes.append(Outcome(mutant, "invalid", line, detail=str(exc)))
                continue
            path.write_text(source)
            try:
                status, seconds, detail = run_tests(tree, module, limit)
            finally:
                path.write_text(original)
            outcome = Outcome(mutant, status, line, seconds, detail)
            outcomes.append(outcome)
            if verbose:
                print(f"  {status:8} {seconds:5.0f}s  {mutant.path}:{line}  {mutant.why}" + (f"  [{detail}]" if detail else ""), flush=True)
    return outcomes


def score(outcomes: list[Outcome]) -> tuple[int, int]:
    counted = [o for o in outcomes if o.status in ("killed", "survived", "timeout")]
    return sum(o.status != "survived" for o in counted), len(counted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--module", action="append", choices=MODULES, help="only this module (repeatable; default: all)")
    parser.add_argument("--list", action="store_true", help="print the mutants and check they apply; run nothing")
    parser.add_argument("--tests-from", metavar="REV", help="use tests/ and scripts/reliability_report.py as of this git revision")
    parser.add_argument("--timeout", type=float, help="seconds per mutant (default: 3 x the unmutated run + 30 s, at least 120 s)")
    parser.add_argument("--threshold", type=float, default=90.0, help="minimum score per module, in percent")
    parser.add_argument("-q", "--quiet", action="store_true", help="no line per mutant while running")
    parser.add_argument("--auto", type=int, default=0, metavar="N",
                        help="also N mechanical operator mutants per module, sampled with a fixed seed, scored apart")
    parser.add_argument("--only-auto", action="store_true", help="with --auto: skip the hand-made list")
    args = parser.parse_args()
    modules = args.module or MODULES

    chosen = {module: [mu for mu in MUTANTS if mu.module == module and not args.only_auto] + operator_mutants(module, args.auto)
              for module in modules}
    if args.list:
        for module in modules:
            for mutant in chosen[module]:
                applied = apply((ROOT / mutant.path).read_text(), mutant)
                where = f"{mutant.path}:{applied[1]}" if applied else f"{mutant.path}: STALE (text not found)"
                print(f"{module:10}  {where:24}  {mutant.why}")
        return 0

    results = {module: audit(module, chosen[module], args.tests_from, args.timeout, not args.quiet) for module in modules}
    print()
    print(f"{'module':12} {'killed':>7} {'of':>4} {'score':>7}" + ("   auto sample" if args.auto else ""))
    ok = True
    for module, outcomes in results.items():
        fixed = [o for o in outcomes if not o.mutant.why.startswith("auto:")]
        killed, counted = score(fixed)
        pct = 100.0 * killed / counted if counted else 100.0
        ok = ok and pct >= args.threshold
        extra = ", ".join(f"{sum(o.status == s for o in fixed)} {s}" for s in ("stale", "invalid") if any(o.status == s for o in fixed))
        auto = score([o for o in outcomes if o.mutant.why.startswith("auto:")])
        print(f"{module:12} {killed:7} {counted:4} {pct:6.1f}%" + (f"   {auto[0]}/{auto[1]}" if args.auto else "")
              + (f"  ({extra})" if extra else ""))
    fixed_all = [o for outcomes in results.values() for o in outcomes if not o.mutant.why.startswith("auto:")]
    killed, counted = score(fixed_all)
    print(f"{'all':12} {killed:7} {counted:4} {100.0 * killed / max(counted, 1):6.1f}%")
    survivors = [o for outcomes in results.values() for o in outcomes if o.status in ("survived", "stale", "invalid")]
    if survivors:
        print("\nsurvivors (and mutants that no longer apply):")
        for o in survivors:
            print(f"  {o.status:8} {o.mutant.module:10} {o.mutant.path}:{o.line or '?'}  {o.mutant.why}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
