"""Logging set-up: plain lines on stderr, with every known secret masked."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone

_secrets: set[str] = set()

# Shapes of credentials that must be masked even when nobody registered them: an API
# error body may echo the Authorization header, and a process that stores or shows it
# later (``status``) never saw the key. A masked label (``sk-or-v1-0e6...1c96``) is
# too short after the prefix to match and stays readable.
_TOKEN_SHAPES = re.compile(r"sk-or-[A-Za-z0-9_\-]{16,}|(?<=[Bb]earer )[A-Za-z0-9._~+/=\-]+|(?<=BEARER )[A-Za-z0-9._~+/=\-]+")


def register_secret(value: str | None) -> None:
    """Mask ``value`` wherever it would appear in a log line or an error message."""
    if value and len(value) >= 8:
        _secrets.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret and every token-shaped string masked."""
    for secret in _secrets:
        text = text.replace(secret, "***")
    return _TOKEN_SHAPES.sub("***", text)


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


# LogRecord attributes that are not user-supplied ``extra`` fields.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors; ``extra`` fields become keys."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str))


def setup_logging(verbosity: int = 0, quiet: bool = False, fmt: str = "text", level: int | None = None) -> None:
    if level is None:
        level = logging.ERROR if quiet else logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if verbosity < 2 else "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request at INFO; useful only when debugging.
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    # The daemon logs job failures itself, in one line; APScheduler would add a traceback
    # for every expected failure (API down, lock busy).
    logging.getLogger("apscheduler.executors").setLevel(logging.CRITICAL)
    logging.getLogger("apscheduler.scheduler").setLevel(logging.WARNING)
