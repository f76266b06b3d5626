"""Tests of the stand-in OpenRouter analytics API: its data and its behaviour over real HTTP."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from typing import Any
from collections.abc import Iterator

import httpx
import pytest
import time_machine

from etl.standin import DEMO_INFERENCE_KEY, DEMO_MANAGEMENT_KEY, Dataset, Fault, StandIn
from etl.standin.data import activity_window
from etl.standin.server import corrupt_item

TODAY = date(2026, 8, 24)
WINDOW = activity_window(TODAY)
SPEC_FIELDS = {
    "date",
    "model",
    "model_permaslug",
    "endpoint_id",
    "provider_name",
    "usage",
    "byok_usage_inference",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
}
COUNTS = ("requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")
KEYS_REQUIRED = {
    "hash",
    "name",
    "label",
    "disabled",
    "limit",
    "limit_remaining",
    "limit_reset",
    "include_byok_in_limit",
    "usage",
    "usage_daily",
    "usage_weekly",
    "usage_monthly",
    "byok_usage",
    "byok_usage_daily",
    "byok_usage_weekly",
    "byok_usage_monthly",
    "created_at",
    "updated_at",
    "creator_user_id",
    "workspace_id",
}
KEY_REQUIRED = {
    "label",
    "limit",
    "usage",
    "usage_daily",
    "usage_weekly",
    "usage_monthly",
    "byok_usage",
    "byok_usage_daily",
    "byok_usage_weekly",
    "byok_usage_monthly",
    "is_free_tier",
    "is_management_key",
    "is_provisioning_key",
    "limit_remaining",
    "limit_reset",
    "include_byok_in_limit",
    "creator_user_id",
    "rate_limit",
}
MANAGEMENT = {"Authorization": f"Bearer {DEMO_MANAGEMENT_KEY}"}
INFERENCE = {"Authorization": f"Bearer {DEMO_INFERENCE_KEY}"}
# Built once: httpx would otherwise load the CA bundle for every client, which
# dominates the run time of these loopback-only tests.
TLS = ssl.create_default_context()


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def dataset() -> Dataset:
    return Dataset(anchor=TODAY)


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with StandIn(today=lambda: TODAY) as server:
        yield server


@pytest.fixture
def client(standin: StandIn) -> Iterator[httpx.Client]:
    with httpx.Client(verify=TLS, base_url=standin.base_url, headers=MANAGEMENT, timeout=5.0) as http:
        yield http


def http_get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, verify=TLS, **kwargs)


def http_post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, verify=TLS, **kwargs)


def busy_day(data: Dataset) -> date:
    """A day of the window on which every key (the disabled one included) has activity."""
    for day in WINDOW:
        if all(data.activity(day, api_key_hash=key.hash) for key in data.api_keys):
            return day
    raise AssertionError("no day has activity from every key")


def calendar_day(text: str) -> date:
    return date.fromisoformat(text[:10])


def totals(items: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Sum rows per endpoint (over keys or workspaces)."""
    summed: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for item in items:
        for name in (*COUNTS, "usage", "byok_usage_inference"):
            if name in item:
                summed[item["endpoint_id"]][name] += item[name]
    return {endpoint: dict(values) for endpoint, values in summed.items()}


def assert_same_totals(actual: dict[str, dict[str, float]], expected: dict[str, dict[str, float]]) -> None:
    assert actual.keys() == expected.keys()
    for endpoint, values in expected.items():
        assert actual[endpoint].keys() == values.keys()
        for name, value in values.items():
            if name in COUNTS:
                assert actual[endpoint][name] == value, (endpoint, name)
            else:
                assert actual[endpoint][name] == pytest.approx(value, rel=1e-12, abs=1e-15), (endpoint, name)


