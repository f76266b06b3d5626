"""Issue 9 items 4 and 5, issue 15: every attempt has a total deadline, retries are bounded
by time rather than by a small count, and Retry-After is honoured, all over real HTTP.

The stand-in trickles answers (one byte per interval, headers too if asked), sends chunked
bodies without Content-Length, and states Retry-After in seconds or as an HTTP date. Waits
are asserted on the arrival times in its request log, never on how fast this machine is.
"""

from __future__ import annotations

import configparser
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import KEY, query
from etl.client import OpenRouterClient, RetryPolicy
from etl.errors import Interrupted, TransientAPIError
from etl.standin import Fault, StandIn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import reliability_report as rr  # noqa: E402

# Fast waits; no max_attempts and no max_retry_seconds: the defaults are under test.
FAST = "[openrouter]\ntimeout_seconds = {timeout}\nbackoff_initial = 0.01\nbackoff_max = 0.05\n"
# Valid JSON trickled over ~3 s at 0.05 s a byte: code without a total deadline accepts it.
SMALL_BODY = b'{"data": [' + b" " * 50 + b"]}"
SEVEN_FAULTS = [
    Fault("429", retry_after=0.1),  # with Retry-After
    Fault("502"),  # the edge's HTML page
    Fault("reset"),
    Fault("not_json"),  # 200 with an HTML page
    Fault("truncate"),
    Fault("slow", delay=4.0),  # past the 1.5 s timeout
    Fault("503"),
]


def write_config(tmp_path: Path, text: str) -> None:
    (tmp_path / "config.toml").write_text(text)


def activity_log(api: StandIn) -> list:
    return [r for r in api.requests if r.path.endswith("/activity")]


def archived(url: str) -> int:
    try:
        return query(url, "SELECT count(*) FROM archived_days")[0][0]
    except Exception:  # no warehouse yet
        return 0


def error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def documented_shutdown_seconds(repo_root: Path) -> int:
    """The shutdown time that config.toml's [schedule] section promises."""
    schedule = (repo_root / "config.toml").read_text().split("\n[schedule]\n", 1)[1].split("\n[", 1)[0]
    found = re.search(r"stops within (\d+) seconds", schedule)
    assert found, "config.toml's [schedule] comments must state the daemon's shutdown time"
    return int(found.group(1))


# -- a total deadline per attempt -----------------------------------------------------------


def fast_client(api: StandIn, timeout: float, **policy) -> OpenRouterClient:
    retry = RetryPolicy(**{"initial": 0.01, "max_wait": 0.05, **policy})
    return OpenRouterClient(api.base_url, KEY, timeout=timeout, retry=retry)


@pytest.mark.parametrize("kind", ["trickle", "trickle_headers"])
def test_a_trickled_answer_is_cut_at_the_attempt_deadline_and_retried(api, kind):
    api.inject(Fault(kind, interval=0.05, body=SMALL_BODY, path="/activity"))
    with fast_client(api, timeout=0.5) as client:
        fetched = client.activity()
    assert fetched.attempts == 2  # the trickled answer was not waited out
    assert fetched.document["data"]  # the real answer, from the second attempt
    first, second = activity_log(api)
    assert first.fault == kind and second.fault is None
    assert second.at - first.at < 0.5 + 2.0  # the deadline, plus a generous margin for a busy machine


def test_a_server_that_always_trickles_ends_the_sync_with_a_clear_error(api, cli_env, run, tmp_path, warehouse_url):
    write_config(tmp_path, FAST.format(timeout=0.5) + "max_retry_seconds = 1.5\n")
    api.set_fault_rate(1.0, [Fault("trickle", interval=0.05, body=SMALL_BODY)])
    result = run("sync")
    assert result.exit_code == 1
    line = error_line(result.stderr)
    assert line.startswith("Error: GET /activity failed after ")
    assert "no complete answer within 0.5s" in line and "openrouter.timeout_seconds" in line
    assert "Traceback" not in result.stderr and KEY not in result.stderr + result.stdout
    assert archived(warehouse_url) == 0
    log = activity_log(api)
    assert len(log) >= 2
    assert log[-1].at - log[0].at <= 1.5 + 0.25  # no attempt starts once the retry budget is spent


