"""Reports and read-only SQL: every format agrees with a hand-written SQL sum."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from conftest import query
from etl import migrate, warehouse
from etl.db import open_engine
from etl.query import BREAKDOWN_DIMENSIONS, DIMENSIONS, METRICS, OTHER, ReportSpec, last_range, run_report
from oracle import REPORT_METRICS, TIME_GROUPS, expected_groups

NOW = datetime(2026, 4, 1, tzinfo=timezone.utc)
ENDPOINTS = [
    ("e-gpt", "openai/gpt-4.1", "OpenAI"),
    ("e-gpt-az", "openai/gpt-4.1", "Azure"),
    ("e-o3", "openai/o3", "OpenAI"),
    ("e-son", "anthropic/claude-sonnet-4", "Anthropic"),
    ("e-son-br", "anthropic/claude-sonnet-4", "Amazon Bedrock"),
    ("e-gem", "google/gemini-2.5-pro", "Google Vertex"),
    ("e-ds", "deepseek/deepseek-chat", "DeepSeek"),
]
RAW_METRICS = "sum(usage), sum(byok_usage_inference), sum(requests), sum(prompt_tokens), sum(completion_tokens), sum(reasoning_tokens)"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = open_engine(f"sqlite:///{tmp_path_factory.mktemp('report') / 'archive.db'}")
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


def load(engine, rows):
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM activity"))
        conn.execute(text("DELETE FROM archived_days"))
    by_day: dict[str, list] = {}
    for r in rows:
        by_day.setdefault(r["date"], []).append(r)
    for day, day_rows in by_day.items():
        with engine.begin() as conn:
            warehouse.save_day(conn, day, day_rows, now=NOW)


row_strategy = st.builds(
    lambda day, endpoint, usage, byok, req, p, c, r, cached: {
        "date": (date(2026, 1, 1) + timedelta(days=day)).isoformat(),
        "endpoint_id": endpoint[0], "model": endpoint[1], "model_permaslug": endpoint[1] + "-v1", "provider_name": endpoint[2],
        "usage": usage, "byok_usage_inference": byok, "requests": req, "prompt_tokens": p, "completion_tokens": c,
        "reasoning_tokens": r, "cached_tokens": cached,
    },
    st.integers(0, 89), st.sampled_from(ENDPOINTS),
    st.floats(0, 500, allow_nan=False), st.one_of(st.just(0.0), st.floats(0, 50, allow_nan=False)),
    st.integers(0, 10_000), st.integers(0, 10**9), st.integers(0, 10**8), st.integers(0, 10**8),
    st.one_of(st.none(), st.integers(0, 10**6)),
)
archives = st.lists(row_strategy, max_size=120).map(lambda rows: list({(r["date"], r["endpoint_id"]): r for r in rows}.values()))
ACCOUNT_GROUPS = [d for d in DIMENSIONS if d not in BREAKDOWN_DIMENSIONS]  # the breakdowns have their own tests
group_bys = st.one_of(
    st.tuples(st.sampled_from(ACCOUNT_GROUPS)),
    st.tuples(st.sampled_from(ACCOUNT_GROUPS), st.sampled_from(ACCOUNT_GROUPS)).filter(lambda g: g[0] != g[1]),
)
day_strings = st.integers(0, 95).map(lambda d: (date(2025, 12, 29) + timedelta(days=d)).isoformat())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=archives, group_by=group_bys, since=st.none() | day_strings, until=st.none() | day_strings,
       model=st.sampled_from([None, "openai/gpt-4.1", "openai/*", "*sonnet*"]), top=st.none() | st.integers(1, 4))
def test_report_totals_equal_raw_sql_sums(engine, rows, group_by, since, until, model, top):
    if since and until and since > until:
        since, until = until, since
    load(engine, rows)
    spec = ReportSpec(group_by, since, until, (model,) if model else (), (), top)
    where, params = ["1 = 1"], []
    if since:
        where.append("date >= ?"), params.append(since)
    if until:
        where.append("date <= ?"), params.append(until)
    if model:
        where.append("model GLOB ?"), params.append(model)
    with engine.connect() as conn:
        report = run_report(conn, spec)
        raw = conn.exec_driver_sql(f"SELECT {RAW_METRICS} FROM activity WHERE {' AND '.join(where)}", tuple(params)).one()
    expected = [v or 0 for v in raw]
    names = ["usage", "byok_usage_inference", "requests", "prompt_tokens", "completion_tokens", "reasoning_tokens"]
    for name, want in zip(names, expected):
        assert report.totals[name] == pytest.approx(want, abs=1e-6)
        summed = sum(r[name] for r in report.rows)
        if name in ("usage", "byok_usage_inference"):
            assert summed == pytest.approx(want, abs=1e-6)  # well inside a cent; only float order differs
        else:
            assert summed == want
    keys = [tuple(r[g] for g in group_by) for r in report.rows]
    assert len(keys) == len(set(keys))

    # Per group, labels and every metric, against sums made here from the generated rows.
    groups = expected_groups(rows, group_by, since, until, (model,) if model else ())
    for name in REPORT_METRICS:
        assert report.totals[name] == pytest.approx(sum(g[name] for g in groups.values()), abs=1e-6), name
    got = {tuple(r[g] for g in group_by): r for r in report.rows}
    if top is None:
        assert set(got) == set(groups)
        for key, want in groups.items():
            assert_metrics(got[key], want, key)
    else:
        ranking: dict = {}
        for key, sums in groups.items():
            ranking[key[-1]] = ranking.get(key[-1], 0.0) + sums["usage"]
        kept = {k[-1] for k in got} - {OTHER}
        assert len(kept) == min(top, len(ranking))
        folded = set(ranking) - kept
        assert all(ranking[k] >= ranking[f] - 1e-9 for k in kept for f in folded)  # the biggest are kept
        others: dict = {}
        for key, sums in groups.items():
            if key[-1] in kept:
                assert_metrics(got[key], sums, key)
            else:
                other = others.setdefault((*key[:-1], OTHER), dict.fromkeys(REPORT_METRICS, 0))
                for name in REPORT_METRICS:
                    other[name] += sums[name]
        assert set(got) == {k for k in groups if k[-1] in kept} | set(others)
        for key, want in others.items():
            assert_metrics(got[key], want, key)
    assert_default_order(report.rows, group_by)


def assert_metrics(got, want, key):
    for name in REPORT_METRICS:
        if name in ("usage", "byok_usage_inference"):
            assert got[name] == pytest.approx(want[name], abs=1e-6), (key, name)
        else:
            assert got[name] == want[name], (key, name)


def assert_default_order(rows, group_by):
    """Time first: chronological blocks, biggest spend first within a block; else biggest spend first; `other` last."""
    def rank(r):
        return (r[group_by[-1]] == OTHER, -r["usage"])

    keys = [((r[group_by[0]],) if group_by[0] in TIME_GROUPS else ()) + rank(r) for r in rows]
    if group_by[0] in TIME_GROUPS and len(group_by) == 1:
        keys = [(r[group_by[0]],) for r in rows]
    assert keys == sorted(keys), [tuple(r[g] for g in group_by) for r in rows]


def test_iso_week_groups_match_python(engine):
    # Year ends with a week 53, a week 1 that starts in December, and Sunday/Monday edges.
    days = [date(y, m, d) + timedelta(days=k) for y, m, d in ((2020, 12, 26), (2024, 12, 27), (2026, 12, 25), (2027, 12, 29)) for k in range(12)]
    rows = [
        {"date": d.isoformat(), "endpoint_id": "e", "model": "m", "model_permaslug": "m", "provider_name": "P", "usage": 1.0,
         "byok_usage_inference": 0.0, "requests": 1, "prompt_tokens": 1, "completion_tokens": 1, "reasoning_tokens": 0, "cached_tokens": None}
        for d in days
    ]
    load(engine, rows)
    with engine.connect() as conn:
        weeks = {r["week"]: r["requests"] for r in run_report(conn, ReportSpec(("week",))).rows}
    expected: dict[str, int] = {}
    for d in days:
        year, week, _ = d.isocalendar()
        expected[f"{year}-W{week:02d}"] = expected.get(f"{year}-W{week:02d}", 0) + 1
    assert weeks == expected
    assert {"2020-W53", "2021-W01", "2024-W52", "2025-W01", "2026-W53", "2027-W52", "2028-W01"} <= set(weeks)


def test_top_folds_the_rest_into_other(engine):
    load(engine, [
        {"date": "2026-01-01", "endpoint_id": e, "model": m, "model_permaslug": m, "provider_name": p, "usage": float(i + 1),
         "byok_usage_inference": 0.0, "requests": i + 1, "prompt_tokens": 1, "completion_tokens": 1, "reasoning_tokens": 0, "cached_tokens": None}
        for i, (e, m, p) in enumerate(ENDPOINTS)
    ])
    with engine.connect() as conn:
        report = run_report(conn, ReportSpec(("provider",), top=2))
    assert [r["provider"] for r in report.rows] == ["DeepSeek", "Google Vertex", OTHER]
    assert report.rows[-1]["usage"] == sum(range(1, 6))
    assert report.totals["usage"] == sum(range(1, 8))


@pytest.mark.parametrize(
    ("text_", "expected"),
    [("7d", ("2026-03-25", "2026-03-31")), ("4w", ("2026-03-04", "2026-03-31")), ("3m", ("2026-01-01", "2026-03-31")), ("1y", ("2025-04-01", "2026-03-31"))],
)
def test_last_periods_end_yesterday(text_, expected):
    assert last_range(text_, date(2026, 4, 1)) == expected


def test_last_month_arithmetic_clamps_to_month_end():
    assert last_range("1m", date(2026, 3, 31)) == ("2026-02-28", "2026-03-30")


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"group_by": ("colour",)}, "unknown group"),
        ({"group_by": ("model", "provider", "date")}, "one or two"),
        ({"group_by": ("model", "model")}, "twice"),
        ({"since": "2026-02-01", "until": "2026-01-01"}, "inverted"),
        ({"since": "2026-13-01"}, "YYYY-MM-DD"),
        ({"sort": "colour"}, "unknown sort"),
    ],
)
def test_bad_specs_are_refused(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        ReportSpec(**kwargs)


# -- the CLI, on an archive backfilled from the stand-in -----------------------------------


@pytest.fixture
def archive(cli_env, run, warehouse_url):
    assert run("backfill").exit_code == 0
    return warehouse_url


def raw(url, sql):
    """Read the archive apart from the code under test (SQLAlchemy, on either engine)."""
    return query(url, sql)


@pytest.mark.both_backends
def test_csv_json_ndjson_parse_back_and_agree_with_sql(run, archive):
    (usage, byok, requests), = raw(archive, "SELECT sum(usage), sum(byok_usage_inference), sum(requests) FROM activity")
    as_csv = list(csv.DictReader(io.StringIO(run("report", "-g", "provider,model", "-f", "csv").stdout)))
    as_json = json.loads(run("report", "-g", "provider,model", "-f", "json").stdout)
    as_ndjson = [json.loads(line) for line in run("report", "-g", "provider,model", "-f", "ndjson").stdout.splitlines()]
    assert len(as_csv) == len(as_json) == len(as_ndjson) > 5
    assert set(as_json[0]) == {"provider", "model", *METRICS}
    for rows in (as_json, as_ndjson, [{k: float(v) if k in METRICS else v for k, v in r.items()} for r in as_csv]):
        assert round(sum(float(r["usage"]) for r in rows), 2) == round(usage, 2)
        assert round(sum(float(r["byok_usage_inference"]) for r in rows), 2) == round(byok, 2)
        assert sum(int(r["requests"]) for r in rows) == requests


@pytest.mark.both_backends
def test_table_has_a_totals_row_equal_to_sql(run, archive):
    (usage,), = raw(archive, "SELECT sum(usage) FROM activity")
    out = run("report", "-g", "model").stdout
    total_line = next(line for line in out.splitlines() if line.strip().startswith("total"))
    assert f"${usage:,.2f}" in total_line


@pytest.mark.slow
@pytest.mark.both_backends
def test_pdf_has_a_summary_page_and_one_page_per_group(run, archive, tmp_path):
    target = tmp_path / "report.pdf"
    result = run("report", "-g", "provider", "-f", "pdf", "-o", str(target))
    assert result.exit_code == 0, result.output
    providers = raw(archive, "SELECT count(DISTINCT provider_name) FROM activity")[0][0]
    pdf = target.read_bytes()
    assert pdf.startswith(b"%PDF")
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1 + providers
    assert f"({1 + providers} page(s))" in result.stderr


@pytest.mark.both_backends
def test_png_is_the_chart_alone(run, archive, tmp_path):
    target = tmp_path / "chart.png"
    assert run("report", "-f", "png", "-o", str(target)).exit_code == 0
    assert target.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.both_backends
def test_filters_and_terminal_chart(run, archive):
    models = [m for (m,) in raw(archive, "SELECT DISTINCT model FROM activity WHERE model LIKE 'openai/%'")]
    assert len(models) >= 2  # the stand-in's account uses several OpenAI models: the filter has something to keep
    out = json.loads(run("report", "--model", "openai/*", "-f", "json").stdout)
    assert sorted(r["model"] for r in out) == sorted(models)
    (day, requests), = raw(archive, "SELECT date, sum(requests) FROM activity WHERE date = (SELECT max(date) FROM activity) GROUP BY date")
    one_day = json.loads(run("report", "-g", "date", "--since", day, "--until", day, "-f", "json").stdout)
    assert [(r["date"], r["requests"]) for r in one_day] == [(day, requests)]
    yesterday = (datetime.now(timezone.utc).date() - timedelta(days=1))
    week = [(yesterday - timedelta(days=k)).isoformat() for k in range(6, -1, -1)]
    want = [(d, n) for d, n in raw(archive, "SELECT date, sum(requests) FROM activity GROUP BY date ORDER BY date") if d in week]
    last_7d = json.loads(run("report", "-g", "date", "--last", "7d", "-f", "json").stdout)
    assert len(want) >= 5 and [(r["date"], r["requests"]) for r in last_7d] == want
    spend = raw(archive, "SELECT provider_name, sum(usage) FROM activity GROUP BY 1 ORDER BY 2 DESC")
    chart = run("report", "-g", "provider", "--chart").stdout
    bars = chart.split("spend by provider\n", 1)[1].splitlines()
    assert len(bars) == len(spend) > 5  # one bar per provider, biggest first, each with its amount
    for line, (provider, usage) in zip(bars, spend):
        assert line.startswith(provider + " ") and line.endswith(f"${usage:,.2f}"), line
    assert "█" * 40 in bars[0]


@pytest.mark.both_backends
def test_empty_range_is_an_empty_report_not_an_error(run, archive):
    result = run("report", "--since", "2001-01-01", "--until", "2001-01-31", "-f", "json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    table = run("report", "--since", "2001-01-01", "--until", "2001-01-31")
    assert "$0.00" in table.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-g", "colour"], "unknown group"),
        (["--since", "2026-05-01", "--until", "2026-04-01"], "inverted"),
        (["--since", "yesterday"], "YYYY-MM-DD"),
        (["--last", "fortnight"], "7d, 4w, 3m or 1y"),
        (["--last", "7d", "--since", "2026-01-01"], "cannot be combined"),
        (["--metric", "vibes"], "unknown metric"),
        (["-f", "xml"], "Invalid value"),
    ],
)
def test_bad_arguments_exit_2_with_a_clear_error(run, archive, args, needle):
    result = run("report", *args)
    assert result.exit_code == 2
    assert needle in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.both_backends
def test_report_before_any_sync_says_what_to_do(run, cli_env):
    result = run("report")
    assert result.exit_code == 1 and "run `openrouter-archive sync` first" in result.stderr


@pytest.mark.both_backends
def test_views_answer_the_common_questions(run, archive):
    (usage,), = raw(archive, "SELECT sum(usage) FROM activity")
    monthly = json.loads(run("sql", "SELECT sum(spend_usd) AS s FROM monthly_spend", "-f", "json").stdout)
    assert monthly[0]["s"] == pytest.approx(usage)
    for view in ("daily_spend", "monthly_spend_by_model", "spend_by_provider"):
        result = run("sql", f"SELECT count(*) FROM {view}", "-f", "csv")
        assert result.exit_code == 0 and int(result.stdout.splitlines()[1]) > 0


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO activity (date) VALUES ('2000-01-01')",
        "UPDATE activity SET usage = 0",
        "DELETE FROM activity",
        "DROP TABLE activity",
        "CREATE TABLE evil (x)",
        "CREATE TEMP TABLE evil (x)",
        "ATTACH DATABASE '{tmp}/other.db' AS other",
        "VACUUM INTO '{tmp}/copy.db'",
        "VACUUM",
        "PRAGMA user_version = 42",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA query_only = 0",
        "REINDEX",
        "BEGIN IMMEDIATE",
    ],
)
def test_sql_refuses_every_write(run, archive, tmp_path, statement):
    before = raw(archive, "SELECT count(*), sum(usage) FROM activity") + raw(archive, "PRAGMA user_version")
    result = run("sql", statement.format(tmp=tmp_path))
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.output
    assert raw(archive, "SELECT count(*), sum(usage) FROM activity") + raw(archive, "PRAGMA user_version") == before
    assert not (tmp_path / "other.db").exists() and not (tmp_path / "copy.db").exists()
    assert raw(archive, "SELECT name FROM sqlite_master WHERE name = 'evil'") == []


def test_sql_reads_and_formats(run, archive):
    result = run("sql", "SELECT provider_name, count(*) AS n FROM activity GROUP BY 1 ORDER BY 1", "-f", "csv")
    assert result.exit_code == 0
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["provider_name", "n"] and len(rows) > 2
    assert run("sql", "PRAGMA table_info(activity)").exit_code == 0
    bad = run("sql", "SELEC 1")
    assert bad.exit_code == 1 and "syntax error" in bad.stderr