def item_problems(item: dict[str, Any]) -> list[str]:
    """Why an activity item breaks the spec (empty when it is valid)."""
    problems = [f"missing {name}" for name in SPEC_FIELDS - item.keys()]
    for name in COUNTS:
        value = item.get(name, 0)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0 or value != int(value):
            problems.append(f"bad {name}: {value!r}")
    return problems


def all_keys(http: httpx.Client, **params: str) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = []
    while True:
        page = http.get("/keys", params={**params, "offset": str(len(keys))})
        assert page.status_code == 200
        data = page.json()["data"]
        if not data:
            return keys
        keys.extend(data)


# --------------------------------------------------------------------------- data


def test_same_seed_gives_identical_bytes_whatever_the_order() -> None:
    forward, backward = Dataset(seed=7, anchor=TODAY), Dataset(seed=7, anchor=TODAY)
    first = {day: json.dumps(forward.activity(day)) for day in sorted(WINDOW)}
    second = {day: json.dumps(backward.activity(day)) for day in WINDOW}
    assert first == second
    other = Dataset(seed=8, anchor=TODAY)
    assert any(json.dumps(other.activity(day)) != first[day] for day in WINDOW)


def _fingerprint_script(seed: int) -> str:
    return (
        "import hashlib, json\n"
        "from datetime import date\n"
        "from etl.standin.data import Dataset, activity_window\n"
        f"d = Dataset(seed={seed}, anchor=date(2026, 8, 24))\n"
        "blob = json.dumps([d.activity(day) for day in activity_window(date(2026, 8, 24))])\n"
        "blob += json.dumps(d.keys_as_api(date(2026, 8, 24)))\n"
        "print(hashlib.sha256(blob.encode()).hexdigest())\n"
    )


def test_data_does_not_depend_on_the_hash_seed() -> None:
    digests = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", _fingerprint_script(3)], capture_output=True, text=True, env=env, check=True
        )
        digests.append(result.stdout.strip())
    local = Dataset(seed=3, anchor=TODAY)
    blob = json.dumps([local.activity(day) for day in WINDOW]) + json.dumps(local.keys_as_api(TODAY))
    assert digests == [hashlib.sha256(blob.encode()).hexdigest()] * 2


def test_items_have_the_spec_fields_and_plausible_values(dataset: Dataset) -> None:
    items = [item for day in WINDOW for item in dataset.activity(day)]
    assert items
    for item in items:
        assert set(item) - {"cached_tokens"} == SPEC_FIELDS
        assert item_problems(item) == []
        assert all(type(item[name]) is int for name in COUNTS if name in item)
        assert isinstance(item["usage"], float) and isinstance(item["byok_usage_inference"], float)
    cached = sum("cached_tokens" in item for item in items)
    assert 0.05 < cached / len(items) < 0.4
    assert any(item["reasoning_tokens"] > item["completion_tokens"] for item in items)
    byok = [item for item in items if item["byok_usage_inference"] > 0]
    assert byok
    # BYOK rows only pay OpenRouter's 5 % fee.
    assert all(item["usage"] == pytest.approx(item["byok_usage_inference"] * 0.05, rel=1e-6) for item in byok)
    assert len({item["model"] for item in items}) >= 12
    assert all(item["model_permaslug"].split("/")[0] == item["model"].split("/")[0] for item in items)


def test_account_rows_equal_the_sum_of_key_rows(dataset: Dataset) -> None:
    assert len(dataset.user_ids) == 2 and len(dataset.workspace_ids) == 2
    for day in WINDOW:
        account = totals(dataset.activity(day))
        per_key = totals([i for key in dataset.api_keys for i in dataset.activity(day, api_key_hash=key.hash)])
        per_user = totals([i for user in dataset.user_ids for i in dataset.activity(day, user_id=user)])
        per_workspace = totals(
            [i for ws in dataset.workspace_ids for i in dataset.activity(day, workspace_id=ws)]
        )
        assert_same_totals(per_key, account)
        assert_same_totals(per_user, account)
        assert_same_totals(per_workspace, account)
        assert_same_totals(totals(dataset.activity(day, group_by="workspace")), account)


