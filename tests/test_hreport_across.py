"""Reports across both sources (issue 10): every group and metric across the /activity boundary.

One account, archived once per backend by a real `sync` against the stand-in over loopback
(/activity with the key, member and workspace breakdowns, and every Analytics API series), is
reported through the real CLI; each figure is compared with sums computed independently from
the stand-in's own generator (its /activity items for the 30 days /activity serves, its
analytics facts for the older days; latency from its analytics endpoint's answer), never
from the warehouse. Both SQLite and PostgreSQL: counts are ints, money floats, equal to the
independent sums far inside a cent.
"""

from __future__ import annotations

import csv
import io
import json
import math
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from conftest import FAST_CONFIG, KEY
from etl.cli import cli
from etl.standin import Dataset, StandIn
from etl.standin.analytics import Analytics, variant_of
from etl.window import completed_window, utc_today

TODAY = utc_today()
SINCE, UNTIL = (TODAY - timedelta(days=365)).isoformat(), (TODAY - timedelta(days=1)).isoformat()
WINDOW_FIRST, _ = completed_window(TODAY)
PROVIDER_FIRST = TODAY - timedelta(days=31)
MONEY = ("usage", "byok_usage_inference", "total_usage_incl_byok", "usage_upstream", "usage_cache", "usage_data")
BASE = ("usage", "byok_usage_inference", "requests", "prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens")
COUNTS = ("requests", "prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens")
EXTRA = "total_usage,usage_upstream,usage_cache,usage_data"
COMPONENTS = ("usage_upstream", "usage_cache", "usage_data")
LATENCY = {"avg_latency_ms": "avg_latency", "p50_latency_ms": "p50_latency", "p90_latency_ms": "p90_latency",
           "p99_latency_ms": "p99_latency", "avg_throughput_tps": "avg_throughput"}

pytestmark = pytest.mark.both_backends


class Archive:
    """The archived account: the stand-in, its generator, and the CLI pointed at the warehouse."""

    def __init__(self, dataset: Dataset, server: StandIn, env: dict[str, str | None], url: str):
        self.dataset, self.server, self.env, self.url = dataset, server, env, url
        self.analytics = server.analytics
        self._pairs: dict[str, set[str]] | None = None

    def run(self, *args: str):
        return CliRunner().invoke(cli, list(args), env=self.env, catch_exceptions=False)

    def report(self, *args: str, fmt: str = "json") -> tuple[list[dict[str, Any]], str]:
        result = self.run("report", *args, "--since", SINCE, "--until", UNTIL, "-f", fmt)
        assert result.exit_code == 0, result.output
        if fmt == "json":
            return json.loads(result.stdout), result.stderr
        return list(csv.DictReader(io.StringIO(result.stdout))), result.stderr


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def archive(request, tmp_path_factory) -> Iterator[Archive]:
    home = tmp_path_factory.mktemp("hreport")
    admin = None
    if request.param == "postgresql":
        server_url = request.getfixturevalue("pg_server")
        name = f"t_{uuid.uuid4().hex[:16]}"
        admin = create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite:///{home / 'archive.db'}"
    # A seed whose day before /activity's window (the provider series' oldest) has activity.
    seed = next(s for s in range(42, 60) if not Dataset(seed=s, anchor=TODAY).is_empty_day(PROVIDER_FIRST))
    dataset = Dataset(seed=seed, anchor=TODAY, keys=3, endpoints_per_day=5, first_key_age_days=400)
    assert dataset.activity(PROVIDER_FIRST)
    config = home / "config.toml"
    config.write_text(FAST_CONFIG + f"""
[sync]
breakdowns = ["key", "member", "workspace"]
members = {json.dumps(list(dataset.user_ids))}
analytics_series = ["account", "provider", "key", "member", "workspace", "app"]
""")
    try:
        # Counts as strings and null components, as the live API may send them: stored as NULL, reported as NULL.
        analytics = Analytics(dataset, string_counts=True, null_components=True)
        with StandIn(dataset, management_key=KEY, analytics=analytics) as server:
            env = {"OPENROUTER_API_KEY": KEY, "OPENROUTER_BASE_URL": server.base_url, "OPENROUTER_ARCHIVE_DB": url,
                   "OPENROUTER_ARCHIVE_CONFIG": str(config), "OPENROUTER_ARCHIVE_ANALYTICS": None,
                   "XDG_CONFIG_HOME": str(home / "xdg-config"), "XDG_DATA_HOME": str(home / "xdg-data")}
            archive = Archive(dataset, server, env, url)
            synced = archive.run("sync")
            assert synced.exit_code == 0, synced.output
            yield archive
    finally:
        if admin is not None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.dispose()


