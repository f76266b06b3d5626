"""End to end: the real CLI, real HTTP over loopback to the stand-in, a real SQLite file."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest
import time_machine

from conftest import INFERENCE_KEY, KEY, query
from etl.standin import Fault
from etl.window import completed_window, utc_today
from oracle import assert_same_rows, window_rows

# The core of loading, syncing and status, on SQLite and on PostgreSQL.
pytestmark = pytest.mark.both_backends


ACTIVITY = (
    "SELECT date, endpoint_id, model, model_permaslug, provider_name, usage, byok_usage_inference, requests, "
    "prompt_tokens, completion_tokens, reasoning_tokens, cached_tokens FROM activity ORDER BY date, endpoint_id"
)


def expected_rows(api, today) -> list[tuple]:
    """What the stand-in's generator serves for the window, normalised without the code under test."""
    return window_rows(api.dataset, today)


def edge_confirmations(api, today, ends=("first", "last")) -> int:
    """`date=` requests a sync adds for window ends without activity (nothing shows them inside the window)."""
    first, last = completed_window(today)
    return sum(not api.dataset.activity(d) for end, d in (("first", first), ("last", last)) if end in ends)


def test_backfill_archives_the_window_exactly_and_twice_changes_nothing(cli_env, run, api, warehouse_url):
    first = run("backfill")
    assert first.exit_code == 0, first.output
    assert f"30 of 30 day(s) archived in {1 + edge_confirmations(api, utc_today())} request(s)" in first.stdout
    content = query(warehouse_url, ACTIVITY)
    assert_same_rows(content, expected_rows(api, utc_today()))
    assert len({r[0] for r in content}) < 30  # the stand-in has days without activity...
    assert query(warehouse_url, "SELECT count(*) FROM archived_days")[0][0] == 30  # ...archived all the same
    assert query(warehouse_url, "SELECT count(*) FROM archived_days WHERE row_count = 0")[0][0] >= 1

    stamps = "SELECT first_archived_at, updated_at FROM activity ORDER BY date, endpoint_id"
    stamps_before = query(warehouse_url, stamps)
    second = run("backfill")
    assert second.exit_code == 0
    assert f"0 new, 0 changed, {len(content)} unchanged" in second.stdout
    assert query(warehouse_url, ACTIVITY) == content
    assert query(warehouse_url, stamps) == stamps_before  # unchanged rows are not even touched


def test_both_date_formats_and_float_counts_are_archived(cli_env, run, api, warehouse_url):
    api.date_style, api.float_counts = "live", "always"
    assert run("backfill").exit_code == 0
    assert query(warehouse_url, "SELECT DISTINCT length(date) FROM activity") == [(10,)]
    # Stored as integers (SQLite would hand a REAL back as a float), on either engine.
    assert [tuple(type(v) for v in r) for r in query(warehouse_url, "SELECT requests, prompt_tokens FROM activity LIMIT 1")] == [(int, int)]
    assert_same_rows(query(warehouse_url, ACTIVITY), expected_rows(api, utc_today()))


def test_raw_responses_keep_every_byte(cli_env, run, warehouse_url):
    import gzip

    assert run("backfill").exit_code == 0
    ((body, size),) = query(warehouse_url, "SELECT body, body_bytes FROM raw_response_bodies")
    document = json.loads(gzip.decompress(body))
    assert len(gzip.decompress(body)) == size
    assert any("cached_tokens" in item for item in document["data"])  # fields beyond the spec are kept


def test_sync_after_backfill_refetches_recent_days_in_one_request(cli_env, run, api):
    assert run("backfill").exit_code == 0
    api.requests.clear()
    result = run("sync")
    assert result.exit_code == 0
    confirmations = edge_confirmations(api, utc_today(), ends=("last",))
    assert f"2 day(s) archived in {1 + confirmations} request(s)" in result.stdout
    assert [r.path for r in api.requests] == ["/api/v1/activity"] * (1 + confirmations)
    assert result.stderr == ""  # the other 28 days of the answer are not "outside the window"


def test_revised_day_is_updated_by_sync(cli_env, run, api, warehouse_url):
    assert run("backfill").exit_code == 0
    # Of the two days a sync refetches, take one with activity: the stand-in leaves one day in
    # nine empty, never two in a row, so this never depends on the calendar.
    yesterday = utc_today() - timedelta(days=1)
    day = yesterday if api.dataset.activity(yesterday) else yesterday - timedelta(days=1)
    before = query(warehouse_url, f"SELECT sum(requests) FROM activity WHERE date = '{day}'")[0][0]
    assert before > 0
    api.dataset.revise(day)
    result = run("sync")
    assert result.exit_code == 0
    changed = query(warehouse_url, "SELECT rows_inserted + rows_updated FROM sync_runs ORDER BY id DESC LIMIT 1")[0][0]
    assert changed > 0
    after = query(warehouse_url, f"SELECT sum(requests) FROM activity WHERE date = '{day}'")[0][0]
    assert after > before
    assert_same_rows(query(warehouse_url, ACTIVITY), expected_rows(api, utc_today()))


