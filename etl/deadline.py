"""A total deadline for each HTTP attempt, and a stop that ends a request at once.

httpx's timeouts apply to each socket operation: a server that sends one byte a second
never trips a 30 s read timeout, so one attempt could last for ever, headers included.
`Guard` is an httpcore network backend whose streams cap every connect, TLS handshake,
read and write at the deadline of the attempt running in the calling thread (set with
`Guard.attempt`; thread-local, so concurrent breakdown requests each keep their own), and
that block in slices of at most `SLICE` seconds, so that setting the stop event ends a
request within about `SLICE` even mid-body. Connects and TLS handshakes, which cannot be
sliced, run in a helper thread that is abandoned (and cleaned up later) on stop.

Failures are httpcore's own exceptions (``ReadTimeout`` past the deadline, ``ReadError``
and friends on stop), which httpx turns into ``httpx.TimeoutException`` and
``httpx.TransportError``; the caller tells them apart by its stop event and deadline.

Quirk: httpx has no public hook for a network backend. `install` sets it on the
connection pools of an ``httpx.Client``'s transports (httpcore's private
``_network_backend``); if a future httpx hides them, it logs a warning and the caller's
checks between body chunks remain the only bound (tests/test_client_deadlines.py fails).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpcore
import httpx

log = logging.getLogger(__name__)

SLICE = 0.2  # longest a blocked socket call goes without looking at the stop event
T = typing.TypeVar("T")
_Errors = tuple[type[Exception], type[Exception]]  # (past the deadline, stopped)
_READ: _Errors = (httpcore.ReadTimeout, httpcore.ReadError)
_WRITE: _Errors = (httpcore.WriteTimeout, httpcore.WriteError)
_CONNECT: _Errors = (httpcore.ConnectTimeout, httpcore.ConnectError)


class Guard(httpcore.NetworkBackend):
    def __init__(self, stop: threading.Event, inner: httpcore.NetworkBackend | None = None) -> None:
        self.stop = stop
        self._inner = inner or httpcore.SyncBackend()
        self._local = threading.local()

    @contextmanager
    def attempt(self, seconds: float) -> Iterator[float]:
        """Give the network operations of this thread ``seconds`` from now, in total."""
        previous = getattr(self._local, "deadline", None)
        self._local.deadline = deadline = time.monotonic() + seconds
        try:
            yield deadline
        finally:
            self._local.deadline = previous

    def until(self, timeout: float | None) -> float | None:
        """The earlier of now + ``timeout`` (one operation's own limit) and the attempt's deadline."""
        ends = [t for t in (getattr(self._local, "deadline", None), None if timeout is None else time.monotonic() + timeout) if t is not None]
        return min(ends) if ends else None

    def budget(self, until: float | None, errors: _Errors, limit: float | None = None) -> float | None:
        """Seconds the next blocking call may take (at most ``limit``); raises once stopped or late."""
        late, stopped = errors
        if self.stop.is_set():
            raise stopped("stop requested")
        if until is None:
            return limit
        left = until - time.monotonic()
        if left <= 0:
            raise late("attempt deadline reached")
        return left if limit is None else min(left, limit)

    # -- httpcore.NetworkBackend -------------------------------------------------------

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self.interruptibly(
            lambda t: self._inner.connect_tcp(host, port, t, local_address, socket_options), self.until(timeout), _CONNECT
        )
        return _GuardedStream(stream, self)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:  # pragma: no cover - openrouter.base_url is never a socket path
        stream = self.interruptibly(lambda t: self._inner.connect_unix_socket(path, t, socket_options), self.until(timeout), _CONNECT)
        return _GuardedStream(stream, self)

    def sleep(self, seconds: float) -> None:  # pragma: no cover - httpcore sleeps only between its own retries (0)
        self.stop.wait(seconds)

    # -- machinery ---------------------------------------------------------------------

    def interruptibly(
        self, call: Callable[[float | None], T], until: float | None, errors: _Errors, abort: Callable[[], None] | None = None,
    ) -> T:
        """Run a blocking call that cannot be sliced (connect, TLS handshake) in a helper
        thread with the time left; on stop or deadline, abandon it: ``abort`` unblocks it,
        and a stream it still returns later is closed."""
        limit = self.budget(until, errors)
        lock = threading.Lock()
        done = threading.Event()
        outcome: list[tuple[bool, typing.Any]] = []
        abandoned = False

        def run() -> None:
            try:
                result: tuple[bool, typing.Any] = (True, call(limit))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                result = (False, exc)
            with lock:
                outcome.append(result)
                done.set()
                late = abandoned
            if late and result[0]:
                _close_quietly(result[1])

        threading.Thread(target=run, name="http-connect", daemon=True).start()
        while not done.wait(SLICE):
            try:
                self.budget(until, errors)
            except Exception:
                with lock:
                    if not done.is_set():
                        abandoned = True
                if abandoned:
                    if abort is not None:
                        abort()
                    raise
        ok, value = outcome[0]
        if not ok:
            raise value
        return typing.cast(T, value)


class _GuardedStream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, guard: Guard) -> None:
        self._inner = inner
        self._guard = guard

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        until = self._guard.until(timeout)
        while True:
            piece = self._guard.budget(until, _READ, SLICE)  # raises once stopped or late
            try:
                return self._inner.read(max_bytes, piece)
            except httpcore.ReadTimeout:
                continue  # only a slice ran out: look at the stop event and the deadline again

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # Not sliced: a timed-out send may have sent part of the buffer. Requests are small.
        self._inner.write(buffer, self._guard.budget(self._guard.until(timeout), _WRITE))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None) -> httpcore.NetworkStream:
        raw = self._inner.get_extra_info("socket")
        tls = self._guard.interruptibly(
            lambda t: self._inner.start_tls(ssl_context, server_hostname, t), self._guard.until(timeout), _CONNECT,
            abort=lambda: _shutdown_quietly(raw),
        )
        return _GuardedStream(tls, self._guard)

    def get_extra_info(self, info: str) -> typing.Any:
        return self._inner.get_extra_info(info)


def install(client: httpx.Client, guard: Guard) -> bool:
    """Put ``guard`` under every connection pool of ``client``; False if none was found."""
    transports = [client._transport, *client._mounts.values()]  # noqa: SLF001 - see the module docstring
    pools = [getattr(t, "_pool", None) for t in transports if t is not None]
    found = [p for p in pools if p is not None and hasattr(p, "_network_backend")]
    for pool in found:
        pool._network_backend = guard  # noqa: SLF001
    if not found:
        log.warning("this httpx version hides its connection pools: attempts are bounded between body chunks only")
    return bool(found)


def _close_quietly(stream: typing.Any) -> None:
    try:
        stream.close()
    except Exception:  # noqa: BLE001 - an abandoned connection; nothing to report
        pass


def _shutdown_quietly(sock: socket.socket | None) -> None:
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