# -- the independent side: the stand-in's generator -----------------------------------------------


def window_days() -> list[date]:
    return [TODAY - timedelta(days=n) for n in range(1, (TODAY - WINDOW_FIRST).days + 1)]


def old_days(first: date = TODAY - timedelta(days=365)) -> list[date]:
    return [d for d in (TODAY - timedelta(days=n) for n in range(1, 366)) if first <= d < WINDOW_FIRST]


def pairs(archive: Archive) -> dict[str, set[str]]:
    """permaslug -> the model ids /activity listed with it in its window (what the archive knows)."""
    if archive._pairs is None:
        out: dict[str, set[str]] = defaultdict(set)
        for day in window_days():
            for item in archive.dataset.activity(day):
                out[item["model_permaslug"]].add(item["model"])
        archive._pairs = dict(out)
    return archive._pairs


def model_of(archive: Archive, permaslug: str, variant: str | None) -> str:
    """The model id a fact of an older day is reported under: by (permaslug, variant) where the
    series has a variant; else the one id of the permaslug, or the permaslug itself."""
    ids = pairs(archive).get(permaslug, set())
    if variant is not None:
        return next((m for m in ids if variant_of(m) == variant), permaslug)
    return next(iter(ids)) if len(ids) == 1 else permaslug


def activity_values(item: dict[str, Any]) -> dict[str, Any]:
    return {"usage": item["usage"], "byok_usage_inference": item["byok_usage_inference"],
            "total_usage_incl_byok": item["usage"] + item["byok_usage_inference"],
            **dict.fromkeys(COMPONENTS), "requests": item["requests"], "prompt_tokens": item["prompt_tokens"],
            "completion_tokens": item["completion_tokens"], "cached_tokens": item.get("cached_tokens") or 0,
            "total_tokens": item["prompt_tokens"] + item["completion_tokens"]}


def fact_values(fact, provider_series: bool = False) -> dict[str, Any]:
    v = fact.values
    return {"usage": v["credits_usage"], "byok_usage_inference": v["byok_usage"], "total_usage_incl_byok": v["total_usage"],
            **{c: None if provider_series else v[c] for c in COMPONENTS}, "requests": v["request_count"],
            "prompt_tokens": v["tokens_prompt"], "completion_tokens": v["tokens_completion"],
            "cached_tokens": None if provider_series else v["cached_tokens"], "total_tokens": v["tokens_prompt"] + v["tokens_completion"]}


def accumulate(into: dict[Any, dict[str, Any]], key: Any, values: dict[str, Any], source: str) -> None:
    row = into.setdefault(key, {"_sources": set()})
    row["_sources"].add(source)
    for metric, value in values.items():
        if value is None:
            row.setdefault(metric, None)
        else:
            row[metric] = (row.get(metric) or 0) + value


def expected(archive: Archive, group: Callable[..., Any], *, subject: str | None = None, provider: bool = False,
             app: bool = False) -> dict[Any, dict[str, Any]]:
    """Per group, every metric: /activity's items (per subject for a breakdown) in its window, then the facts.

    ``group(day, model, permaslug, variant, extra)``; ``subject`` key/member/workspace: the
    breakdown's items and the facts of that subject; ``provider``: older days only from the
    31-day provider series; ``app``: every day from the facts (apps are in the app series only).
    """
    out: dict[Any, dict[str, Any]] = {}
    ds, an = archive.dataset, archive.analytics
    if not app:
        for day in window_days():
            if subject == "key":
                items = [(dict(i), {"key": k.name}) for k in ds.api_keys for i in ds.activity(day, api_key_hash=k.hash)]
            elif subject == "member":
                items = [(dict(i), {"member": u}) for u in ds.user_ids for i in ds.activity(day, user_id=u)]
            elif subject == "workspace":
                items = [(dict(i), {"workspace": i["workspace_id"]}) for i in ds.activity(day, group_by="workspace")]
            else:
                items = [(dict(i), {"provider": i["provider_name"]}) for i in ds.activity(day)]
            for item, extra in items:
                key = group(day, item["model"], item["model_permaslug"], variant_of(item["model"]), extra)
                accumulate(out, key, activity_values(item), "activity")
    days = old_days(PROVIDER_FIRST if provider else TODAY - timedelta(days=365))
    if app:
        days = [TODAY - timedelta(days=n) for n in range(1, 366)]
    for day in days:
        for fact in an.facts(day):
            d = fact.dims
            variant = d["variant"] if subject is None and not provider and not app else None
            extra = {"key": ds.key_by_hash(d["api_key_id"]).name, "member": d["user"], "workspace": d["workspace"],
                     "provider": d["provider"], "app": an.app_title(d["app"]) if d["app"] is not None else "(no app)"}
            key = group(day, model_of(archive, d["model"], variant), d["model"], d["variant"], extra)
            accumulate(out, key, fact_values(fact, provider_series=provider), "analytics")
    for row in out.values():
        sources = row.pop("_sources")
        row["source"] = sources.pop() if len(sources) == 1 else "both"
    return out


