"""Extract: a small httpx client for OpenRouter's analytics endpoints.

What the API does that its contract does not say (the stand-in, ``etl/standin``, serves the
same, and ``tests/test_client.py`` checks each):

* ``GET /activity`` needs a *management* key; an inference key gets 403, a bad key 401.
* It returns the last 30 *completed* UTC days, never today, in one unpaginated response
  when ``date`` is omitted; ``date=YYYY-MM-DD`` outside that window is a 400.
* Errors are ``{"error": {"code": N, "message": "..."}}`` with the HTTP status equal to
  ``code``, except from the edge, where 5xx bodies may be HTML.
* 408, 429 and 5xx are transient (429 and 503 may say ``Retry-After`` in seconds, 429 may
  say ``X-RateLimit-Reset`` in epoch milliseconds); 400, 401, 403 and 404 are final.
* Rate limits are undocumented, so the caller keeps requests few.

The client retries transient failures with exponential backoff and jitter, for as long
as a time budget allows (``max_retry_seconds``; a count limit only if configured), and
returns the raw body with its parsed JSON so that the caller can archive exactly what
OpenRouter sent. ``Retry-After`` (seconds or an HTTP date) is a minimum wait, honoured
even above ``backoff_max``; one that would outlast the budget fails the request at once.

Each attempt has a total deadline of ``timeout_seconds`` covering connect, headers and
body (see ``etl.deadline``): a server trickling bytes cannot keep a sync running. The stop
event (SIGTERM in the daemon) ends a retry wait or a request in flight within a fraction
of a second.
"""

from __future__ import annotations

import email.utils
import functools
import json
import logging
import operator
import platform
import random
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    stop_when_event_set,
)
from tenacity.stop import stop_base

from etl import __version__
from etl.config import OpenRouterConfig
from etl.deadline import Guard, install
from etl.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    Interrupted,
    InvalidResponseError,
    NotFoundError,
    PermissionDeniedError,
    TransientAPIError,
)
from etl.fetched import Fetched
from etl.logs import redact

log = logging.getLogger(__name__)

USER_AGENT = f"openrouter-archive/{__version__} httpx/{httpx.__version__} python/{platform.python_version()}"
MANAGEMENT_KEYS_URL = "https://openrouter.ai/settings/management-keys"
RETRYABLE_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 0  # 0: no count limit, the time budget alone ends the retries
    max_total_seconds: float = 600.0
    initial: float = 0.5
    multiplier: float = 1.5
    max_wait: float = 60.0

    @classmethod
    def from_config(cls, cfg: OpenRouterConfig) -> RetryPolicy:
        return cls(cfg.max_attempts, cfg.max_retry_seconds, cfg.backoff_initial, cfg.backoff_multiplier, cfg.backoff_max)


def backoff_delay(attempt: int, policy: RetryPolicy, rand: Callable[[], float] = random.random) -> float:
    """Wait after failed attempt ``attempt`` (1-based): exponential, capped, plus jitter.

    The jitter (up to one initial wait) keeps many archivers, restarted together, from
    retrying in lockstep.
    """
    base = min(policy.max_wait, policy.initial * policy.multiplier ** (attempt - 1))
    return min(policy.max_wait, base + rand() * policy.initial)


