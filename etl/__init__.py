"""openrouter-archive: a permanent history of an OpenRouter account's usage."""

__version__ = "0.1.0"