def assert_agree(rows: list[dict[str, Any]], want: dict[Any, dict[str, Any]], key: Callable[[dict[str, Any]], Any],
                 metrics: tuple[str, ...] = (*MONEY, *COUNTS)) -> None:
    got = {key(r): r for r in rows}
    assert set(got) == set(want)
    for k, row in got.items():
        for metric in metrics:
            w, g = want[k].get(metric), row[metric]
            if w is None:
                assert g is None, (k, metric, g)
            elif metric in MONEY:
                assert isinstance(g, float) and g == round(g, 9), (k, metric, g)  # exact amounts, rounded to 1e-9 USD
                assert g == pytest.approx(w, abs=1e-6), (k, metric)
            else:
                assert type(g) is int and g == w, (k, metric, g, w)
        assert row.get("source", "activity") == want[k]["source"], k  # no source at all: /activity alone


def month(day: date) -> str:
    return day.isoformat()[:7]


# -- account level ------------------------------------------------------------------------------


def test_month_and_variant_across_the_boundary_with_every_new_metric(archive):
    rows, note = archive.report("-g", "month,variant", "--columns", EXTRA)
    want = expected(archive, lambda day, model, slug, variant, extra: (month(day), variant))
    assert_agree(rows, want, lambda r: (r["month"], r["variant"]))
    assert "come from the Analytics API history (account series" in note
    assert "usage_upstream, usage_cache, usage_data: in the Analytics API only, NULL in rows from /activity" in note
    # Spend incl. BYOK is the one column that adds them up; spend stays credits only.
    for r in rows:
        assert r["total_usage_incl_byok"] == pytest.approx(r["usage"] + r["byok_usage_inference"], abs=1e-6)
    assert any(r["byok_usage_inference"] > 0 for r in rows)


def test_provider_reaches_back_to_the_provider_series_and_states_the_days_left_out(archive):
    rows, note = archive.report("-g", "provider", "--columns", "total_usage")
    want = expected(archive, lambda day, model, slug, variant, extra: extra["provider"], provider=True)
    assert_agree(rows, want, lambda r: r["provider"], metrics=("usage", "byok_usage_inference", "total_usage_incl_byok", "requests",
                                                               "prompt_tokens", "completion_tokens", "total_tokens"))
    before = (PROVIDER_FIRST - timedelta(days=1)).isoformat()
    assert f"{PROVIDER_FIRST.isoformat()} come from the Analytics API history (provider series" in note
    assert f"{SINCE} .. {before} are in the Analytics API history only, which cannot give group provider: those days are left out" in note


def test_model_and_permaslug_mean_the_same_on_both_sides(archive):
    rows, _ = archive.report("-g", "model")
    assert_agree(rows, expected(archive, lambda day, model, slug, variant, extra: model), lambda r: r["model"], BASE)
    assert "total_usage_incl_byok" not in rows[0]  # asked for by name only: the default columns stay as they were
    rows, _ = archive.report("-g", "permaslug")
    assert_agree(rows, expected(archive, lambda day, model, slug, variant, extra: slug), lambda r: r["permaslug"], BASE)


# -- key, member, workspace, app --------------------------------------------------------------------


