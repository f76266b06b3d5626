"""The report metrics by name, with the labels tables show and the aliases users type.

Dependency-free, so that ``--help`` can list the choices without importing SQLAlchemy.
``etl.query.METRICS`` holds the SQL expressions for the same names, in the same order.
"""

from __future__ import annotations

from etl.errors import BadArgument

NAMES = ("usage", "byok_usage_inference", "requests", "prompt_tokens", "completion_tokens", "reasoning_tokens",
         "cached_tokens", "total_tokens")
MONEY = ("usage", "byok_usage_inference")
LABELS = {
    "usage": "spend",
    "byok_usage_inference": "BYOK spend",
    "requests": "requests",
    "prompt_tokens": "prompt tok",
    "completion_tokens": "completion tok",
    "reasoning_tokens": "reasoning tok",
    "cached_tokens": "cached tok",
    "total_tokens": "total tok",
}
SHORT = {"byok": "byok_usage_inference", "tokens": "total_tokens", "cost": "usage"}


def aliases() -> dict[str, str]:
    """Every name a metric goes by: its own, its table label (``spend``, ``byok spend``,
    ``prompt tok``, in any case, with ``_`` or ``-`` for spaces) and a few short ones."""
    found = {m: m for m in NAMES}
    for metric, label in LABELS.items():
        for variant in (label, label.replace(" ", "_"), label.replace(" ", "-")):
            found[variant.lower()] = metric
    found.update(SHORT)
    return found


def choices() -> list[str]:
    """What ``--help`` lists: each metric by its table label, then by its column name."""
    return list(dict.fromkeys([LABELS[m].replace(" ", "_").lower() for m in NAMES] + list(NAMES)))


def resolve(name: str, what: str = "metric") -> str:
    """The metric called ``name`` (a column or a table label); BadArgument when none is."""
    found = aliases().get(name.strip().lower())
    if found is None:
        raise BadArgument(f"unknown {what} {name!r}; choose from: {', '.join(choices())}")
    return found