def test_stop_ends_a_request_mid_body(api):
    """The stop event (SIGTERM in the daemon) is seen between two bytes, not after the body."""
    import threading

    api.inject(Fault("trickle", interval=0.2, path="/activity"))  # the real answer: hours long
    stop = threading.Event()
    client = OpenRouterClient(api.base_url, KEY, timeout=60, stop=stop)
    outcome: list[BaseException] = []

    def fetch() -> None:
        try:
            client.activity()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=fetch)
    worker.start()
    deadline = time.monotonic() + 30
    while not activity_log(api) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # let a few bytes through: the client is reading the body
    stop.set()
    worker.join(timeout=10)
    client.close()
    assert not worker.is_alive(), "the request did not notice the stop event"
    assert len(outcome) == 1 and isinstance(outcome[0], Interrupted), outcome
    assert "stop requested" in str(outcome[0])
    assert len(activity_log(api)) == 1  # not retried once stopping


def test_stop_ends_a_stuck_tls_handshake():
    """A server that accepts the connection and never answers the TLS hello: a handshake
    cannot be sliced, so it runs in a helper thread that the stop abandons."""
    import socket
    import threading

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)  # the kernel completes the TCP handshake; nobody ever reads
        stop = threading.Event()
        client = OpenRouterClient(f"https://127.0.0.1:{silent.getsockname()[1]}/api/v1", KEY, timeout=60, stop=stop)
        timer = threading.Timer(0.3, stop.set)
        timer.start()
        started = time.monotonic()
        with pytest.raises(Interrupted):
            client.activity()
        took = time.monotonic() - started
        client.close()
        timer.cancel()
    assert took < 10  # not the 60 s timeout


# -- retries bounded by time ----------------------------------------------------------------


def test_seven_different_faults_in_a_row_then_success_archives_the_day(api, cli_env, run, tmp_path, warehouse_url):
    # 1.5 s: enough for the final, successful answer on a loaded machine (a timeout there
    # would add an attempt), and still shorter than the slow fault.
    write_config(tmp_path, FAST.format(timeout=1.5))
    api.inject(*(Fault(f.kind, retry_after=f.retry_after, delay=f.delay, path="/activity") for f in SEVEN_FAULTS))
    result = run("sync")
    assert result.exit_code == 0, result.stderr
    assert archived(warehouse_url) == 30
    assert [r.fault for r in activity_log(api)] == [f.kind for f in SEVEN_FAULTS] + [None]
    assert "attempt 8" in result.stderr  # the retries were logged, each one line


def test_the_default_retry_budget_is_minutes_and_attempts_do_not_bind():
    policy = RetryPolicy()
    assert policy.max_total_seconds >= 300
    assert policy.max_attempts == 0  # no count limit unless configured


def test_an_explicit_attempt_limit_still_applies(api, cli_env, run, tmp_path):
    # A generous timeout: the 503s are immediate, and an attempt that timed out on a loaded
    # machine would reach the stand-in's log only after the sync had given up.
    write_config(tmp_path, FAST.format(timeout=10) + "max_attempts = 3\n")
    api.set_fault_rate(1.0, ["503"])
    result = run("sync")
    assert result.exit_code == 1
    assert error_line(result.stderr).startswith("Error: GET /activity failed after 3 attempt(s)")
    assert "openrouter.max_attempts" in result.stderr
    assert len(activity_log(api)) == 3


# -- Retry-After over real HTTP ---------------------------------------------------------------


def test_retry_after_as_an_http_date_is_honoured(api, cli_env, run, tmp_path, warehouse_url):
    write_config(tmp_path, FAST.format(timeout=5))
    api.inject(Fault("503", retry_after=1, retry_after_style="http-date", path="/activity"))
    result = run("sync")
    assert result.exit_code == 0, result.stderr
    first, second = activity_log(api)
    # The date is rounded up to a whole second, at least 1 s after the first request arrived.
    assert second.at - first.at >= 1.0 - 0.05
    assert archived(warehouse_url) == 30


def test_retry_after_above_backoff_max_is_honoured(api, cli_env, run, tmp_path, warehouse_url):
    write_config(tmp_path, FAST.format(timeout=5))  # backoff_max = 0.05
    api.inject(Fault("429", retry_after=1.2, path="/activity"))
    result = run("sync")
    assert result.exit_code == 0, result.stderr
    first, second = activity_log(api)
    assert second.at - first.at >= 1.2 - 0.05
    assert archived(warehouse_url) == 30


def test_retry_after_beyond_the_retry_budget_fails_at_once_and_says_why(api, cli_env, run, tmp_path, warehouse_url):
    write_config(tmp_path, FAST.format(timeout=5) + "max_retry_seconds = 60\n")
    api.inject(Fault("429", retry_after=3600, path="/activity"))
    result = run("sync")
    assert result.exit_code == 1
    line = error_line(result.stderr)
    assert line.startswith("Error: GET /activity failed after 1 attempt(s)")
    assert "Retry-After" in line and "3600" in line and "openrouter.max_retry_seconds" in line
    assert len(activity_log(api)) == 1  # no sleeping past the budget, no early retry either
    assert archived(warehouse_url) == 0