def test_group_by_workspace_adds_workspace_ids(dataset: Dataset) -> None:
    day = busy_day(dataset)
    split = dataset.activity(day, group_by="workspace")
    assert {item["workspace_id"] for item in split} == set(dataset.workspace_ids)
    assert len(split) > len(dataset.activity(day))
    assert all("workspace_id" not in item for item in dataset.activity(day))
    with pytest.raises(ValueError):
        dataset.activity(day, group_by="model")


def test_keys_only_have_activity_while_they_exist(dataset: Dataset) -> None:
    production, staging, ci = dataset.api_keys
    assert staging.created_at.date() == TODAY - timedelta(days=12)
    assert ci.disabled and not production.disabled and not staging.disabled
    for day in WINDOW:
        staging_rows = dataset.activity(day, api_key_hash=staging.hash)
        ci_rows = dataset.activity(day, api_key_hash=ci.hash)
        if day < staging.created_at.date():
            assert staging_rows == []
        if ci.disabled_on is not None and day >= ci.disabled_on:
            assert ci_rows == []
    assert any(dataset.activity(day, api_key_hash=staging.hash) for day in WINDOW)
    assert any(dataset.activity(day, api_key_hash=ci.hash) for day in WINDOW)


def test_every_ninth_day_is_empty(dataset: Dataset) -> None:
    empty = {day for day in WINDOW if not dataset.activity(day)}
    assert empty == {day for day in WINDOW if (day.toordinal() + dataset.seed) % 9 == 0}
    assert 3 <= len(empty) <= 4
    assert all(len(dataset.activity(day)) == 24 for day in set(WINDOW) - empty)
    assert Dataset(empty_day_every=0, anchor=TODAY).activity(min(empty)) != []


def test_revise_brings_late_data_to_that_day_only(dataset: Dataset) -> None:
    day, other = WINDOW[3], WINDOW[4]
    before, other_before = dataset.activity(day), dataset.activity(other)
    assert dataset.activity(day) == before  # stable without a revision
    assert dataset.revise(day) == 1
    after = dataset.activity(day)
    assert after != before
    assert dataset.activity(other) == other_before
    old = {item["endpoint_id"]: item for item in before}
    for item in after:
        if item["endpoint_id"] in old:
            assert item["requests"] >= old[item["endpoint_id"]]["requests"]
            assert item["usage"] >= old[item["endpoint_id"]]["usage"]
    assert sum(i["requests"] for i in after) > sum(i["requests"] for i in before)
    dataset.revise(day)
    assert dataset.activity(day) != after
    assert Dataset(anchor=TODAY).activity(day) == before  # revisions are per dataset instance


def test_keys_as_api_carries_every_required_field(dataset: Dataset) -> None:
    keys = dataset.keys_as_api(TODAY)
    assert [key["name"] for key in keys] == ["Production", "Staging", "CI"]
    for key in keys:
        assert KEYS_REQUIRED <= key.keys()
        assert len(key["hash"]) == 64 and int(key["hash"], 16) >= 0
        assert key["label"].startswith("sk-or-v1-") and "..." in key["label"]
        assert key["created_at"].endswith("Z")
        assert key["workspace_id"] in dataset.workspace_ids
        assert key["creator_user_id"] in dataset.user_ids
        assert key["usage"] >= key["usage_monthly"] >= key["usage_daily"] >= 0
    assert [key["disabled"] for key in keys] == [False, False, True]
    assert [k["name"] for k in dataset.keys_as_api(TODAY, include_disabled=False)] == ["Production", "Staging"]
    assert [k.name for k in Dataset(keys=5, anchor=TODAY).api_keys][3:] == ["Key 4", "Key 5"]


