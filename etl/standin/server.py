"""A local stand-in for OpenRouter's analytics API, served over real HTTP.

`StandIn` runs a `ThreadingHTTPServer` in a daemon thread and answers
`GET /api/v1/{activity,credits,key,keys}` from a `Dataset`, with the live API's
quirks (two date formats, counts as doubles, Bearer auth with management keys)
and injectable faults (HTTP errors, resets, truncated bodies, slow, trickled, chunked and
malformed answers) so that clients can be tested against what the real network does.

Out-of-process callers drive it through unauthenticated control endpoints under
`/_standin/` (faults, revisions, the clock offset, the request log).
"""

from __future__ import annotations

import email.utils
import json
import logging
import math
import random
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NamedTuple
from collections.abc import Callable, Sequence
from urllib.parse import parse_qs, urlsplit

from etl.standin.analytics import Analytics, QueryError
from etl.standin.data import (
    DEMO_INFERENCE_KEY,
    DEMO_MANAGEMENT_KEY,
    Dataset,
    activity_window,
    parse_api_day,
    serialize_item,
    stable_int,
    uses_float_counts,
    uses_live_date_style,
)

__all__ = ["FAULT_KINDS", "Fault", "RequestRecord", "StandIn", "corrupt_item"]

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
CONTROL_PREFIX = "/_standin"
DEFAULT_SLOW_DELAY = 5.0
RANDOM_SLOW_DELAY = 0.2
DEFAULT_TRICKLE_INTERVAL = 1.0
_CHUNK = 64 * 1024
_MAX_BODY = 1 << 20

# Statuses that the fault injector answers itself: (status, JSON error message), where
# "<edge>" means an HTML page from the CDN edge instead of OpenRouter's JSON error.
_ERROR_FAULTS: dict[str, tuple[int, str]] = {
    "401": (401, "User not found."),
    "403": (403, "Only management keys can perform this operation"),
    "408": (408, "Request timed out"),
    "429": (429, "Rate limit exceeded"),
    "500": (500, "Internal Server Error"),
    "502": (502, "<edge>"),
    "503": (503, "Service Unavailable"),
    "524": (524, "<edge>"),
    "529": (529, "Provider returned error: overloaded"),
}
# Kinds that answer 200 with `body`, or with the real answer when `body` is empty.
_STREAMED_FAULTS = frozenset({"trickle", "trickle_headers", "chunked"})
FAULT_KINDS = frozenset(_ERROR_FAULTS) | {"reset", "truncate", "slow", "malformed", "not_json", "body"} | _STREAMED_FAULTS
RETRY_AFTER_STYLES = ("seconds", "http-date")

_EDGE_PAGES = {
    502: "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n",
    524: '<!DOCTYPE html>\n<html lang="en-US">\n<head><title>openrouter.ai | 524: A timeout occurred</title></head>\n'
    "<body><h1>A timeout occurred</h1><p>Error code 524</p>"
    "<p>The origin web server timed out responding to this request.</p></body>\n</html>\n",
}