@pytest.mark.parametrize("subject", ["key", "member", "workspace"])
def test_breakdowns_reach_back_into_their_analytics_series(archive, subject):
    rows, note = archive.report("-g", f"{subject},month", "--columns", EXTRA)
    want = expected(archive, lambda day, model, slug, variant, extra: (extra[subject], month(day)), subject=subject)
    assert_agree(rows, want, lambda r: (r[subject], r["month"]))
    assert "come from the Analytics API history (per-" in note


def test_keys_are_shown_by_their_current_name_and_filtered_by_hash(archive):
    key = min(archive.dataset.api_keys, key=lambda k: k.created_at)  # the oldest: a year of history
    rows, note = archive.report("-g", "month", "--key", key.name)
    want = expected(archive, lambda day, model, slug, variant, extra: (extra["key"], month(day)), subject="key")
    assert "come from the Analytics API history (per-key series" in note
    assert_agree(rows, {m: v for (name, m), v in want.items() if name == key.name}, lambda r: r["month"], BASE)


def test_app_comes_from_the_app_series_on_every_day(archive):
    rows, note = archive.report("-g", "app", "--columns", EXTRA)
    want = expected(archive, lambda day, model, slug, variant, extra: extra["app"], app=True)
    assert_agree(rows, want, lambda r: r["app"])
    assert {r["source"] for r in rows} == {"analytics"}
    assert "(no app)" in {r["app"] for r in rows}
    rows, _ = archive.report("-g", "month,app", "--metric", "total_usage")
    want = expected(archive, lambda day, model, slug, variant, extra: (month(day), extra["app"]), app=True)
    assert_agree(rows, want, lambda r: (r["month"], r["app"]), metrics=("usage", "total_usage_incl_byok", "requests"))


def test_app_series_covers_every_activity_day_so_nothing_is_left_out(archive):
    result = archive.run("report", "-g", "app", "--since", WINDOW_FIRST.isoformat(), "--until", UNTIL, "-f", "json")
    assert result.exit_code == 0 and "left out" not in result.stderr


