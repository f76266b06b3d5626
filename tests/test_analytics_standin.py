"""The stand-in's Analytics API: its limits, its quirks, and agreement with /activity."""

from __future__ import annotations

from datetime import date, timedelta

import httpx
import pytest

from etl.standin import Dataset, StandIn
from etl.standin.analytics import Analytics

TODAY = date(2026, 11, 22)
KEY = "sk-or-v1-test-management-analytics"


def _range(first: date, end: date) -> dict[str, str]:
    return {"start": f"{first}T00:00:00Z", "end": f"{end}T00:00:00Z"}


@pytest.fixture
def dataset() -> Dataset:
    return Dataset(anchor=TODAY, endpoints_per_day=6, first_key_age_days=400)


@pytest.fixture
def server(dataset):
    with StandIn(dataset, management_key=KEY, today=lambda: TODAY) as s:
        yield s


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.base_url + "/", headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield client


def _query(http: httpx.Client, **body):
    return http.post("analytics/query", json=body)


def test_meta_lists_metrics_dimensions_operators(http):
    data = http.get("analytics/meta").json()["data"]
    names = {m["name"] for m in data["metrics"]}
    assert {"credits_usage", "request_count", "p90_latency"} <= names
    assert {d["name"] for d in data["dimensions"]} >= {"model", "variant", "api_key_id", "app", "provider"}
    assert {o["name"] for o in data["operators"]} == {"eq", "neq", "gt", "gte", "lt", "lte", "in", "not_in"}


def test_daily_totals_equal_activity_sums(http, dataset):
    day = next(TODAY - timedelta(days=n) for n in range(4, 20) if dataset.activity(TODAY - timedelta(days=n)))
    answer = _query(http, metrics=["credits_usage", "byok_usage", "request_count", "tokens_prompt", "total_usage"],
                    dimensions=["model"], granularity="day", time_range=_range(day, day + timedelta(days=1))).json()
    rows = {r["model"]: r for r in answer["data"]["data"]}
    expected: dict[str, dict[str, float]] = {}
    for item in dataset.activity(day):
        e = expected.setdefault(item["model_permaslug"], {"usage": 0.0, "byok": 0.0, "requests": 0, "prompt": 0})
        e["usage"] += item["usage"]
        e["byok"] += item["byok_usage_inference"]
        e["requests"] += item["requests"]
        e["prompt"] += item["prompt_tokens"]
    assert set(rows) == set(expected) and expected
    for model, e in expected.items():
        assert rows[model]["credits_usage"] == pytest.approx(e["usage"], abs=1e-9)
        assert rows[model]["byok_usage"] == pytest.approx(e["byok"], abs=1e-9)
        assert rows[model]["total_usage"] == pytest.approx(e["usage"] + e["byok"], abs=1e-9)
        assert rows[model]["request_count"] == e["requests"]
        assert rows[model]["tokens_prompt"] == e["prompt"]
        assert rows[model]["date__day"] == f"{day}T00:00:00.000Z"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"metrics": ["request_count"], "dimensions": ["model", "variant", "app"]}, "At most 2 dimensions"),
        ({"metrics": ["request_count"], "filters": [{"field": "model", "operator": "eq", "value": "x"}] * 21}, "At most 20 filters"),
        ({"metrics": ["request_count"], "limit": 10_001}, "at most 10000"),
        ({"metrics": ["request_count"], "time_range": _range(TODAY - timedelta(days=366), TODAY)}, "365 days"),
        ({"metrics": ["p90_latency"], "dimensions": ["model"], "time_range": _range(TODAY - timedelta(days=32), TODAY)}, "31 days"),
        ({"metrics": ["request_count"], "dimensions": ["provider"], "time_range": _range(TODAY - timedelta(days=32), TODAY)}, "31 days"),
        ({"metrics": []}, "metric"),
    ],
)
def test_limits_are_400(http, body, message):
    response = _query(http, **body)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