_MISSING_AUTH = "Missing Authentication header"
_BAD_KEY = "User not found."
_NOT_MANAGEMENT = "Only management keys can perform this operation"
_OUTSIDE_WINDOW = "Date must be within the last 30 (completed) UTC days"


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour.

    `delay` seconds are waited before the fault plays out (for "slow" it is the
    whole point; 0 means 5 s). `path`: only requests whose path ends with it are
    affected, e.g. "/activity"; others pass through and leave the fault queued.
    Kind "body" answers 200 with exactly `body` (hostile-input tests).

    Streamed kinds answer with `body`, or with the real answer when `body` is empty:
    "trickle" sends the headers at once, then the body one byte every `interval`
    seconds; "trickle_headers" trickles the status line and headers too; "chunked"
    sends the body with `Transfer-Encoding: chunked` and no `Content-Length`.
    `retry_after_style` "http-date" sends a 429's or 503's `Retry-After` as an HTTP
    date (rounded up to the second) instead of seconds.
    """

    kind: str
    retry_after: float | None = None
    delay: float = 0.0
    path: str | None = None
    body: bytes = b""
    interval: float = DEFAULT_TRICKLE_INTERVAL
    retry_after_style: str = "seconds"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if self.retry_after_style not in RETRY_AFTER_STYLES:
            raise ValueError(f"retry_after_style must be one of {RETRY_AFTER_STYLES}, not {self.retry_after_style!r}")
        if not self.interval >= 0:
            raise ValueError("interval must be at least 0")

    def applies_to(self, path: str) -> bool:
        return self.path is None or path.endswith(self.path)

    @property
    def wait(self) -> float:
        if self.kind == "slow" and self.delay <= 0:
            return DEFAULT_SLOW_DELAY
        return max(0.0, self.delay)


DEFAULT_FAULT_KINDS: tuple[Fault, ...] = (
    Fault("429"),
    Fault("500"),
    Fault("502"),
    Fault("503"),
    Fault("reset"),
    Fault("truncate"),
    Fault("slow", delay=RANDOM_SLOW_DELAY),
)


class RequestRecord(NamedTuple):
    """One API request as the stand-in saw it (never includes credentials)."""

    method: str
    path: str
    params: dict[str, str]
    status: int | None  # None when the connection was reset instead of answered
    fault: str | None
    at: float = 0.0  # time.time() when the request arrived, before any latency or fault delay


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json_response(status: int, payload: Any, headers: dict[str, str] | None = None) -> _Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return _Response(status, body, headers=headers or {})


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> _Response:
    return _json_response(status, {"error": {"code": status, "message": message}}, headers)


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def _fault_response(fault: Fault) -> _Response:
    status, message = _ERROR_FAULTS[fault.kind]
    if status in _EDGE_PAGES:
        return _Response(status, _EDGE_PAGES[status].encode(), content_type="text/html")
    headers: dict[str, str] = {}
    if fault.retry_after is not None and status in (429, 503):
        if fault.retry_after_style == "http-date":
            headers["Retry-After"] = email.utils.formatdate(math.ceil(time.time() + fault.retry_after), usegmt=True)
        else:
            headers["Retry-After"] = _format_seconds(fault.retry_after)
    if status == 429:
        reset_in = fault.retry_after if fault.retry_after is not None else 1.0
        headers["X-RateLimit-Limit"] = "20"
        headers["X-RateLimit-Remaining"] = "0"
        headers["X-RateLimit-Reset"] = str(int((time.time() + reset_in) * 1000))
    return _error(status, message, headers)


def _coerce_fault(spec: str | Fault | dict[str, Any], *, random_pick: bool = False) -> Fault:
    if isinstance(spec, Fault):
        return spec
    if isinstance(spec, str):
        # A bare "slow" among random kinds must not stall a test suite for 5 s.
        return Fault(spec, delay=RANDOM_SLOW_DELAY) if random_pick and spec == "slow" else Fault(spec)
    allowed = {"kind", "retry_after", "delay", "path", "interval", "retry_after_style"}
    unknown = set(spec) - allowed
    if unknown:
        raise ValueError(f"unknown fault fields: {sorted(unknown)}")
    return Fault(**spec)


def corrupt_item(item: dict[str, Any], variant: int) -> dict[str, Any]:
    """A copy of an activity item broken in one of three ways a parser must reject."""
    broken = dict(item)
    choice = variant % 3
    if choice == 0:
        broken["requests"] = "lots"
    elif choice == 1:
        broken["prompt_tokens"] = -abs(int(broken.get("prompt_tokens", 0))) - 1
    else:
        broken.pop("model", None)
    return broken


def _corrupt_response(response: _Response) -> _Response:
    """Break one item of a successful answer, chosen from the body itself (deterministic)."""
    payload = json.loads(response.body)
    data = payload.get("data")
    seed = stable_int(response.body.decode())
    if isinstance(data, list) and data:
        index = seed % len(data)
        data[index] = corrupt_item(data[index], seed // len(data))
    elif isinstance(data, dict) and data:
        name = sorted(data)[seed % len(data)]
        data[name] = "lots"
    else:
        payload["data"] = None
    return _json_response(response.status, payload, response.headers)


def _head(response: _Response, framing: dict[str, str]) -> bytes:
    """Status line and headers, built by hand for the answers that stream themselves."""
    phrase = HTTPStatus(response.status).phrase if response.status in HTTPStatus._value2member_map_ else ""
    lines = [f"HTTP/1.1 {response.status} {phrase}", "Server: cloudflare",
             f"Date: {email.utils.formatdate(usegmt=True)}", f"Content-Type: {response.content_type}"]
    lines += [f"{name}: {value}" for name, value in {**framing, **response.headers}.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _utc_today() -> date:
    return datetime.now(timezone.utc).date()


class _Server(ThreadingHTTPServer):
    """Tracks open connections so that stop() can cut idle keep-alive sockets."""

    daemon_threads = True
    block_on_close = False
    # socketserver's default backlog is 5: a sync opening ten connections at once (its
    # series fetch beside /activity) had SYNs dropped and retried a second later, a stall
    # no real server's listen queue causes.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], standin: StandIn) -> None:
        self.standin = standin
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up mid-answer is routine here (timeouts, resets); keep stderr quiet.
        log.debug("error while serving %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cloudflare"
    sys_version = ""
    timeout = 30.0  # idle keep-alive connections must not pin threads forever
    disable_nagle_algorithm = True  # headers and body go out in two writes; no 40 ms delayed-ACK stall
    server: _Server

    def do_GET(self) -> None:
        self.server.standin._dispatch(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        # Only the request line and status are ever formatted here, never headers,
        # so the Authorization header cannot leak into logs.
        log.debug("%s - %s", self.address_string(), format % args)


class StandIn:
    """The stand-in API server; use as a context manager or start()/stop()."""

    def __init__(
        self,
        dataset: Dataset | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        management_key: str = DEMO_MANAGEMENT_KEY,
        inference_key: str = DEMO_INFERENCE_KEY,
        latency: float = 0.0,
        date_style: str = "mixed",
        float_counts: str = "mixed",
        page_size: int = 2,
        today: Callable[[], date] | None = None,
        fault_rate: float = 0.0,
        fault_kinds: Sequence[str | Fault] | None = None,
        fault_seed: int = 0,
        clock_offset_days: int = 0,
        analytics: Analytics | None = None,
    ) -> None:
        if date_style not in ("plain", "live", "mixed"):
            raise ValueError(f"date_style must be plain, live or mixed, not {date_style!r}")
        if float_counts not in ("never", "always", "mixed"):
            raise ValueError(f"float_counts must be never, always or mixed, not {float_counts!r}")
        if page_size < 1:
            raise ValueError("page_size must be at least 1")
        self._clock = today or _utc_today
        # Clock-skew tests: the stand-in's "today" (the window it serves, the `date=` 400
        # rule) is its clock moved by this many days; settable while running.
        self.clock_offset_days = clock_offset_days
        self.dataset = dataset if dataset is not None else Dataset(anchor=self._today())
        # The Analytics API (POST /analytics/query, GET /analytics/meta) over the same account.
        self.analytics = analytics if analytics is not None else Analytics(self.dataset)
        self.host, self.port = host, port
        self.management_key, self.inference_key = management_key, inference_key
        self.latency = latency
        self.date_style, self.float_counts, self.page_size = date_style, float_counts, page_size
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._queue: list[Fault] = []
        self._fault_rate = 0.0
        self._fault_kinds: tuple[Fault, ...] = DEFAULT_FAULT_KINDS
        self._fault_rng = random.Random(fault_seed)
        self.set_fault_rate(fault_rate, fault_kinds, fault_seed)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[socket.socket, socket.socket] | None = None

    def _today(self) -> date:
        return self._clock() + timedelta(days=self.clock_offset_days)

    # ---------------------------------------------------------------- lifecycle

    @property
    def base_url(self) -> str:
        """`http://HOST:PORT/api/v1`, known once the server is started."""
        if self._server is None:
            raise RuntimeError("StandIn is not started")
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}{API_PREFIX}"

    def start(self) -> StandIn:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self._wake = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, args=(self._server, self._wake[0]), name="standin")
        self._thread.daemon = True
        self._thread.start()
        log.debug("stand-in listening on %s", self.base_url)
        return self

    def _serve(self, server: _Server, wake: socket.socket) -> None:
        # Not serve_forever(): it polls for shutdown, which costs every stop() up to a
        # poll interval. Waiting on a wake-up socket as well makes stop() immediate.
        with selectors.DefaultSelector() as selector:
            selector.register(server, selectors.EVENT_READ)
            selector.register(wake, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is server and not self._stopping.is_set():
                        server.handle_request()  # returns at once: a connection is waiting

    def stop(self) -> None:
        server, thread, wake = self._server, self._thread, self._wake
        if server is None:
            return
        self._stopping.set()  # also wakes handlers sleeping on latency or a slow fault
        if wake is not None:
            wake[1].send(b"\0")
        if thread is not None:
            thread.join(timeout=2)
        server.close_connections()
        server.server_close()
        if wake is not None:
            for end in wake:
                end.close()
        self._server = self._thread = self._wake = None

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- faults

    def inject(self, *faults: Fault) -> None:
        """Queue faults: each applies to one later matching request, first in first out."""
        with self._lock:
            self._queue.extend(faults)

    def clear_faults(self) -> None:
        """Drop queued faults and stop random ones."""
        with self._lock:
            self._queue.clear()
            self._fault_rate = 0.0

    def set_fault_rate(self, rate: float, kinds: Sequence[str | Fault] | None = None, seed: int = 0) -> None:
        """Fail a share `rate` of requests with faults drawn from `kinds` by a seeded RNG."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError("fault rate must be between 0 and 1")
        chosen = tuple(_coerce_fault(kind, random_pick=True) for kind in kinds) if kinds else DEFAULT_FAULT_KINDS
        with self._lock:
            self._fault_rate = rate
            self._fault_kinds = chosen
            self._fault_rng = random.Random(seed)

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for index, fault in enumerate(self._queue):
                if fault.applies_to(path):
                    return self._queue.pop(index)
            if self._fault_rate > 0 and self._fault_rng.random() < self._fault_rate:
                fault = self._fault_rng.choice(self._fault_kinds)
                return fault if fault.applies_to(path) else None
        return None

    # ---------------------------------------------------------------- dispatch

    def _dispatch(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        params = {name: values[-1] for name, values in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            body = self._read_body(handler)
            if split.path.startswith(CONTROL_PREFIX + "/"):
                self._send(handler, self._control(handler.command, split.path, params, body))
            else:
                self._serve_api(handler, split.path, params, body)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True  # the client left (e.g. it timed out): nothing to answer
        except Exception:  # a bug here must still produce an answer, not a hung client
            log.exception("stand-in failed on %s %s", handler.command, split.path)
            handler.close_connection = True
            self._send(handler, _error(500, "Internal Server Error"))

    @staticmethod
    def _read_body(handler: _Handler) -> bytes:
        # Drained even for GET so that a keep-alive connection stays in sync.
        length = int(handler.headers.get("Content-Length") or 0)
        return handler.rfile.read(min(length, _MAX_BODY)) if length > 0 else b""

    def _serve_api(self, handler: _Handler, path: str, params: dict[str, str], body: bytes = b"") -> None:
        arrived = time.time()
        fault = self._take_fault(path)
        kind = fault.kind if fault else None
        if fault is not None and kind == "reset":
            self._record(handler.command, path, params, None, kind, arrived)
            self._pause(self.latency + fault.wait)
            self._reset(handler)
            return
        if fault is not None and kind in _ERROR_FAULTS:
            response = _fault_response(fault)
        elif kind == "not_json":
            response = _Response(200, b"<html>oops</html>")
        elif fault is not None and (kind == "body" or (kind in _STREAMED_FAULTS and fault.body)):
            response = _Response(200, fault.body)
        else:
            response = self._route(handler, path, params, body)
            if kind == "malformed" and response.status == 200:
                response = _corrupt_response(response)
        # Recorded on arrival, in arrival order, even when the answer is delayed.
        self._record(handler.command, path, params, response.status, kind, arrived)
        self._pause(self.latency + (fault.wait if fault is not None else 0.0))
        if fault is not None and kind in ("trickle", "trickle_headers"):
            self._trickle(handler, response, fault.interval, headers_too=kind == "trickle_headers")
        elif kind == "chunked":
            self._send_chunked(handler, response)
        else:
            self._send(handler, response, truncate=kind == "truncate")

    def _pause(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _record(self, method: str, path: str, params: dict[str, str], status: int | None, fault: str | None, at: float) -> None:
        with self._lock:
            self.requests.append(RequestRecord(method, path, dict(params), status, fault, at))

    @staticmethod
    def _send(handler: _Handler, response: _Response, *, truncate: bool = False) -> None:
        handler.send_response(response.status)
        handler.send_header("Content-Type", response.content_type)
        # The full length even when truncating: the client must notice the body is short.
        handler.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(response.body[: len(response.body) // 2] if truncate else response.body)
        handler.wfile.flush()
        if truncate:
            handler.close_connection = True

    def _trickle(self, handler: _Handler, response: _Response, interval: float, *, headers_too: bool) -> None:
        """Send one byte every `interval` seconds: a server that is slow but never idle
        for long, which a per-read timeout alone never notices."""
        handler.close_connection = True  # the client may give up mid-answer
        head = _head(response, {"Content-Length": str(len(response.body))})
        if not headers_too:
            handler.wfile.write(head)
            head = b""
        data = head + response.body
        for index in range(len(data)):
            if index and self._stopping.wait(interval):
                return
            handler.wfile.write(data[index : index + 1])

    @staticmethod
    def _send_chunked(handler: _Handler, response: _Response) -> None:
        """The body in chunks and no Content-Length: its size is known only once read."""
        handler.wfile.write(_head(response, {"Transfer-Encoding": "chunked"}))
        for start in range(0, len(response.body), _CHUNK):
            piece = response.body[start : start + _CHUNK]
            handler.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        handler.wfile.write(b"0\r\n\r\n")
        handler.wfile.flush()

    @staticmethod
    def _reset(handler: _Handler) -> None:
        """Abort the connection so that the client sees a TCP reset, not a clean close."""
        handler.close_connection = True
        connection = handler.connection
        try:
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        # rfile holds a reference to the socket: both must go for close() to really
        # close it, and closing before any shutdown() makes the kernel send RST.
        handler.rfile.close()
        connection.close()

    # ---------------------------------------------------------------- API routes

    def _route(self, handler: _Handler, path: str, params: dict[str, str], body: bytes = b"") -> _Response:
        routes: dict[str, Callable[[dict[str, str], str, date], _Response]] = {
            "/activity": self._activity,
            "/credits": self._credits,
            "/key": self._key,
            "/keys": self._keys,
        }
        name = path[len(API_PREFIX) :].rstrip("/") if path.startswith(API_PREFIX + "/") else None
        if name in ("/analytics/meta", "/analytics/query"):
            return self._analytics(handler, name, body)
        route = routes.get(name or "")
        if handler.command != "GET" or route is None:
            return _error(404, "Not Found")
        caller = self._authenticate(handler.headers.get("Authorization"))
        if isinstance(caller, _Response):
            return caller
        if name != "/key" and caller != "management":
            return _error(403, _NOT_MANAGEMENT)
        return route(params, caller, self._today())

    def _analytics(self, handler: _Handler, name: str, body: bytes) -> _Response:
        """The Analytics API: the logic lives in etl/standin/analytics.py."""
        if (handler.command, name) not in (("GET", "/analytics/meta"), ("POST", "/analytics/query")):
            return _error(404, "Not Found")
        caller = self._authenticate(handler.headers.get("Authorization"))
        if isinstance(caller, _Response):
            return caller
        if caller != "management":
            return _error(403, _NOT_MANAGEMENT)
        try:
            self.analytics.admit()
            if name == "/analytics/meta":
                return _json_response(200, self.analytics.meta())
            try:
                document = json.loads(body)
            except ValueError:
                return _error(400, "Invalid request parameters: the body is not JSON")
            return _Response(200, self.analytics.encoded(document, self._today()))
        except QueryError as exc:
            return _error(exc.status, exc.message, exc.headers)

    def _authenticate(self, header: str | None) -> str | _Response:
        if not header or not header.strip():
            return _error(401, _MISSING_AUTH)
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _error(401, _MISSING_AUTH)
        if token == self.management_key:
            return "management"
        if token == self.inference_key:
            return "inference"
        return _error(401, _BAD_KEY)

    def _activity(self, params: dict[str, str], caller: str, today: date) -> _Response:
        window = activity_window(today)
        if "date" in params:
            day = parse_api_day(params["date"])
            if day is None:
                return _error(400, "Invalid date format")
            if day not in window:
                return _error(400, _OUTSIDE_WINDOW)
            days = [day]
        else:
            days = window
        # Empty filter values (`?user_id=`) are treated as absent, as clients often send them.
        filters = {name: params.get(name) or None for name in ("api_key_hash", "user_id", "workspace_id", "group_by")}
        if filters["group_by"] not in (None, "workspace"):
            return _error(400, "Invalid group_by: only 'workspace' is supported")
        if filters["workspace_id"] is not None and filters["workspace_id"] not in self.dataset.workspace_ids:
            return _error(404, "Workspace not found")
        items = []
        for day in days:
            live = self._live_dates(day)
            floats = self._float_counts(day)
            for item in self.dataset.activity(day, **filters):
                items.append(serialize_item(item, live_date=live, float_counts=floats))
        return _json_response(200, {"data": items})

    def _live_dates(self, day: date) -> bool:
        if self.date_style == "mixed":
            return uses_live_date_style(self.dataset.seed, day)
        return self.date_style == "live"

    def _float_counts(self, day: date) -> bool:
        if self.float_counts == "mixed":
            return uses_float_counts(self.dataset.seed, day)
        return self.float_counts == "always"

    def _credits(self, params: dict[str, str], caller: str, today: date) -> _Response:
        return _json_response(200, {"data": self.dataset.credits(today)})

    def _key(self, params: dict[str, str], caller: str, today: date) -> _Response:
        if caller == "management":
            return _json_response(200, {"data": self.dataset.management_key_as_api(self.management_key)})
        # The demo inference key stands for the account's first ("Production") key.
        return _json_response(200, {"data": self.dataset.current_key_as_api(self.dataset.api_keys[0], today)})

    def _keys(self, params: dict[str, str], caller: str, today: date) -> _Response:
        try:
            offset = int(params.get("offset") or 0)
        except ValueError:
            return _error(400, "Invalid request parameters")
        if offset < 0:
            return _error(400, "Invalid request parameters")
        include_disabled = params.get("include_disabled", "false").lower() == "true"
        keys = self.dataset.keys_as_api(today, include_disabled=include_disabled)
        workspace_id = params.get("workspace_id")
        if workspace_id:
            keys = [key for key in keys if key["workspace_id"] == workspace_id]
        return _json_response(200, {"data": keys[offset : offset + self.page_size]})

    # ---------------------------------------------------------------- control

    def _control(self, method: str, path: str, params: dict[str, str], body: bytes) -> _Response:
        action = (method, path.rstrip("/"))
        try:
            if action == ("POST", f"{CONTROL_PREFIX}/faults"):
                return self._control_faults(json.loads(body or b"{}"))
            if action == ("POST", f"{CONTROL_PREFIX}/revise"):
                return self._control_revise(params.get("date", ""))
            if action == ("POST", f"{CONTROL_PREFIX}/clock"):
                return self._control_clock(json.loads(body or b"{}"))
            if action == ("GET", f"{CONTROL_PREFIX}/requests"):
                with self._lock:
                    records = [record._asdict() for record in self.requests]
                return _json_response(200, {"data": records})
        except (ValueError, TypeError) as exc:  # json errors are ValueErrors too
            return _error(400, str(exc))
        return _error(404, "Not Found")

    def _control_faults(self, spec: Any) -> _Response:
        if not isinstance(spec, dict):
            raise ValueError("expected a JSON object")
        faults = [_coerce_fault(item) for item in spec.get("faults", [])]
        if spec.get("clear"):
            self.clear_faults()
        self.inject(*faults)
        if "rate" in spec:
            self.set_fault_rate(float(spec["rate"]), spec.get("kinds"), int(spec.get("seed", 0)))
        with self._lock:
            queued = len(self._queue)
        return _json_response(200, {"queued": queued, "rate": self._fault_rate})

    def _control_clock(self, spec: Any) -> _Response:
        offset = spec.get("offset_days") if isinstance(spec, dict) else None
        if not isinstance(offset, int) or isinstance(offset, bool):
            raise ValueError('expected {"offset_days": N}, N a whole number of days')
        self.clock_offset_days = offset
        return _json_response(200, {"offset_days": offset, "today": self._today().isoformat()})

    def _control_revise(self, text: str) -> _Response:
        day = parse_api_day(text)
        if day is None:
            raise ValueError("Invalid date format")
        return _json_response(200, {"date": day.isoformat(), "revision": self.dataset.revise(day)})