def test_activity_days_without_app_info_are_stated(run, warehouse_url, tmp_path, monkeypatch):
    dataset = Dataset(anchor=TODAY, keys=2, endpoints_per_day=4, first_key_age_days=60)
    with StandIn(dataset, management_key=KEY) as server:
        monkeypatch.delenv("OPENROUTER_ARCHIVE_ANALYTICS")
        for name, value in (("OPENROUTER_API_KEY", KEY), ("OPENROUTER_BASE_URL", server.base_url), ("OPENROUTER_ARCHIVE_DB", warehouse_url)):
            monkeypatch.setenv(name, value)
        (tmp_path / "config.toml").write_text(FAST_CONFIG + '[sync]\nanalytics_series = ["account"]\n')
        assert run("sync").exit_code == 0
    result = run("report", "-g", "app", "--last", "30d", "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []
    first, last = completed_window(TODAY)
    assert f"{first} .. {last}: the archive holds them (/activity, the account series) but the app series does not" in result.stderr
    assert "those days are left out" in result.stderr


def test_groups_a_series_cannot_give_are_reported_for_the_days_that_have_them(archive):
    before = (WINDOW_FIRST - timedelta(days=1)).isoformat()
    rows, note = archive.report("-g", "key,variant")
    want = expected(archive, lambda day, model, slug, variant, extra: (extra["key"], variant), subject="key")
    # Only /activity's (breakdown) days: the per-key series has no variant.
    recent = {k: v for k, v in want.items() if v["source"] != "analytics"}
    assert {(r["key"], r["variant"]) for r in rows} == set(recent)
    assert f"{SINCE} .. {before} are in the Analytics API history only, which cannot give group variant: those days are left out" in note
    rows, note = archive.report("-g", "endpoint")
    assert "cannot give group endpoint: those days are left out" in note and all("source" not in r for r in rows)


def test_top_folds_across_sources(archive):
    rows, _ = archive.report("-g", "month,app", "--top", "2", "--columns", "total_usage")
    want = expected(archive, lambda day, model, slug, variant, extra: month(day), app=True)
    by_month: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_month[r["month"]].append(r)
    assert set(by_month) == set(want)
    for m, group in by_month.items():
        assert len(group) <= 3 and sum(r["requests"] for r in group) == want[m]["requests"]
        assert math.fsum(r["total_usage_incl_byok"] for r in group) == pytest.approx(want[m]["total_usage_incl_byok"], abs=1e-6)


# -- formats ----------------------------------------------------------------------------------------


def test_csv_carries_source_and_null_components(archive):
    rows, _ = archive.report("-g", "month", "--columns", EXTRA, fmt="csv")
    by_source = defaultdict(list)
    for r in rows:
        by_source[r["source"]].append(r)
    assert "analytics" in by_source and set(by_source) <= {"activity", "both", "analytics"}
    assert all(r["usage_cache"] != "" for r in by_source["analytics"])
    for r in rows:
        assert r["requests"].isdigit() and "e" not in r["usage"]  # "123", never "123.0"; no float noise
    rows, _ = archive.report("-g", "date", "--columns", "usage_cache", fmt="csv")
    recent = [r for r in rows if r["date"] >= WINDOW_FIRST.isoformat()]
    assert recent and all(r["usage_cache"] == "" and r["source"] == "activity" for r in recent)  # NULL, not 0


def test_ndjson_and_table_carry_source(archive):
    result = archive.run("report", "-g", "year", "--since", SINCE, "--until", UNTIL, "-f", "ndjson")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines and all("source" in r for r in lines)
    table = archive.run("report", "-g", "date", "--since", (WINDOW_FIRST - timedelta(days=2)).isoformat(), "--until", UNTIL,
                        "--columns", "spend,total_usage")
    assert table.exit_code == 0
    header, *_ = table.stdout.splitlines()
    assert "spend incl BYOK" in header and "source" in header
    assert "note: " in table.stdout and "come from the Analytics API history" in table.stdout  # the footnote
    sources = {line.split("│")[-1].strip() for line in table.stdout.splitlines() if line[:2] == "20"}
    assert sources == {"activity", "analytics"}


def test_pdf_of_a_new_group_and_metric(archive, tmp_path):
    out = tmp_path / "apps.pdf"
    result = archive.run("report", "-g", "app", "--since", SINCE, "--until", UNTIL, "--metric", "total_usage", "-f", "pdf", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes().startswith(b"%PDF")


# -- latency ----------------------------------------------------------------------------------------


def daily_latency(archive: Archive) -> list[dict[str, Any]]:
    """The stand-in's analytics endpoint's own per-day model x provider figures for the 31 days."""
    body = {"metrics": ["request_count", *LATENCY.values()], "dimensions": ["model", "provider"], "granularity": "day",
            "time_range": {"start": f"{PROVIDER_FIRST.isoformat()}T00:00:00Z", "end": f"{TODAY.isoformat()}T00:00:00Z"},
            "limit": 10_000}
    import urllib.request

    request = urllib.request.Request(f"{archive.server.base_url}/analytics/query", data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as answer:
        rows = json.load(answer)["data"]["data"]
    assert rows
    return rows


def weighted(rows: list[dict[str, Any]], metric: str) -> float | None:
    known = [(r[metric], int(r["request_count"])) for r in rows if r[metric] is not None and int(r["request_count"])]
    total = sum(w for _, w in known)
    return math.fsum(v * w for v, w in known) / total if total else None


def test_latency_by_provider_is_a_request_weighted_mean_never_a_sum(archive):
    rows, note = archive.report("-g", "provider", "--metric", "p90_latency")
    daily = daily_latency(archive)
    by_provider: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in daily:
        by_provider[r["provider"]].append(r)
    assert {r["provider"] for r in rows} == set(by_provider)
    for row in rows:
        parts = by_provider[row["provider"]]
        assert row["requests"] == sum(int(p["request_count"]) for p in parts)
        for column, metric in LATENCY.items():
            assert row[column] == pytest.approx(weighted(parts, metric), abs=1e-5), (row["provider"], column)
            values = [p[metric] for p in parts if p[metric] is not None]
            assert min(values) - 1e-6 <= row[column] <= max(values) + 1e-6  # a mean; a sum of several would pass the max
        assert row["source"] == "analytics"
    assert any(len(p) > 1 for p in by_provider.values())
    assert set(rows[0]) == {"provider", "requests", *LATENCY, "source"}
    assert "request-weighted mean" in note and "never a sum" in note


def test_latency_per_day_model_and_provider_is_openrouters_own_figure(archive):
    day = (TODAY - timedelta(days=3)).isoformat()
    result = archive.run("report", "-g", "model,provider", "--since", day, "--until", day, "--metric", "p99_latency", "-f", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    own = {(r["model"], r["provider"]): r for r in daily_latency(archive) if r["date__day"].startswith(day)}
    permaslug_of = {m: s for s, ms in pairs(archive).items() for m in ms}
    assert len(rows) == len(own) > 0
    for row in rows:
        theirs = own[(permaslug_of.get(row["model"], row["model"]), row["provider"])]
        for column, metric in LATENCY.items():
            assert row[column] == pytest.approx(theirs[metric], abs=1e-9)


def test_latency_week_table_has_units_and_a_weighted_total(archive):
    result = archive.run("report", "-g", "week", "--since", SINCE, "--until", UNTIL, "--metric", "p90_latency")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "p90 latency" in lines[0] and "throughput" in lines[0]
    assert " ms" in result.stdout and "tok/s" in result.stdout
    total = next(line for line in lines if line.startswith("total"))
    everything = weighted(daily_latency(archive), "p90_latency")
    assert f"{everything:,.1f} ms" in total
    chart = archive.run("report", "-g", "provider", "--since", SINCE, "--until", UNTIL, "--metric", "p90_latency", "--chart")
    assert chart.exit_code == 0 and "request-weighted mean" in chart.stdout


# -- arguments ----------------------------------------------------------------------------------------


def test_help_lists_the_new_metrics_and_groups(archive):
    text = " ".join(archive.run("report", "--help").stdout.split())
    for name in ("total_usage", "usage_cache", "usage_upstream_web", "p90_latency", "avg_throughput", "cached_tokens"):
        assert name in text
    assert "variant" in text and "app" in text


@pytest.mark.parametrize("args", [
    ["-g", "app,provider"],
    ["-g", "app,key"],
    ["-g", "app", "--provider", "OpenAI"],
    ["-g", "endpoint", "--metric", "p90_latency"],
    ["-g", "key", "--metric", "p90_latency"],
    ["-g", "app", "--metric", "p50_latency"],
    ["--metric", "p90_latency", "--columns", "spend"],
    ["--metric", "p90_latency", "--sort", "usage_cache"],
    ["--metric", "p90_latency", "-f", "png", "-o", "x.png"],
    ["--metric", "vibes"],
    ["-g", "colour"],
])
def test_bad_metric_and_group_combinations_are_one_line_errors(archive, args):
    result = archive.run("report", *args)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("Error: ")
    assert result.stdout == ""


# -- the README's SQL -------------------------------------------------------------------------------


def readme_statements(engine: str) -> dict[str, str]:
    """The README's example SQL for the Analytics API tables, by first comment line, for ``engine``."""
    from conftest import REPO_ROOT

    text = (REPO_ROOT / "README.md").read_text()
    start = text.index("```sql\n-- Spend by app per month")
    block = text[start + len("```sql\n"): text.index("```", start + 6)]
    out = {}
    for statement in (s.strip() for s in block.split(";\n") if s.strip()):
        title = statement.splitlines()[0]
        other = "(PostgreSQL)" if engine == "sqlite" else "(SQLite)"
        if not title.endswith(other):
            out[title] = statement
    return out


def test_readme_sql_runs_on_this_engine_and_agrees_with_report(archive):
    engine = "postgresql" if archive.url.startswith("postgresql") else "sqlite"
    statements = readme_statements(engine)
    assert len(statements) == 4, list(statements)
    results = {}
    for title, statement in statements.items():
        result = archive.run("sql", "-f", "json", "--", statement)
        assert result.exit_code == 0, (title, result.output)
        results[title] = json.loads(result.stdout)
        assert results[title], title
    by_app = next(rows for title, rows in results.items() if title.startswith("-- Spend by app per month"))
    report, _ = archive.report("-g", "month,app")
    spend = {(r["month"], r["app"]): r["usage"] for r in report}
    assert len(by_app) == len(spend)
    for r in by_app:
        assert float(r["spend_usd"]) == pytest.approx(spend[(r["month"], r["app"] or "(no app)")], abs=0.0051)
    weekly = next(rows for title, rows in results.items() if title.startswith("-- Provider p90 latency per ISO week"))
    report, _ = archive.report("-g", "week,provider", "--metric", "p90_latency")
    p90 = {(r["week"], r["provider"]): r["p90_latency_ms"] for r in report}
    assert len(weekly) == len(p90)
    for r in weekly:
        assert float(r["p90_ms"]) == pytest.approx(p90[(r["week"], r["provider"])], abs=0.051)