def test_credits_cover_the_usage(dataset: Dataset) -> None:
    credits = dataset.credits(TODAY)
    assert 0 < credits["total_usage"] < credits["total_credits"]
    lifetime = sum(key["usage"] for key in dataset.keys_as_api(TODAY))
    assert credits["total_usage"] == pytest.approx(lifetime, abs=1e-3)


def test_corrupt_item_breaks_each_variant_differently(dataset: Dataset) -> None:
    item = dataset.activity(busy_day(dataset))[0]
    assert item_problems(item) == []
    broken = [corrupt_item(item, variant) for variant in range(3)]
    assert all(item_problems(b) for b in broken)
    assert broken[0]["requests"] == "lots"
    assert broken[1]["prompt_tokens"] < 0
    assert "model" not in broken[2]
    assert item_problems(item) == []  # the original is left alone


# --------------------------------------------------------------------------- HTTP: data


def test_activity_over_http_matches_the_dataset(standin: StandIn, client: httpx.Client) -> None:
    day = busy_day(standin.dataset)
    response = client.get("/activity", params={"date": day.isoformat()})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    served = response.json()["data"]
    expected = standin.dataset.activity(day)
    assert [(i["endpoint_id"], calendar_day(i["date"])) for i in served] == [(i["endpoint_id"], day) for i in expected]
    assert [i["requests"] for i in served] == [i["requests"] for i in expected]
    assert [i["usage"] for i in served] == [i["usage"] for i in expected]


def test_responses_are_deterministic(client: httpx.Client) -> None:
    assert client.get("/activity").content == client.get("/activity").content


@pytest.mark.parametrize(
    ("value", "status", "message"),
    [
        (WINDOW[-1].isoformat(), 200, None),
        (WINDOW[0].isoformat(), 200, None),
        ((WINDOW[-1] - timedelta(days=1)).isoformat(), 400, "Date must be within the last 30 (completed) UTC days"),
        (TODAY.isoformat(), 400, "Date must be within the last 30 (completed) UTC days"),
        ((TODAY + timedelta(days=3)).isoformat(), 400, "Date must be within the last 30 (completed) UTC days"),
        ("2026-8-1", 400, "Invalid date format"),
        ("2026-08-23 00:00:00", 400, "Invalid date format"),
        ("2026-02-30", 400, "Invalid date format"),
        ("yesterday", 400, "Invalid date format"),
        ("", 400, "Invalid date format"),
    ],
)
def test_date_parameter_is_checked(client: httpx.Client, value: str, status: int, message: str | None) -> None:
    response = client.get("/activity", params={"date": value})
    assert response.status_code == status
    if message is not None:
        assert response.json() == {"error": {"code": 400, "message": message}}


def test_without_date_the_whole_window_comes_newest_first(standin: StandIn, client: httpx.Client) -> None:
    items = client.get("/activity").json()["data"]
    days = [calendar_day(item["date"]) for item in items]
    expected_days = {day for day in WINDOW if standin.dataset.activity(day)}
    assert set(days) == expected_days
    assert len(expected_days) < len(WINDOW)  # empty days are really absent
    order = [(-day.toordinal(), item["model"]) for day, item in zip(days, items)]
    assert order == sorted(order)


def test_the_window_follows_the_clock() -> None:
    noon = datetime(2026, 8, 24, 12, 0, tzinfo=timezone.utc)
    with time_machine.travel(noon, tick=False) as traveller:
        with StandIn() as server, httpx.Client(verify=TLS, base_url=server.base_url, headers=MANAGEMENT) as http:
            assert http.get("/activity", params={"date": "2026-08-23"}).status_code == 200
            assert http.get("/activity", params={"date": "2026-08-24"}).status_code == 400
            assert http.get("/activity", params={"date": "2026-07-25"}).status_code == 200
            traveller.shift(timedelta(days=1))
            assert http.get("/activity", params={"date": "2026-08-24"}).status_code == 200
            assert http.get("/activity", params={"date": "2026-07-25"}).status_code == 400