def test_ranges_at_the_limits_are_served(http):
    assert _query(http, metrics=["request_count"], granularity="day", time_range=_range(TODAY - timedelta(days=365), TODAY)).status_code == 200
    assert _query(http, metrics=["p50_latency"], dimensions=["provider"], time_range=_range(TODAY - timedelta(days=31), TODAY)).status_code == 200


def test_truncated_when_rows_exceed_limit(http):
    full = _query(http, metrics=["request_count"], dimensions=["model"], granularity="day", time_range=_range(TODAY - timedelta(days=20), TODAY), limit=10_000).json()["data"]
    assert not full["metadata"]["truncated"]
    n = len(full["data"])
    cut = _query(http, metrics=["request_count"], dimensions=["model"], granularity="day", time_range=_range(TODAY - timedelta(days=20), TODAY), limit=n - 1).json()["data"]
    assert cut["metadata"]["truncated"] is True and len(cut["data"]) == n - 1


def test_labels_out_ids_in_and_warnings(http, dataset, server):
    key = dataset.api_keys[0]
    rows = _query(http, metrics=["request_count"], dimensions=["api_key_id", "user"],
                  filters=[{"field": "api_key_id", "operator": "eq", "value": key.hash}],
                  time_range=_range(TODAY - timedelta(days=30), TODAY)).json()["data"]["data"]
    assert {r["api_key_id"] for r in rows} == {key.name}
    assert {r["user"] for r in rows} == {server.analytics.user_label(key.creator_user_id)}
    answer = _query(http, metrics=["request_count"], filters=[{"field": "user", "operator": "eq", "value": "user_nobody"}]).json()["data"]
    assert answer["data"] == [] and "user_nobody" in answer["warnings"][0]


def test_string_counts_and_null_components(dataset):
    analytics = Analytics(dataset, string_counts=True, null_components=True)
    rows = analytics.query({"metrics": ["request_count", "usage_web", "credits_usage"], "dimensions": ["model"], "granularity": "day",
                            "time_range": _range(TODAY - timedelta(days=3), TODAY)}, TODAY)["data"]["data"]
    assert rows and all(isinstance(r["request_count"], str) and r["request_count"].isdigit() for r in rows)
    assert all(r["usage_web"] is None and isinstance(r["credits_usage"], float) for r in rows)


def test_rate_limit_429_with_retry_after(dataset):
    clock = [0.0]
    analytics = Analytics(dataset, rate_limit=3, rate_window=60.0, clock=lambda: clock[0])
    with StandIn(dataset, management_key=KEY, today=lambda: TODAY, analytics=analytics) as s, httpx.Client(
        base_url=s.base_url + "/", headers={"Authorization": f"Bearer {KEY}"}
    ) as http:
        assert [http.get("analytics/meta").status_code for _ in range(3)] == [200, 200, 200]
        refused = http.get("analytics/meta")
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
        clock[0] = 60.5
        assert http.get("analytics/meta").status_code == 200
    assert (analytics.served, analytics.rate_limited, analytics.max_in_window) == (4, 1, 3)


def test_skew_makes_the_sources_disagree(dataset):
    analytics = Analytics(dataset)
    day = TODAY - timedelta(days=2)
    body = {"metrics": ["credits_usage"], "dimensions": ["model"], "granularity": "day", "time_range": _range(day, day + timedelta(days=1))}
    before = {r["model"]: r["credits_usage"] for r in analytics.query(body, TODAY)["data"]["data"]}
    model = sorted(before)[0]
    analytics.skew(day, model, "credits_usage", 0.25)
    after = {r["model"]: r["credits_usage"] for r in analytics.query(body, TODAY)["data"]["data"]}
    assert after[model] == pytest.approx(before[model] + 0.25)
    assert {m: v for m, v in after.items() if m != model} == {m: v for m, v in before.items() if m != model}


def test_inference_key_gets_403(dataset):
    with StandIn(dataset, management_key=KEY, inference_key="sk-or-v1-inf", today=lambda: TODAY) as s:
        response = httpx.post(s.base_url + "/analytics/query", json={"metrics": ["request_count"]}, headers={"Authorization": "Bearer sk-or-v1-inf"})
    assert response.status_code == 403