@pytest.mark.parametrize(
    "fault",
    [
        Fault("429", retry_after=0.05),
        Fault("500"),
        Fault("502"),
        Fault("503", retry_after=0.01),
        Fault("408"),
        Fault("524"),
        Fault("529"),
        Fault("reset"),
        Fault("truncate"),
        Fault("not_json"),
        Fault("slow", delay=3.0),  # beyond the 2 s timeout of the test config
    ],
    ids=lambda f: f.kind,
)
def test_each_transient_fault_is_retried_to_success(cli_env, run, api, warehouse_url, fault):
    api.inject(fault, fault)
    result = run("backfill")
    assert result.exit_code == 0, result.output
    assert "30 of 30" in result.stdout
    assert result.stderr.count("retrying") == 2
    assert sum(r.fault is None for r in api.requests) == 1 + edge_confirmations(api, utc_today())
    assert_same_rows(query(warehouse_url, ACTIVITY), expected_rows(api, utc_today()))


def test_outage_fails_cleanly_and_the_next_sync_catches_up(cli_env, run, api, warehouse_url):
    api.inject(*[Fault("503")] * 5)
    result = run("sync")
    assert result.exit_code == 1
    assert "Error: GET /activity failed after 5 attempt(s)" in result.stderr
    assert "Traceback" not in result.output
    assert query(warehouse_url, "SELECT count(*) FROM activity") == [(0,)]
    assert query(warehouse_url, "SELECT count(*) FROM archived_days") == [(0,)]
    assert query(warehouse_url, "SELECT outcome, days_fetched FROM sync_runs") == [("failed", 0)]

    again = run("sync")
    assert again.exit_code == 0
    assert query(warehouse_url, "SELECT count(*) FROM archived_days") == [(30,)]


def test_malformed_item_rejects_only_its_day(cli_env, run, api, warehouse_url):
    api.inject(Fault("malformed"))
    result = run("backfill")
    assert result.exit_code == 1
    rejected = [line for line in result.stdout.splitlines() if " rejected " in line]
    assert len(rejected) == 1
    day = rejected[0].split()[0]
    assert "item" in rejected[0]
    assert query(warehouse_url, f"SELECT count(*) FROM activity WHERE date = '{day}'") == [(0,)]
    assert query(warehouse_url, "SELECT count(*) FROM archived_days") == [(29,)]
    assert query(warehouse_url, "SELECT outcome FROM sync_runs") == [("partial",)]

    assert run("sync").exit_code == 0  # the rejected day is missing, so the next sync fetches it
    assert_same_rows(query(warehouse_url, ACTIVITY), expected_rows(api, utc_today()))