def test_group_by_workspace_over_http(client: httpx.Client, standin: StandIn) -> None:
    day = busy_day(standin.dataset).isoformat()
    account = client.get("/activity", params={"date": day}).json()["data"]
    split = client.get("/activity", params={"date": day, "group_by": "workspace"}).json()["data"]
    assert all(item["workspace_id"] in standin.dataset.workspace_ids for item in split)
    assert_same_totals(totals(split), totals(account))
    bad = client.get("/activity", params={"date": day, "group_by": "model"})
    assert bad.status_code == 400
    unknown = client.get("/activity", params={"date": day, "workspace_id": "00000000-0000-0000-0000-000000000000"})
    assert unknown.status_code == 404


def test_account_totals_equal_the_sum_over_keys_over_http(client: httpx.Client, standin: StandIn) -> None:
    day = busy_day(standin.dataset).isoformat()
    keys = all_keys(client, include_disabled="true")
    assert len(keys) == 3
    account = client.get("/activity", params={"date": day}).json()["data"]
    per_key = []
    for key in keys:
        rows = client.get("/activity", params={"date": day, "api_key_hash": key["hash"]}).json()["data"]
        assert rows
        per_key.extend(rows)
    assert_same_totals(totals(per_key), totals(account))
    user = keys[1]["creator_user_id"]
    by_user = client.get("/activity", params={"date": day, "user_id": user}).json()["data"]
    assert 0 < len(by_user) and totals(by_user) != totals(account)


def test_mixed_date_styles_show_both_forms(client: httpx.Client) -> None:
    dates = {item["date"] for item in client.get("/activity").json()["data"]}
    assert any(len(value) == 10 for value in dates)
    assert any(value.endswith(" 00:00:00") for value in dates)


@pytest.mark.parametrize(("style", "length"), [("plain", 10), ("live", 19)])
def test_fixed_date_styles(style: str, length: int) -> None:
    with StandIn(today=lambda: TODAY, date_style=style) as server:
        items = http_get(f"{server.base_url}/activity", headers=MANAGEMENT).json()["data"]
    assert items and {len(item["date"]) for item in items} == {length}


@pytest.mark.parametrize(("mode", "floats"), [("mixed", {True, False}), ("never", {False}), ("always", {True})])
def test_counts_as_doubles(mode: str, floats: set[bool]) -> None:
    with StandIn(today=lambda: TODAY, float_counts=mode) as server:
        items = http_get(f"{server.base_url}/activity", headers=MANAGEMENT).json()["data"]
    assert {isinstance(item["requests"], float) for item in items} == floats
    assert all(float(item["requests"]).is_integer() for item in items)


def test_keys_are_paged_and_disabled_ones_hidden_by_default(client: httpx.Client) -> None:
    first = client.get("/keys").json()["data"]
    assert [key["name"] for key in first] == ["Production", "Staging"]
    assert client.get("/keys", params={"offset": "2"}).json() == {"data": []}
    pages = [
        client.get("/keys", params={"include_disabled": "true", "offset": str(offset)}).json()["data"]
        for offset in (0, 2, 3)
    ]
    assert [len(page) for page in pages] == [2, 1, 0]
    assert pages[1][0]["name"] == "CI" and pages[1][0]["disabled"] is True
    assert all(KEYS_REQUIRED <= key.keys() for key in pages[0] + pages[1])
    assert client.get("/keys", params={"offset": "-1"}).status_code == 400


def test_credits_and_current_key(client: httpx.Client, standin: StandIn) -> None:
    credits = client.get("/credits").json()["data"]
    assert set(credits) == {"total_credits", "total_usage"}
    assert credits["total_credits"] > credits["total_usage"] > 0
    mine = client.get("/key").json()["data"]
    assert KEY_REQUIRED <= mine.keys() and mine["is_management_key"] is True
    inference = http_get(f"{standin.base_url}/key", headers=INFERENCE)
    data = inference.json()["data"]
    assert KEY_REQUIRED <= data.keys()
    assert data["is_management_key"] is False and data["usage_daily"] > 0
    assert data["label"] == standin.dataset.api_keys[0].label


