"""Shared pieces of the alert tests: a webhook receiver over loopback, config writing."""

from __future__ import annotations

import json
import threading
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from conftest import FAST_CONFIG


class Receiver:
    """A small HTTP server that records every POST; fails the first `fail_first` of them."""

    def __init__(self, fail_first: int = 0, status: int = 503):
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.fail_first, self.status, self.calls = fail_first, status, 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.calls += 1
                if receiver.calls <= receiver.fail_first:
                    self.send_response(receiver.status)
                    self.end_headers()
                    return
                receiver.bodies.append(json.loads(body))
                receiver.headers.append(dict(self.headers))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/B000secretpath"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def day_total(dataset, day: date, *, byok: bool = True, key_hash: str | None = None) -> float:
    """The account's (or one key's) spend of a day, from the stand-in's own data."""
    keys = [k for k in dataset.api_keys if key_hash in (None, k.hash)]
    return sum(i["usage"] + (i["byok_usage_inference"] if byok else 0.0) for k in keys for i in dataset.activity(day, api_key_hash=k.hash))


def write_config(path, alerts: str, sync: str = "") -> None:
    path.write_text(FAST_CONFIG + "\n[sync]\n" + sync + "\n" + alerts)