def test_wrong_key_is_a_clear_401(cli_env, run, monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-v1-not-a-real-key-000000000000")
    result = run("sync")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: OpenRouter rejected the API key (401")
    assert "not-a-real-key" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_inference_key_gets_the_management_key_explanation(cli_env, run, monkeypatch):
    monkeypatch.setenv("OPENROUTER_API_KEY", INFERENCE_KEY)
    result = run("sync")
    assert result.exit_code == 1
    assert "needs a management key" in result.stderr
    assert "Only management keys can perform this operation" in result.stderr
    assert "https://openrouter.ai/settings/management-keys" in result.stderr
    assert INFERENCE_KEY not in result.output


def test_missing_key_points_to_the_fix(cli_env, run, monkeypatch):
    monkeypatch.delenv("OPENROUTER_API_KEY")
    result = run("sync")
    assert result.exit_code == 2
    assert "no API key" in result.stderr and "demo" in result.stderr


def test_key_never_appears_in_output_logs_or_database(cli_env, run, api, warehouse_url, tmp_path):
    api.inject(Fault("429", retry_after=0.01), Fault("truncate"))
    outputs = [run("-vv", "backfill"), run("-vv", "sync"), run("-vv", "credits"), run("status", "--json"), run("status")]
    assert all(r.exit_code == 0 for r in outputs), [r.output for r in outputs]
    everything = "".join(r.output for r in outputs)
    assert "retrying" in everything  # the noisy path was exercised
    assert KEY not in everything
    for path in tmp_path.iterdir():
        if path.name.startswith("archive.db"):
            assert KEY.encode() not in path.read_bytes()


def test_history_beyond_the_window_is_kept(cli_env, run, api, warehouse_url):
    start = datetime.now(timezone.utc).replace(hour=12)
    with time_machine.travel(start, tick=True):
        assert run("backfill").exit_code == 0
    with time_machine.travel(start + timedelta(days=20), tick=True):
        result = run("sync")
        assert result.exit_code == 0
        status = json.loads(run("status", "--json").stdout)
    assert status["days_archived"] == 50
    assert status["pending"] == [] and status["lost"] == []
    assert query(warehouse_url, "SELECT count(DISTINCT date) FROM archived_days") == [(50,)]


def test_status_reports_days_lost_after_a_long_outage(cli_env, run):
    start = datetime.now(timezone.utc).replace(hour=12)
    with time_machine.travel(start, tick=True):
        assert run("backfill").exit_code == 0
    with time_machine.travel(start + timedelta(days=45), tick=True):
        before = json.loads(run("status", "--json").stdout)
        assert len(before["lost"]) == 15 and len(before["pending"]) == 30
        assert run("sync").exit_code == 0
        after = json.loads(run("status", "--json").stdout)
        text_status = run("status").stdout
    assert len(after["lost"]) == 15 and after["pending"] == []
    assert after["days_archived"] == 60
    assert "15 day(s)" in text_status and "gone for good" in text_status


def test_status_on_a_fresh_install_creates_nothing(cli_env, run, tmp_path):
    result = run("status")
    assert result.exit_code == 0
    assert "not created yet" in result.stdout
    assert not (tmp_path / "archive.db").exists()


def test_credits_are_stored_and_printed(cli_env, run, warehouse_url):
    result = run("credits")
    assert result.exit_code == 0
    assert "remaining" in result.stdout
    ((total, used),) = query(warehouse_url, "SELECT total_credits, total_usage FROM credits_snapshots")
    assert f"${total - used:,.2f}" in result.stdout


def test_db_upgrade_is_idempotent(cli_env, run):
    from etl.migrate import HEAD_REVISION

    assert f"migrated empty -> {HEAD_REVISION}" in run("db", "upgrade").stdout
    assert f"already at revision {HEAD_REVISION}" in run("db", "upgrade").stdout


def test_bad_config_is_one_line_and_exit_2(cli_env, run, tmp_path):
    (tmp_path / "config.toml").write_text("[sync]\nrefetch_days = 'lots'\n")
    result = run("sync")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "config.toml: [sync] refetch_days" in result.stderr


@pytest.mark.sqlite_only  # a folder that cannot be created
def test_unreachable_warehouse_is_a_clear_error(cli_env, run, monkeypatch, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("OPENROUTER_ARCHIVE_DB", f"sqlite:///{blocker}/sub/archive.db")
    result = run("sync")
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: cannot create the warehouse folder")


def test_demo_needs_no_key_and_no_setup(run, tmp_path):
    result = run("demo", "--db", str(tmp_path / "demo.db"))
    assert result.exit_code == 0, result.output
    assert "30 of 30 day(s) archived" in result.stdout
    assert "Spend by model" in result.stdout
    assert (tmp_path / "demo.db").exists()


def test_real_process_sync_and_module_entry_point(cli_env):
    done = subprocess.run([sys.executable, "-m", "etl", "sync"], env={**__import__("os").environ, **cli_env}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "30 of 30 day(s) archived" in done.stdout
    version = subprocess.run([sys.executable, "-m", "etl", "--version"], capture_output=True, text=True, timeout=30)
    assert version.stdout.startswith("openrouter-archive, version ")


def test_a_sync_collects_cycles_less_often_and_puts_the_collector_back_after():
    import gc

    from etl.cli import SYNC_GC_THRESHOLD, _collector_skips_what_exists

    before = gc.get_threshold()
    with _collector_skips_what_exists():
        assert gc.get_threshold()[0] >= SYNC_GC_THRESHOLD and gc.get_threshold()[1:] == before[1:]
        assert gc.get_freeze_count() > 0  # what existed is left out of the scans
        assert gc.isenabled()  # still collected, only less often
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_a_collector_switched_off_by_threshold_stays_off_during_a_sync():
    import gc

    from etl.cli import _collector_skips_what_exists

    before = gc.get_threshold()
    gc.set_threshold(0)
    try:
        with _collector_skips_what_exists():
            assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*before)
