"""The exceptions openrouter-archive raises, as a small hierarchy, with their exit codes.

Every message is written for the person running the tool: one line that says what went
wrong and what to do about it. None of them ever carries the API key. The CLI prints
``Error: <message>`` (or a JSON line with ``--log-format json``) and exits with the class's
``exit_code``; anything else is a bug, reported as "unexpected" (exit 1, ``--debug`` for the
traceback), never as a bad argument.

::

    ArchiveError                      1  an expected failure, fit to show a user
    ├── ConfigError                   2  the config file or environment is invalid
    ├── BadArgument (ValueError)      2  a command argument or a ReportSpec that makes no sense
    ├── APIError                      1  OpenRouter answered with an error, or was unreachable
    │   ├── BadRequestError           1    400
    │   ├── AuthenticationError       1    401
    │   ├── PermissionDeniedError     1    403
    │   ├── NotFoundError             1    404
    │   ├── TransientAPIError         1    408, 429, 5xx, network, after every retry
    │   └── InvalidResponseError      1    a 200 whose body is not the promised JSON
    │       └── TruncatedAnswerError  1      an analytics answer cut at its row limit
    ├── DayRejected                   1  one day failed validation; nothing of it written
    ├── WarehouseError                1  the warehouse cannot be opened, migrated or written
    │   └── ReadOnlyViolation         1    `sql` refused a statement that would write
    ├── LockTimeout                  75  another writer holds the warehouse (EX_TEMPFAIL)
    ├── SyncFailed                    1  a scheduled sync did not archive every planned day
    ├── CopyRefused                   2  `db copy` will not write there (same archive, not empty)
    ├── CopyVerificationFailed        1  `db copy` wrote, but the target does not match the source
    ├── NotifyError                   1  an alert notification could not be delivered
    └── Interrupted                   1  SIGTERM/SIGINT; no day was left half-written

(Ctrl-C outside a sync exits 130.)
"""

from __future__ import annotations


class ArchiveError(Exception):
    """Base class: an expected failure with a message fit to show a user."""

    exit_code = 1


class ConfigError(ArchiveError):
    """The configuration file or environment is invalid."""

    exit_code = 2


class APIError(ArchiveError):
    """OpenRouter answered with an error, or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None, api_message: str | None = None):
        super().__init__(message)
        self.status = status
        self.api_message = api_message


class BadRequestError(APIError):
    """400: the request itself is wrong (for example a date outside the 30-day window)."""


class AuthenticationError(APIError):
    """401: the key is missing or not valid."""


class PermissionDeniedError(APIError):
    """403: the key is valid but may not use this endpoint (not a management key)."""


class NotFoundError(APIError):
    """404: the endpoint does not exist at the configured base URL."""


class TransientAPIError(APIError):
    """A retryable failure (408, 429, 5xx, network) that outlasted the retry budget."""


class InvalidResponseError(APIError):
    """A 200 answer whose body is not the JSON document the API promises."""


class DayRejected(ArchiveError):
    """One day of a response failed validation; nothing of it is written."""

    def __init__(self, day: str, message: str):
        super().__init__(f"{day}: {message}")
        self.day = day
        self.reason = message


class WarehouseError(ArchiveError):
    """The warehouse cannot be opened, migrated or written."""


class Interrupted(ArchiveError):
    """A stop was requested (SIGTERM, SIGINT); no day was left half-written."""


class TruncatedAnswerError(InvalidResponseError):
    """An analytics answer cut at its row limit (``truncated: true``): never stored as complete."""


class BadArgument(ArchiveError, ValueError):
    """A report or sql argument that makes no sense; exits 2 like click's own usage errors.

    Also a ValueError, so that notebook code written against ``ReportSpec`` keeps working;
    the CLI catches BadArgument only, so a real ValueError is never shown as bad usage.
    """

    exit_code = 2


class ReadOnlyViolation(WarehouseError):
    """`sql` refused a statement that would change the archive, attach a database or set a pragma."""

    exit_code = 1


class LockTimeout(ArchiveError):
    """Another writer held the warehouse for longer than we were willing to wait."""

    exit_code = 75  # EX_TEMPFAIL: cron wrappers and systemd treat it as "try again later"


class SyncFailed(ArchiveError):
    """A scheduled sync did not archive every day it planned."""


class CopyRefused(ArchiveError):
    """`db copy` refuses the target: the source itself, or not empty without ``--merge``."""

    exit_code = 2


class CopyVerificationFailed(ArchiveError):
    """`db copy` finished, but the target's row counts or per-day sums differ from the source."""


class NotifyError(ArchiveError):
    """A notification that could not be delivered; ``retryable`` when trying again may help."""

    def __init__(self, message: str, *, retryable: bool = True):
        from etl.logs import redact  # light; masks a webhook token or SMTP password in the message

        super().__init__(redact(message))
        self.retryable = retryable