@pytest.mark.parametrize(
    ("headers", "path", "status", "message"),
    [
        ({}, "/activity", 401, "Missing Authentication header"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "/activity", 401, "Missing Authentication header"),
        ({"Authorization": "Bearer sk-or-v1-nope"}, "/activity", 401, "User not found."),
        ({"Authorization": "Bearer sk-or-v1-nope"}, "/key", 401, "User not found."),
        (INFERENCE, "/activity", 403, "Only management keys can perform this operation"),
        (INFERENCE, "/credits", 403, "Only management keys can perform this operation"),
        (INFERENCE, "/keys", 403, "Only management keys can perform this operation"),
    ],
)
def test_authentication(standin: StandIn, headers: dict[str, str], path: str, status: int, message: str) -> None:
    response = http_get(f"{standin.base_url}{path}", headers=headers)
    assert response.status_code == status
    assert response.json() == {"error": {"code": status, "message": message}}


def test_unknown_routes_are_404(client: httpx.Client, standin: StandIn) -> None:
    for response in (client.get("/generation"), client.post("/activity"), client.get(f"{standin.base_url}/../../x")):
        assert response.status_code == 404
        assert response.json()["error"]["code"] == 404


# --------------------------------------------------------------------------- HTTP: faults


@pytest.mark.parametrize(
    ("kind", "content_type"),
    [
        ("429", "application/json"),
        ("500", "application/json"),
        ("502", "text/html"),
        ("503", "application/json"),
        ("408", "application/json"),
        ("524", "text/html"),
        ("529", "application/json"),
        ("401", "application/json"),
        ("403", "application/json"),
    ],
)
def test_error_faults(standin: StandIn, client: httpx.Client, kind: str, content_type: str) -> None:
    standin.inject(Fault(kind))
    response = client.get("/activity")
    assert response.status_code == int(kind)
    assert response.headers["content-type"] == content_type
    if content_type == "application/json":
        assert response.json()["error"]["code"] == int(kind)
    else:
        assert response.text.lstrip().startswith("<")
    assert client.get("/activity").status_code == 200  # one fault, one request
    assert [record.fault for record in standin.requests] == [kind, None]


def test_rate_limit_headers(standin: StandIn, client: httpx.Client) -> None:
    standin.inject(Fault("429", retry_after=2), Fault("503", retry_after=0.5), Fault("429"))
    limited = client.get("/credits")
    assert limited.json() == {"error": {"code": 429, "message": "Rate limit exceeded"}}
    assert limited.headers["retry-after"] == "2"
    reset_ms = int(limited.headers["x-ratelimit-reset"])
    assert 0 < reset_ms - time.time() * 1000 <= 2100
    unavailable = client.get("/credits")
    assert unavailable.status_code == 503 and unavailable.headers["retry-after"] == "0.5"
    bare = client.get("/credits")
    assert bare.status_code == 429 and "retry-after" not in bare.headers


def test_reset_fault_aborts_the_connection(standin: StandIn, client: httpx.Client) -> None:
    standin.inject(Fault("reset"))
    # A TCP reset surfaces as ReadError (ECONNRESET); a mere close would be a RemoteProtocolError.
    with pytest.raises(httpx.ReadError):
        client.get("/activity")
    assert standin.requests[-1].status is None and standin.requests[-1].fault == "reset"
    assert client.get("/activity").status_code == 200


def test_truncate_fault_sends_half_a_body(standin: StandIn, client: httpx.Client) -> None:
    standin.inject(Fault("truncate"))
    with pytest.raises(httpx.RemoteProtocolError, match="incomplete|complete message body"):
        client.get("/activity")
    assert client.get("/activity").status_code == 200


