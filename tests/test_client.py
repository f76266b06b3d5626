"""Client behaviour that a real server cannot easily show: exact waits and budgets.

Faults a server can produce (resets, truncation, HTML pages, 401/403) are exercised
against the stand-in in test_sync_cli.py; here httpx.MockTransport scripts the answers.
"""

from __future__ import annotations

import httpx
import pytest

from etl.client import OpenRouterClient, RetryPolicy
from etl.errors import (
    AuthenticationError,
    BadRequestError,
    InvalidResponseError,
    NotFoundError,
    PermissionDeniedError,
    TransientAPIError,
)

KEY = "sk-or-v1-secret-test-key-0123456789"
OK = {"data": []}


def scripted(*answers):
    """A transport answering each request with the next of ``answers``."""
    queue = list(answers)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handler), seen


def make(transport, sleeps, **policy):
    retry = RetryPolicy(**{"max_attempts": 5, "max_total_seconds": 100, "initial": 0.5, "multiplier": 1.5, "max_wait": 60, **policy})
    return OpenRouterClient("https://example.test/api/v1", KEY, retry=retry, transport=transport, sleep=sleeps.append)


def error(status, message, headers=None):
    return httpx.Response(status, json={"error": {"code": status, "message": message}}, headers=headers)


def test_retry_after_is_honoured_then_success():
    transport, seen = scripted(error(429, "Rate limit exceeded", {"Retry-After": "7"}), httpx.Response(200, json=OK))
    sleeps: list[float] = []
    fetched = make(transport, sleeps).activity()
    assert fetched.document == OK and fetched.attempts == 2
    assert sleeps == [7.0]
    assert seen[0].headers["authorization"] == f"Bearer {KEY}"
    assert seen[0].headers["user-agent"].startswith("openrouter-archive/")


def test_ratelimit_reset_header_is_used_when_no_retry_after():
    import time

    import time_machine

    # The clock stands still, so the wait is exact however slow the machine is.
    with time_machine.travel(1_800_000_000.0, tick=False):
        reset_ms = str(int((time.time() + 3) * 1000))
        transport, _ = scripted(error(429, "Rate limit exceeded", {"X-RateLimit-Reset": reset_ms}), httpx.Response(200, json=OK))
        sleeps: list[float] = []
        make(transport, sleeps).activity()
    assert sleeps == [3.0]


def test_backoff_grows_exponentially_with_bounded_jitter():
    transport, _ = scripted(error(503, "down"), error(502, "down"), error(500, "down"), httpx.Response(200, json=OK))
    sleeps: list[float] = []
    make(transport, sleeps).activity()
    assert len(sleeps) == 3
    for n, wait in enumerate(sleeps):
        base = 0.5 * 1.5**n
        assert base <= wait <= base + 0.5


def test_attempts_are_bounded_and_the_error_is_clear():
    transport, seen = scripted(error(503, "Service Unavailable"))
    sleeps: list[float] = []
    with pytest.raises(TransientAPIError) as err:
        make(transport, sleeps, max_attempts=3).activity()
    assert len(seen) == 3
    assert "503 Service Unavailable" in str(err.value) and "3 attempt" in str(err.value)
    assert KEY not in str(err.value)


def test_total_retry_time_is_bounded():
    transport, seen = scripted(error(429, "Rate limit exceeded", {"Retry-After": "30"}))
    sleeps: list[float] = []
    with pytest.raises(TransientAPIError):
        make(transport, sleeps, max_attempts=50, max_total_seconds=0.01).activity()
    assert sleeps == []  # waiting 30 s would break the 0.01 s budget: give up at once
    assert len(seen) == 1


def test_network_errors_and_non_json_bodies_are_retried():
    transport, seen = scripted(
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        httpx.RemoteProtocolError("peer closed connection without sending complete message body"),
        httpx.Response(200, text="<html>bad gateway</html>", headers={"content-type": "text/html"}),
        httpx.Response(200, json=OK),
    )
    sleeps: list[float] = []
    assert make(transport, sleeps).activity().document == OK
    assert len(seen) == 5


@pytest.mark.parametrize(
    ("status", "message", "kind", "needle"),
    [
        (400, "Date must be within the last 30 (completed) UTC days", BadRequestError, "Date must be within"),
        (401, "Missing Authentication header", AuthenticationError, "OPENROUTER_API_KEY"),
        (403, "Only management keys can perform this operation", PermissionDeniedError, "management-keys"),
        (404, "Resource not found", NotFoundError, "base_url"),
    ],
)
def test_final_errors_are_not_retried_and_explained(status, message, kind, needle):
    transport, seen = scripted(error(status, message))
    sleeps: list[float] = []
    with pytest.raises(kind) as err:
        make(transport, sleeps).activity(date="2026-01-01")
    assert len(seen) == 1 and sleeps == []
    text = str(err.value)
    assert needle in text and message in text and KEY not in text


def test_oversized_body_is_refused():
    transport, seen = scripted(httpx.Response(200, content=b'{"data": [' + b" " * 2000 + b"]}"))
    client = OpenRouterClient("https://example.test/api/v1", KEY, transport=transport, max_response_bytes=1000)
    with pytest.raises(InvalidResponseError, match="exceeds the 1,000-byte limit"):
        client.activity()
    assert len(seen) == 1  # refused at once, not retried: a second attempt would be as big
