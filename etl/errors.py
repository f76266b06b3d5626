"""The exceptions openrouter-archive raises, as a small hierarchy.

Every message is written for the person running the tool: one line that says what went
wrong and what to do about it. None of them ever carries the API key.
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


class BadArgument(ArchiveError):
    """A report or sql argument that makes no sense; exits 2 like click's own usage errors."""

    exit_code = 2