@dataclass
class _Retryable(Exception):
    """Internal: a failure worth another attempt."""

    description: str
    retry_after: float | None = None
    status: int | None = None
    api_message: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.description


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process, as httpx builds it (certifi, or $SSL_CERT_FILE/_DIR).

    httpx builds a new one for every client by default, reading the whole CA bundle (about
    20 ms of CPU); the daemon makes a client per job and the tests one per case. A context
    may be shared by clients and threads.
    """
    return httpx.create_ssl_context()


class OpenRouterClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        max_response_bytes: int = 128 * 1024 * 1024,
        api_key_env: str = "OPENROUTER_API_KEY",
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self._retry = retry or RetryPolicy()
        self._stop = stop or threading.Event()
        # Waiting on the stop event instead of sleeping lets a daemon shut down mid-backoff.
        self._sleep: Callable[[float], object] = sleep or self._stop.wait
        self._timeout = timeout
        self._max_bytes = max_response_bytes
        self._key_env = api_key_env
        self._guard = Guard(self._stop)
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/",
            headers={
                "Authorization": f"Bearer {api_key}",
                "User-Agent": USER_AGENT,
                "X-Title": "openrouter-archive",
                "Accept": "application/json",
            },
            timeout=timeout,
            transport=transport,
            verify=_tls_context(),
            follow_redirects=False,
        )
        if transport is None:
            install(self._http, self._guard)

    @classmethod
    def from_config(cls, cfg: OpenRouterConfig, api_key: str, **kwargs: Any) -> OpenRouterClient:
        return cls(
            cfg.base_url,
            api_key,
            timeout=cfg.timeout_seconds,
            retry=RetryPolicy.from_config(cfg),
            max_response_bytes=cfg.max_response_mb * 1024 * 1024,
            api_key_env=cfg.api_key_env,
            **kwargs,
        )

    def __repr__(self) -> str:  # the default would be harmless, but say so explicitly
        return f"OpenRouterClient(base_url={str(self._http.base_url)!r})"

    def __enter__(self) -> OpenRouterClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- endpoints -------------------------------------------------------------------------

    def activity(self, date: str | None = None, **filters: str | None) -> Fetched:
        """``GET /activity``: one day with ``date``, else the whole 30-day window."""
        params = {k: v for k, v in {"date": date, **filters}.items() if v is not None}
        return self.get("activity", params)

    def credits(self) -> Fetched:
        return self.get("credits", {})

    def list_keys(self, include_disabled: bool = True, max_pages: int = 1000) -> tuple[list[dict[str, Any]], list[Fetched]]:
        """Every API key of the account, following ``offset`` until a page comes back empty.

        Disabled keys are included by default: a disabled key still has history.
        """
        keys: list[dict[str, Any]] = []
        pages: list[Fetched] = []
        for _ in range(max_pages):
            params = {"offset": str(len(keys))} | ({"include_disabled": "true"} if include_disabled else {})
            page = self.get("keys", params)
            pages.append(page)
            data = page.document.get("data") if isinstance(page.document, dict) else None
            if not isinstance(data, list) or not all(isinstance(k, dict) and isinstance(k.get("hash"), str) for k in data):
                raise InvalidResponseError(f"GET /keys?offset={len(keys)}: expected a 'data' list of keys with a 'hash'")
            if not data:
                return keys, pages
            keys.extend(data)
        raise InvalidResponseError(f"GET /keys: still more keys after {max_pages} pages; giving up")

    def analytics_meta(self) -> Fetched:
        """``GET /analytics/meta``: the metrics, dimensions, operators and granularities on offer."""
        return self.get("analytics/meta", {})

    def analytics_query(
        self, body: Mapping[str, Any], around_attempt: Callable[[], AbstractContextManager[object]] | None = None,
        decode: Callable[[bytes], Any] = json.loads,
    ) -> Fetched:
        """``POST /analytics/query`` with a JSON body; same retries and deadlines as ``get``.

        ``Fetched.params`` holds the body as canonical JSON under ``query``, so that the raw
        archive records which query an answer belongs to. Every attempt, retries included, runs
        inside ``around_attempt()``: the caller's rate limiter holds a slot from before the
        request is sent until its answer is in, and counts each attempt, as OpenRouter does.
        ``decode`` turns the bytes into ``Fetched.document`` (ValueError: not JSON, retried),
        e.g. decoding and checking in one pass (``validate_analytics.answer_decoder``).
        """
        return self._request("POST", "analytics/query", {}, dict(body), around_attempt, decode)

    # -- machinery -------------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, str]) -> Fetched:
        return self._request("GET", path, params)

    def _request(
        self, method: str, path: str, params: Mapping[str, str], json_body: dict[str, Any] | None = None,
        around_attempt: Callable[[], AbstractContextManager[object]] | None = None, decode: Callable[[bytes], Any] = json.loads,
    ) -> Fetched:
        policy = self._retry
        stops: list[stop_base] = [stop_before_delay(policy.max_total_seconds), stop_when_event_set(self._stop)]
        if policy.max_attempts:
            stops.append(stop_after_attempt(policy.max_attempts))
        retrying = Retrying(
            retry=retry_if_exception_type(_Retryable),
            stop=functools.reduce(operator.or_, stops),
            wait=self._wait,
            sleep=lambda seconds: None if self._sleep(seconds) else None,  # tenacity wants a None-returning sleep
            before_sleep=self._log_retry,
            reraise=True,
        )
        started = time.monotonic()
        try:
            for attempt in retrying:
                with attempt, around_attempt() if around_attempt is not None else nullcontext():
                    fetched = self._attempt(path, dict(params), method, json_body, decode)
                    return Fetched(**{**fetched.__dict__, "attempts": attempt.retry_state.attempt_number})
        except _Retryable as exc:
            if self._stop.is_set():
                raise Interrupted(f"{method} /{path} interrupted while retrying ({exc})") from None
            n = retrying.statistics.get("attempt_number", 1)
            elapsed = time.monotonic() - started
            raise TransientAPIError(
                f"{method} /{path} failed after {n} attempt(s) in {elapsed:.1f}s ({self._why_stopped(exc, n, elapsed)}); last error: {exc}",
                status=exc.status,
                api_message=exc.api_message,
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _why_stopped(self, exc: _Retryable, attempts: int, elapsed: float) -> str:
        policy = self._retry
        if policy.max_attempts and attempts >= policy.max_attempts:
            return f"openrouter.max_attempts = {policy.max_attempts}"
        budget = f"the {policy.max_total_seconds:g}s retry budget (openrouter.max_retry_seconds)"
        if exc.retry_after is not None and elapsed + exc.retry_after >= policy.max_total_seconds:
            return f"the server asked to wait {exc.retry_after:.1f}s (Retry-After), past {budget}"
        return f"{budget} is spent"

    def _wait(self, state: RetryCallState) -> float:
        """The backoff, or the server's Retry-After if longer: it is a minimum, and a
        ``Retry-After: 0`` must not turn the retries into a tight loop. Above backoff_max
        too; past the budget, stop_before_delay ends the retries before any sleep."""
        exc = state.outcome.exception() if state.outcome else None
        backoff = backoff_delay(state.attempt_number, self._retry)
        retry_after = getattr(exc, "retry_after", None)
        return backoff if retry_after is None else max(retry_after, backoff)

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        policy = self._retry
        of = f" of {policy.max_attempts}" if policy.max_attempts else ""
        left = max(0.0, policy.max_total_seconds - (state.seconds_since_start or 0.0) - wait)
        log.warning("%s; retrying in %.1fs (attempt %d%s; %.0fs of the retry budget left)", exc, wait, state.attempt_number + 1, of, left)

    def _attempt(
        self, path: str, params: dict[str, str], method: str = "GET", json_body: dict[str, Any] | None = None,
        decode: Callable[[bytes], Any] = json.loads,
    ) -> Fetched:
        what = f"{method} /{path}" + (f"?{httpx.QueryParams(params)}" if params else "")
        self._check_stop(what)
        try:
            with self._guard.attempt(self._timeout) as deadline, self._http.stream(method, path, params=params, json=json_body) as response:
                if response.status_code != 200:
                    response.read()
                    raise self._status_error(what, response)
                body = self._read_capped(what, response, deadline)
                content_type = response.headers.get("content-type", "")
        except httpx.TimeoutException as exc:
            self._check_stop(what)
            raise _Retryable(self._timed_out(what, exc)) from None
        except httpx.TransportError as exc:
            self._check_stop(what)
            raise _Retryable(f"{what}: network error: {type(exc).__name__}: {exc or 'connection lost'}") from None
        try:
            document = decode(body)
        except ValueError as exc:
            # An edge proxy can answer 200 with an HTML page; worth another attempt.
            raise _Retryable(f"{what}: the body is not JSON ({_short(exc)}): {_snippet(body)}") from None
        if json_body is not None:
            params = {**params, "query": json.dumps(json_body, sort_keys=True, separators=(",", ":"))}
        return Fetched(path, params, 200, content_type, body, document, datetime.now(timezone.utc))

    def _check_stop(self, what: str) -> None:
        if self._stop.is_set():
            raise Interrupted(f"{what}: interrupted: stop requested")

    def _timed_out(self, what: str, exc: Exception | None = None) -> str:
        kind = f"; {type(exc).__name__}" if exc is not None else ""
        return f"{what}: no complete answer within {self._timeout:g}s (openrouter.timeout_seconds{kind})"

    def _read_capped(self, what: str, response: httpx.Response, deadline: float) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self._max_bytes:
            raise InvalidResponseError(f"{what}: response of {int(declared):,} bytes exceeds the {self._max_bytes:,}-byte limit (openrouter.max_response_mb)")
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            # The guard bounds each read; this also holds for a transport without it.
            self._check_stop(what)
            if time.monotonic() > deadline:
                raise _Retryable(self._timed_out(what))
            size += len(chunk)
            if size > self._max_bytes:
                raise InvalidResponseError(f"{what}: response exceeds the {self._max_bytes:,}-byte limit (openrouter.max_response_mb)")
            chunks.append(chunk)
        return b"".join(chunks)

    def _status_error(self, what: str, response: httpx.Response) -> Exception:
        status = response.status_code
        api_message = _api_message(response)
        detail = f"{status} {api_message}" if api_message else f"{status} {response.reason_phrase}"
        if status in RETRYABLE_STATUSES:
            return _Retryable(f"{what}: {detail}", retry_after=_retry_after(response), status=status, api_message=api_message)
        if status == 401:
            return AuthenticationError(
                f"OpenRouter rejected the API key ({detail}). Check that ${self._key_env} holds a valid management key.",
                status=status, api_message=api_message,
            )
        if status == 403:
            return PermissionDeniedError(
                f"OpenRouter refused {what.split('?')[0]} ({detail}). This endpoint needs a management key, not an "
                f"inference key: create one at {MANAGEMENT_KEYS_URL} and put it in ${self._key_env}.",
                status=status, api_message=api_message,
            )
        if status == 404:
            return NotFoundError(
                f"{what}: not found ({detail}) at {response.request.url.copy_with(query=None)}; check openrouter.base_url.",
                status=status, api_message=api_message,
            )
        if status == 400:
            return BadRequestError(f"{what}: OpenRouter refused the request ({detail})", status=status, api_message=api_message)
        return APIError(f"{what}: unexpected answer {detail}", status=status, api_message=api_message)


def _api_message(response: httpx.Response) -> str | None:
    """OpenRouter's own error text, or None when the body is not its JSON error shape."""
    try:
        doc = response.json()
    except ValueError:
        return None
    error = doc.get("error") if isinstance(doc, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    # Masked before it becomes part of any exception: an echoed Authorization header
    # would otherwise travel into logs and the run log.
    return redact(str(message))[:300] if message else None


def _retry_after(response: httpx.Response, now: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asked us to wait, from Retry-After or X-RateLimit-Reset."""
    value = response.headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - now())
            except (TypeError, ValueError):
                return None
    reset = response.headers.get("x-ratelimit-reset")
    if reset:
        try:
            return max(0.0, float(reset) / 1000.0 - now())
        except ValueError:
            return None
    return None


def _short(exc: Exception) -> str:
    return str(exc).split("\n")[0][:120]


def _snippet(body: bytes, limit: int = 80) -> str:
    text = redact(body[:limit].decode("utf-8", "replace").replace("\n", " "))
    return repr(text + ("…" if len(body) > limit else ""))
