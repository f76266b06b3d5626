"""The response size limit at its boundary, and redirects: where the key must not go."""

from __future__ import annotations

import httpx
import pytest

from etl.client import OpenRouterClient, RetryPolicy
from etl.errors import APIError, InvalidResponseError

KEY = "sk-or-v1-secret-test-key-0123456789"
LIMIT = 1000


def body_of(size: int) -> bytes:
    head, tail = b'{"data": [', b"]}"
    return head + b" " * (size - len(head) - len(tail)) + tail


def client_for(handler, **kwargs):
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    retry = RetryPolicy(max_attempts=3, max_total_seconds=10, initial=0.01, multiplier=1.0, max_wait=0.01)
    client = OpenRouterClient("https://example.test/api/v1", KEY, transport=httpx.MockTransport(record), retry=retry,
                              sleep=lambda _s: None, **kwargs)
    return client, seen


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_of_exactly_the_limit_is_read(declared):
    body = body_of(LIMIT)

    def answer(_request):
        return httpx.Response(200, content=body if declared else iter([body[:500], body[500:]]))

    client, _ = client_for(answer, max_response_bytes=LIMIT)
    assert client.activity().body == body


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_one_byte_over_the_limit_is_refused_once(declared):
    body = body_of(LIMIT + 1)

    def answer(_request):
        return httpx.Response(200, content=body if declared else iter([body[:500], body[500:]]))

    client, seen = client_for(answer, max_response_bytes=LIMIT)
    with pytest.raises(InvalidResponseError, match="1,000-byte limit"):
        client.activity()
    assert len(seen) == 1


def test_a_redirect_is_not_followed_with_the_key():
    def answer(request):
        if request.url.host == "example.test":
            return httpx.Response(302, headers={"Location": "https://elsewhere.test/api/v1/activity"})
        return httpx.Response(200, json={"data": []})

    client, seen = client_for(answer)
    with pytest.raises(APIError, match="302"):
        client.activity()
    assert [r.url.host for r in seen] == ["example.test"]


def scripted_waits(answers, **policy):
    """The waits a client asks for while answered with ``answers`` (the last one repeats)."""
    queue = list(answers)
    sleeps: list[float] = []

    def answer(_request):
        return queue.pop(0) if len(queue) > 1 else queue[0]

    retry = RetryPolicy(**{"max_attempts": 16, "max_total_seconds": 10_000, "initial": 0.5, "multiplier": 1.5, "max_wait": 60.0, **policy})
    client = OpenRouterClient("https://example.test/api/v1", KEY, transport=httpx.MockTransport(answer), retry=retry, sleep=sleeps.append)
    try:
        client.activity()
    except APIError:
        pass
    return sleeps


def test_no_backoff_wait_exceeds_backoff_max():
    # README: 0.5 s x 1.5^n, at most 60 s a wait. The 15th wait would be 146 s uncapped.
    sleeps = scripted_waits([httpx.Response(503, json={"error": {"code": 503, "message": "down"}})])
    assert len(sleeps) == 15
    assert max(sleeps) == 60.0 and all(s <= 60.0 for s in sleeps)


def test_a_long_retry_after_is_honoured_above_backoff_max():
    # The server's word is a minimum (issue 9 item 5): backoff_max caps our own backoff only.
    too_long = httpx.Response(429, json={"error": {"code": 429, "message": "slow down"}}, headers={"Retry-After": "600"})
    sleeps = scripted_waits([too_long, httpx.Response(200, json={"data": []})], max_attempts=3)
    assert sleeps == [600.0]
