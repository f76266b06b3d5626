"""Reports, value by value: labels, ordering, filters and buckets against sums made here.

The archive is written with the product's own loader (real SQLite, real migrations); the
expected groups come from ``oracle.expected_groups``, which reads the rows as given.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from etl import migrate, warehouse
from etl.db import open_engine
from etl.query import OTHER, ReportSpec, key_names, pick_bucket, run_report
from oracle import REPORT_METRICS, expected_groups, group_label

NOW = datetime(2027, 2, 1, tzinfo=timezone.utc)


def row(day, endpoint="e1", model="openai/gpt-4.1", provider="OpenAI", *, permaslug=None, usage=1.0, byok=0.0, requests=1,
        prompt=10, completion=5, reasoning=0, cached=None):
    return {"date": day, "endpoint_id": endpoint, "model": model, "model_permaslug": permaslug or model + "-2025",
            "provider_name": provider, "usage": usage, "byok_usage_inference": byok, "requests": requests,
            "prompt_tokens": prompt, "completion_tokens": completion, "reasoning_tokens": reasoning, "cached_tokens": cached}


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = open_engine(f"sqlite:///{tmp_path_factory.mktemp('oracle-report') / 'archive.db'}")
    migrate.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def load(engine):
    def load(rows):
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM activity"))
            conn.execute(text("DELETE FROM archived_days"))
        by_day: dict[str, list] = {}
        for r in rows:
            by_day.setdefault(r["date"], []).append(r)
        for day, day_rows in by_day.items():
            with engine.begin() as conn:
                warehouse.save_day(conn, day, day_rows, now=NOW)
        return rows

    return load


def report(engine, **spec):
    with engine.connect() as conn:
        return run_report(conn, ReportSpec(**spec))


def labels(result):
    return [tuple(r[g] for g in result.spec.group_by) for r in result.rows]


# Newest days spend the most, so that a report sorted by spend would come out reversed.
SPREAD = ["2025-12-29", "2026-01-04", "2026-01-05", "2026-02-28", "2026-03-01", "2026-12-31", "2027-01-01"]


@pytest.mark.parametrize("group", ["date", "week", "month", "year"])
def test_time_groups_come_oldest_first_with_their_labels(engine, load, group):
    rows = load([row(d, usage=float(i + 1), requests=i + 1) for i, d in enumerate(reversed(SPREAD))][::-1])
    result = report(engine, group_by=(group,))
    want = sorted({group_label(r, group) for r in rows})
    assert labels(result) == [(w,) for w in want]
    expected = expected_groups(rows, (group,))
    assert {r[group]: r["requests"] for r in result.rows} == {k[0]: v["requests"] for k, v in expected.items()}


def test_time_then_model_comes_in_chronological_blocks_biggest_first(engine, load):
    rows = load([
        row("2026-01-10", "e1", "a/small", usage=1.0), row("2026-01-10", "e2", "b/big", usage=5.0),
        row("2026-02-10", "e1", "a/small", usage=9.0), row("2026-02-10", "e2", "b/big", usage=2.0),
        row("2025-12-10", "e3", "c/only", usage=0.5),
    ])
    result = report(engine, group_by=("month", "model"))
    assert labels(result) == [("2025-12", "c/only"), ("2026-01", "b/big"), ("2026-01", "a/small"), ("2026-02", "a/small"), ("2026-02", "b/big")]
    assert {k: v["usage"] for k, v in expected_groups(rows, ("month", "model")).items()} == {tuple(r[g] for g in ("month", "model")): r["usage"] for r in result.rows}


def test_non_time_groups_come_biggest_first_and_asc_reverses(engine, load):
    load([row("2026-01-01", f"e{i}", f"m/{name}", usage=u) for i, (name, u) in enumerate([("b", 2.0), ("a", 3.0), ("c", 1.0)])])
    assert labels(report(engine, group_by=("model",))) == [("m/a",), ("m/b",), ("m/c",)]
    assert labels(report(engine, group_by=("model",), ascending=True)) == [("m/c",), ("m/b",), ("m/a",)]
    assert labels(report(engine, group_by=("model",), sort="group")) == [("m/a",), ("m/b",), ("m/c",)]


def test_permaslug_groups_are_labelled_by_permaslug(engine, load):
    rows = load([
        row("2026-01-01", "e1", "openai/gpt-4.1", permaslug="openai/gpt-4.1-2025-04-14", usage=2.0),
        row("2026-01-01", "e2", "openai/gpt-4.1", "Azure", permaslug="openai/gpt-4.1-2025-04-14", usage=1.0),
        row("2026-01-02", "e3", "deepseek/chat:free", "Chutes", permaslug="deepseek/chat-v3", usage=0.0, requests=9),
    ])
    result = report(engine, group_by=("permaslug",))
    assert {r["permaslug"]: (r["usage"], r["requests"]) for r in result.rows} == {
        k[0]: (v["usage"], v["requests"]) for k, v in expected_groups(rows, ("permaslug",)).items()
    } == {"openai/gpt-4.1-2025-04-14": (3.0, 2), "deepseek/chat-v3": (0.0, 9)}
    # By day too: a grain the monthly summaries cannot answer, read from the rows themselves.
    daily = report(engine, group_by=("date", "permaslug"))
    assert {(r["date"], r["permaslug"]): (r["usage"], r["requests"]) for r in daily.rows} == {
        k: (v["usage"], v["requests"]) for k, v in expected_groups(rows, ("date", "permaslug")).items()
    } == {("2026-01-01", "openai/gpt-4.1-2025-04-14"): (3.0, 2), ("2026-01-02", "deepseek/chat-v3"): (0.0, 9)}


def test_every_metric_per_group_including_cached_and_total_tokens(engine, load):
    rows = load([
        row("2026-01-01", "e1", "m/a", usage=0.25, byok=1.5, requests=3, prompt=100, completion=40, reasoning=30, cached=7),
        row("2026-01-02", "e1", "m/a", usage=0.5, byok=0.0, requests=2, prompt=11, completion=13, reasoning=0, cached=None),
        row("2026-01-02", "e2", "m/b", usage=2.0, byok=0.25, requests=1, prompt=1000, completion=1, reasoning=900, cached=999),
    ])
    result = report(engine, group_by=("model",))
    expected = expected_groups(rows, ("model",))
    for r in result.rows:
        assert {m: r[m] for m in REPORT_METRICS} == expected[(r["model"],)]
    a = next(r for r in result.rows if r["model"] == "m/a")
    assert (a["cached_tokens"], a["total_tokens"], a["reasoning_tokens"]) == (7, 164, 30)  # reasoning is part of completion
    assert result.totals["cached_tokens"] == 1006 and result.totals["total_tokens"] == 1165


GLOB_MODELS = ["a_b/x", "axb/x", "a%b/x", "ab/x", "abc/x", "a\\b/x"]


@pytest.mark.parametrize(
    ("pattern", "matches"),
    [
        ("a_b*", ["a_b/x"]),  # _ is a literal character, not SQL's any-one
        ("a?b/x", ["a_b/x", "axb/x", "a%b/x", "a\\b/x"]),  # ? is exactly one character
        ("ab/?", ["ab/x"]),  # a glob of ? alone is still a glob
        ("a%b*", ["a%b/x"]),  # % is literal too
        ("ab?/x", ["abc/x"]),
        ("a*/x", GLOB_MODELS),
        ("*b/x", ["a_b/x", "axb/x", "a%b/x", "ab/x", "a\\b/x"]),
        ("a\\b/x", ["a\\b/x"]),
        ("ab", []),  # exact, not a prefix
    ],
)
def test_globs_match_like_the_readme_says(engine, load, pattern, matches):
    rows = load([row("2026-01-01", f"e{i}", m) for i, m in enumerate(GLOB_MODELS)])
    got = sorted(r["model"] for r in report(engine, group_by=("model",), models=(pattern,)).rows)
    assert got == sorted(matches)
    assert sorted(k[0] for k in expected_groups(rows, ("model",), models=(pattern,))) == sorted(matches)


def test_provider_filter_exact_and_glob(engine, load):
    load([row("2026-01-01", "e1", provider="Google Vertex"), row("2026-01-01", "e2", provider="Google AI Studio"),
          row("2026-01-01", "e3", provider="OpenAI")])
    assert [r["provider"] for r in report(engine, group_by=("provider",), providers=("OpenAI",)).rows] == ["OpenAI"]
    assert sorted(r["provider"] for r in report(engine, group_by=("provider",), providers=("Google*",)).rows) == ["Google AI Studio", "Google Vertex"]
    assert report(engine, group_by=("provider",), providers=("Google",)).rows == []


@pytest.mark.parametrize(
    ("since", "until", "days"),
    [
        ("2026-01-02", "2026-01-02", ["2026-01-02"]),
        ("2026-01-01", "2026-01-03", ["2026-01-01", "2026-01-02", "2026-01-03"]),
        ("2026-01-03", None, ["2026-01-03"]),
        (None, "2026-01-01", ["2026-01-01"]),
        ("2026-01-02", "2026-01-03", ["2026-01-02", "2026-01-03"]),
    ],
)
def test_since_and_until_are_inclusive(engine, load, since, until, days):
    rows = load([row(d, requests=i + 1) for i, d in enumerate(["2026-01-01", "2026-01-02", "2026-01-03"])])
    result = report(engine, group_by=("date",), since=since, until=until)
    assert [r["date"] for r in result.rows] == days
    assert result.totals["requests"] == sum(v["requests"] for v in expected_groups(rows, ("date",), since, until).values())


def test_top_keeps_the_biggest_and_folds_the_rest_per_time_block(engine, load):
    rows = load([
        row("2026-01-01", "e1", "m/big", usage=10.0), row("2026-01-01", "e2", "m/mid", usage=5.0), row("2026-01-01", "e3", "m/small", usage=1.0),
        row("2026-02-01", "e1", "m/big", usage=1.0), row("2026-02-01", "e3", "m/small", usage=2.0), row("2026-02-01", "e4", "m/tiny", usage=0.5),
    ])
    result = report(engine, group_by=("month", "model"), top=2)
    assert labels(result) == [("2026-01", "m/big"), ("2026-01", "m/mid"), ("2026-01", OTHER), ("2026-02", "m/big"), ("2026-02", OTHER)]
    assert [r["usage"] for r in result.rows] == [10.0, 5.0, 1.0, 1.0, 2.5]
    assert result.totals["usage"] == sum(r["usage"] for r in rows)


# -- the time bucket of charts --------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "bucket"), [(0, "date"), (31, "date"), (91, "date"), (92, "date"), (93, "month"), (400, "month")]
)
def test_charts_use_days_for_up_to_three_months_and_months_beyond(days, bucket):
    first = date(2026, 1, 1)
    assert pick_bucket(first.isoformat(), (first + timedelta(days=days)).isoformat()) == bucket


def test_a_chart_without_both_ends_uses_months():
    assert pick_bucket(None, "2026-01-31") == pick_bucket("2026-01-01", None) == pick_bucket(None, None) == "month"


# -- keys ----------------------------------------------------------------------------------


def test_keys_with_the_same_name_are_told_apart_by_label(engine):
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM api_keys"))
        warehouse.save_keys(conn, [
            {"hash": "h1", "name": "CI", "label": "sk-or-v1-aaa...1111"},
            {"hash": "h2", "name": "CI", "label": "sk-or-v1-bbb...2222"},
            {"hash": "h3", "name": "Production", "label": "sk-or-v1-ccc...3333"},
        ], NOW)
    with engine.connect() as conn:
        assert key_names(conn) == {"h1": "CI (sk-or-v1-aaa...1111)", "h2": "CI (sk-or-v1-bbb...2222)", "h3": "Production"}


def test_key_globs_select_keys_by_name(cli_env, run, tmp_path, warehouse_url):
    from conftest import query

    (tmp_path / "config.toml").write_text('[openrouter]\nbackoff_initial = 0.01\n[sync]\nbreakdowns = ["key"]\n')
    assert run("backfill").exit_code == 0
    names = dict(query(warehouse_url, "SELECT name, hash FROM api_keys"))
    per_key = dict(query(warehouse_url, "SELECT api_key_hash, sum(requests) FROM activity_by_key GROUP BY 1"))
    # Key globs are case-sensitive: "*i*" matches Production and Staging, not CI.
    for pattern, chosen in (("Prod*", ["Production"]), ("?taging", ["Staging"]), ("*i*", ["Production", "Staging"]), ("C?", ["CI"])):
        chosen = [n for n in chosen if names.get(n) in per_key]
        out = json.loads(run("report", "--key", pattern, "-g", "key", "-f", "json").stdout)
        assert sorted(r["key"] for r in out) == sorted(chosen), pattern
        assert sum(r["requests"] for r in out) == sum(per_key[names[n]] for n in chosen)
    assert len(per_key) >= 2