def test_slow_fault_trips_client_timeouts(standin: StandIn) -> None:
    standin.inject(Fault("slow", delay=0.4), Fault("slow", delay=0.2))
    with httpx.Client(verify=TLS, base_url=standin.base_url, headers=MANAGEMENT, timeout=0.1) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            impatient.get("/credits")
    with httpx.Client(verify=TLS, base_url=standin.base_url, headers=MANAGEMENT, timeout=2.0) as patient:
        started = time.monotonic()
        assert patient.get("/credits").status_code == 200
        assert time.monotonic() - started >= 0.2
    assert Fault("slow").wait == 5.0


def test_malformed_fault_corrupts_one_item(standin: StandIn, client: httpx.Client) -> None:
    day = busy_day(standin.dataset).isoformat()
    standin.inject(Fault("malformed"))
    broken = client.get("/activity", params={"date": day})
    assert broken.status_code == 200
    problems = [item_problems(item) for item in broken.json()["data"]]
    assert sum(bool(p) for p in problems) == 1
    clean = client.get("/activity", params={"date": day}).json()["data"]
    assert all(item_problems(item) == [] for item in clean)


def test_not_json_fault(standin: StandIn, client: httpx.Client) -> None:
    standin.inject(Fault("not_json"))
    response = client.get("/activity")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_faults_are_fifo_and_can_target_a_path(standin: StandIn, client: httpx.Client) -> None:
    standin.inject(Fault("500", path="/activity"), Fault("502"), Fault("503", path="/activity"))
    assert client.get("/credits").status_code == 502  # skips the /activity-only fault
    assert client.get("/keys").status_code == 200
    assert client.get("/activity").status_code == 500
    assert client.get("/activity").status_code == 503
    assert client.get("/activity").status_code == 200
    with pytest.raises(ValueError):
        Fault("418")


def _statuses_with_random_faults(seed: int) -> list[tuple[int | None, str | None]]:
    with StandIn(today=lambda: TODAY, fault_rate=0.5, fault_kinds=["500", "503", "not_json"], fault_seed=seed) as s:
        with httpx.Client(verify=TLS, base_url=s.base_url, headers=MANAGEMENT) as http:
            for _ in range(12):
                http.get("/credits")
        return [(record.status, record.fault) for record in s.requests]


def test_random_faults_are_seeded() -> None:
    first = _statuses_with_random_faults(seed=1)
    assert first == _statuses_with_random_faults(seed=1)
    assert first != _statuses_with_random_faults(seed=2)
    faults = {fault for _, fault in first}
    assert None in faults and len(faults) > 2


def test_fault_rate_can_change_at_runtime(standin: StandIn, client: httpx.Client) -> None:
    standin.set_fault_rate(1.0, kinds=["503"])
    assert {client.get("/credits").status_code for _ in range(3)} == {503}
    standin.set_fault_rate(0.0)
    assert client.get("/credits").status_code == 200
    with pytest.raises(ValueError):
        standin.set_fault_rate(1.5)


# --------------------------------------------------------------------------- HTTP: control, lifecycle


def test_control_endpoints(standin: StandIn, client: httpx.Client) -> None:
    root = standin.base_url.removesuffix("/api/v1")
    queued = http_post(f"{root}/_standin/faults", json={"faults": [{"kind": "429", "retry_after": 1}]})
    assert queued.json()["queued"] == 1
    limited = client.get("/activity")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    day = busy_day(standin.dataset).isoformat()
    before = client.get("/activity", params={"date": day}).content
    revised = http_post(f"{root}/_standin/revise", params={"date": day})
    assert revised.json() == {"date": day, "revision": 1}
    assert client.get("/activity", params={"date": day}).content != before
    log = http_get(f"{root}/_standin/requests").json()["data"]
    assert [(entry["path"], entry["status"], entry["fault"]) for entry in log] == [
        ("/api/v1/activity", 429, "429"),
        ("/api/v1/activity", 200, None),
        ("/api/v1/activity", 200, None),
    ]
    assert log[1]["params"] == {"date": day}
    assert http_post(f"{root}/_standin/faults", json={"rate": 1.0, "kinds": ["500"], "seed": 3}).status_code == 200
    assert client.get("/activity").status_code == 500
    assert http_post(f"{root}/_standin/faults", json={"faults": [{"kind": "teapot"}]}).status_code == 400
    assert http_post(f"{root}/_standin/revise", params={"date": "soon"}).status_code == 400