def test_retry_after_is_a_minimum_never_a_reason_to_hammer():
    """Retry-After: 0 does not make the client retry in a tight loop."""
    transport = httpx.MockTransport(lambda request: httpx.Response(503, headers={"Retry-After": "0"}, json={}))
    sleeps: list[float] = []
    retry = RetryPolicy(max_attempts=4, initial=0.5, multiplier=1.5, max_wait=60)
    client = OpenRouterClient("https://example.test/api/v1", KEY, retry=retry, transport=transport, sleep=sleeps.append)
    with pytest.raises(TransientAPIError):
        client.activity()
    assert len(sleeps) == 3 and all(wait >= 0.5 for wait in sleeps)


# -- chunked bodies -------------------------------------------------------------------------


def test_the_stand_in_sends_chunked_bodies_without_content_length(api):
    api.inject(Fault("chunked"))
    response = httpx.get(f"{api.base_url}/activity", headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200
    assert "content-length" not in response.headers and response.headers["transfer-encoding"] == "chunked"
    assert response.json()["data"]


def test_a_chunked_body_over_max_response_mb_is_refused_cleanly(api, cli_env, run, tmp_path, warehouse_url):
    write_config(tmp_path, FAST.format(timeout=10) + "max_response_mb = 1\n")
    api.inject(Fault("chunked", body=b'{"data": [' + b" " * (2 * 1024 * 1024) + b"]}", path="/activity"))
    result = run("sync")
    assert result.exit_code == 1
    line = error_line(result.stderr)
    assert "exceeds the 1,048,576-byte limit (openrouter.max_response_mb)" in line
    assert "Traceback" not in result.stderr
    assert archived(warehouse_url) == 0
    assert query(warehouse_url, "SELECT outcome FROM sync_runs") == [("failed",)]
    assert len(activity_log(api)) == 1  # refused, not retried


def test_a_chunked_body_within_the_cap_is_archived(api, cli_env, run, tmp_path, warehouse_url):
    write_config(tmp_path, FAST.format(timeout=10))
    api.inject(Fault("chunked", path="/activity"))
    assert run("sync").exit_code == 0
    assert archived(warehouse_url) == 30


# -- the daemon on SIGTERM mid-request --------------------------------------------------------


def test_sigterm_mid_trickle_stops_the_daemon_within_the_documented_time(repo_root, warehouse_url, tmp_path):
    bound = documented_shutdown_seconds(repo_root)
    write_config(tmp_path, "[openrouter]\ntimeout_seconds = 600\n")  # only the stop can end this request
    with StandIn(management_key=KEY) as api:
        api.inject(Fault("trickle", interval=0.2, path="/activity"))  # the real answer: hours long
        env = {**os.environ, "OPENROUTER_API_KEY": KEY, "OPENROUTER_BASE_URL": api.base_url,
               "OPENROUTER_ARCHIVE_DB": warehouse_url, "OPENROUTER_ARCHIVE_CONFIG": str(tmp_path / "config.toml")}
        daemon = subprocess.Popen([sys.executable, "-m", "etl", "run"], env=env, cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not activity_log(api) and time.monotonic() < deadline and daemon.poll() is None:
                time.sleep(0.02)
            assert activity_log(api), "the daemon never asked for /activity"
            time.sleep(0.5)  # a few bytes in: the daemon is reading the body
            daemon.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            _out, err = daemon.communicate(timeout=bound + 30)
            took = time.monotonic() - stopped
        finally:
            daemon.kill()
    assert daemon.returncode == 0, err
    assert took <= bound, f"stopped after {took:.1f}s; documented: {bound}s"
    assert "Traceback" not in err and KEY not in err
    assert "sync interrupted" in err and "daemon stopped" in err
    assert query(warehouse_url, "SELECT outcome FROM sync_runs") == [("interrupted",)]
    assert archived(warehouse_url) == 0


def test_the_systemd_unit_outwaits_the_documented_shutdown_time(repo_root):
    bound = documented_shutdown_seconds(repo_root)
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.read_string((repo_root / "scripts/deploy/openrouter-archive.service").read_text())
    assert int(unit["Service"]["TimeoutStopSec"]) > bound
    assert f"within {bound} seconds" in (repo_root / "README.md").read_text()


# -- the reliability report's row ---------------------------------------------------------


@pytest.mark.slow
def test_reliability_row_slow_answers_and_fault_streak():
    row = rr.slow_answers_and_fault_streaks()
    assert row.ok, row
    assert row.rows_lost == 0