def test_latency_and_concurrency() -> None:
    with StandIn(today=lambda: TODAY, latency=1.0) as server:
        results: list[int] = []

        def fetch() -> None:
            results.append(http_get(f"{server.base_url}/credits", headers=MANAGEMENT).status_code)

        started = time.monotonic()
        threads = [threading.Thread(target=fetch) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
    assert results == [200] * 6
    # Answered side by side: one after another would take 6 s; the bound leaves room for a busy machine.
    assert 1.0 <= elapsed < 5.0


def _listen_overflows() -> int | None:
    """Linux's count of connections dropped because a listen queue was full (None elsewhere)."""
    try:
        lines = open("/proc/net/netstat").read().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split()))["ListenOverflows"])
    return None


def test_a_burst_of_connections_is_never_dropped_from_the_listen_queue() -> None:
    # A first sync opens ten or more connections at once (its series beside /activity).
    # With socketserver's backlog of 5 the kernel dropped the SYNs beyond it, and each such
    # request waited for the retransmission a second later: a stall no real server causes.
    if _listen_overflows() is None:
        pytest.skip("needs Linux's /proc/net/netstat to see dropped connections")
    with StandIn(today=lambda: TODAY) as server:
        host, port = httpx.URL(server.base_url).host, httpx.URL(server.base_url).port
        before = _listen_overflows()
        sockets = []
        try:
            for _ in range(40):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex((host, port))
                sockets.append(sock)
            pending, deadline = set(sockets), time.monotonic() + 10
            while pending and time.monotonic() < deadline:
                pending -= set(select.select([], list(pending), [], 0.1)[1])
            after = _listen_overflows()
        finally:
            for sock in sockets:
                sock.close()
    assert not pending
    assert after == before


def test_stop_is_prompt_even_with_a_request_in_flight() -> None:
    server = StandIn(today=lambda: TODAY).start()
    url = f"{server.base_url}/credits"
    server.inject(Fault("slow", delay=30))
    errors: list[Exception] = []

    def hang() -> None:
        try:
            http_get(url, headers=MANAGEMENT, timeout=10)
        except httpx.HTTPError as exc:
            errors.append(exc)

    thread = threading.Thread(target=hang)
    thread.start()
    time.sleep(0.1)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 10.0  # far below the 30 s the request would otherwise hold it
    thread.join(timeout=5)
    assert not thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        http_get(url, headers=MANAGEMENT, timeout=1)
    with pytest.raises(RuntimeError):
        server.base_url  # noqa: B018 (the property raises)


def test_credentials_never_reach_logs_or_stderr(
    standin: StandIn, client: httpx.Client, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.DEBUG, logger="etl.standin"):
        client.get("/activity", params={"date": WINDOW[0].isoformat()})
        http_get(f"{standin.base_url}/activity", headers=INFERENCE)
        standin.inject(Fault("reset"))
        with pytest.raises(httpx.TransportError):
            client.get("/activity")
    assert "/api/v1/activity" in caplog.text  # requests are logged ...
    assert DEMO_MANAGEMENT_KEY not in caplog.text and DEMO_INFERENCE_KEY not in caplog.text  # ... keys are not
    assert DEMO_MANAGEMENT_KEY not in repr(standin.requests)
    assert capfd.readouterr().err == ""
