"""Deterministic fake account data for the stand-in OpenRouter analytics API.

Everything in this module is pure: no I/O, no clock. Randomness is drawn from
`random.Random` instances seeded with a SHA-256 digest of (seed, date, key, ...),
never from Python's `hash()`, so a day's data is byte-identical across processes
(whatever PYTHONHASHSEED is) and whatever order days are asked for.

Activity is generated per (day, API key) and only then aggregated to what a
request asks for, so account-level rows always equal the sum of per-key rows,
exactly as a real archiver would expect from the live API.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
import string
import threading
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = [
    "DEMO_INFERENCE_KEY",
    "DEMO_MANAGEMENT_KEY",
    "ENDPOINTS",
    "MODELS",
    "WINDOW_DAYS",
    "Dataset",
    "Endpoint",
    "KeyInfo",
    "Model",
    "activity_window",
    "mask_key",
    "parse_api_day",
    "serialize_item",
    "stable_int",
    "stable_rng",
    "uses_float_counts",
    "uses_live_date_style",
]

# Deliberately not shaped like real keys (64 hex digits) so secret scanners stay quiet.
DEMO_MANAGEMENT_KEY = "sk-or-v1-standin-demo-management-key"
DEMO_INFERENCE_KEY = "sk-or-v1-standin-demo-inference-key"

WINDOW_DAYS = 30
BYOK_FEE_RATE = 0.05
# Account-wide BYOK configuration: requests routed to these providers bill the
# user's own provider account, and OpenRouter only charges its fee.
BYOK_PROVIDERS = frozenset({"Azure", "Amazon Bedrock"})
COUNT_FIELDS = ("requests", "prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")
USAGE_DECIMALS = 10

# Fixed namespace: endpoint ids must not change between releases of the stand-in,
# or archives built against one version would not line up with the next.
_NAMESPACE = uuid.UUID("5f0c2a57-8e0b-4d7c-9a43-6b1d2e3f4a5b")
_KEY_NAMES = ("Production", "Staging", "CI")
_ALNUM = string.ascii_letters + string.digits
_DAY_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


# --------------------------------------------------------------------------- hashing


def stable_int(*parts: object) -> int:
    """A 64-bit integer that depends only on `parts` (stable across processes)."""
    text = "\x1f".join(str(part) for part in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def stable_rng(*parts: object) -> random.Random:
    """A `random.Random` seeded from `parts` via SHA-256."""
    return random.Random(stable_int(*parts))


# --------------------------------------------------------------------------- catalogue


@dataclass(frozen=True)
class Model:
    """A model as the activity API names it, with rough OpenRouter list prices."""

    slug: str
    permaslug: str
    providers: tuple[str, ...]
    prompt_price: float  # USD per million prompt tokens
    completion_price: float  # USD per million completion (and reasoning) tokens
    thinking_share: float  # share of requests that produce reasoning tokens
    prompt_size: int  # typical prompt tokens per request
    completion_size: int  # typical completion tokens per request
    popularity: float


@dataclass(frozen=True)
class Endpoint:
    """One (model, provider) pair: the unit the activity API groups by."""

    id: str
    model: Model
    provider: str
    position: int  # catalogue order, used for stable iteration


MODELS: tuple[Model, ...] = (
    Model("openai/gpt-4.1", "openai/gpt-4.1-2025-04-14", ("OpenAI", "Azure"), 2.0, 8.0, 0.0, 2400, 380, 2.2),
    Model("openai/gpt-4.1-mini", "openai/gpt-4.1-mini-2025-04-14", ("OpenAI", "Azure"), 0.4, 1.6, 0.0, 1800, 300, 2.8),
    Model("openai/o3", "openai/o3-2025-04-16", ("OpenAI",), 2.0, 8.0, 1.0, 3200, 520, 0.6),
    Model("openai/o4-mini", "openai/o4-mini-2025-04-16", ("OpenAI", "Azure"), 1.1, 4.4, 1.0, 2000, 400, 1.0),
    Model(
        "anthropic/claude-sonnet-4",
        "anthropic/claude-4-sonnet-20250522",
        ("Anthropic", "Amazon Bedrock", "Google Vertex"),
        3.0,
        15.0,
        0.3,
        5200,
        620,
        2.5,
    ),
    Model(
        "anthropic/claude-opus-4",
        "anthropic/claude-4-opus-20250522",
        ("Anthropic", "Amazon Bedrock", "Google Vertex"),
        15.0,
        75.0,
        0.4,
        6000,
        700,
        0.35,
    ),
    Model(
        "anthropic/claude-3.5-haiku",
        "anthropic/claude-3-5-haiku",
        ("Anthropic", "Amazon Bedrock"),
        0.8,
        4.0,
        0.0,
        1500,
        260,
        1.4,
    ),
    Model(
        "google/gemini-2.5-pro",
        "google/gemini-2.5-pro",
        ("Google AI Studio", "Google Vertex"),
        1.25,
        10.0,
        1.0,
        7000,
        650,
        1.2,
    ),
    Model(
        "google/gemini-2.5-flash",
        "google/gemini-2.5-flash",
        ("Google AI Studio", "Google Vertex"),
        0.3,
        2.5,
        0.5,
        4000,
        420,
        2.4,
    ),
    Model(
        "deepseek/deepseek-chat-v3-0324",
        "deepseek/deepseek-chat-v3-0324",
        ("DeepSeek", "DeepInfra", "Together"),
        0.28,
        0.88,
        0.0,
        2600,
        450,
        1.6,
    ),
    Model(
        "deepseek/deepseek-chat-v3-0324:free",
        "deepseek/deepseek-chat-v3-0324",
        ("Chutes",),
        0.0,
        0.0,
        0.0,
        1400,
        380,
        0.8,
    ),
    Model(
        "deepseek/deepseek-r1",
        "deepseek/deepseek-r1",
        ("DeepSeek", "Together", "Fireworks"),
        0.55,
        2.19,
        1.0,
        1800,
        600,
        0.7,
    ),
    Model(
        "meta-llama/llama-3.3-70b-instruct",
        "meta-llama/llama-3.3-70b-instruct",
        ("Groq", "Fireworks", "Lambda"),
        0.13,
        0.39,
        0.0,
        1200,
        300,
        1.3,
    ),
    Model("mistralai/mistral-large", "mistralai/mistral-large-2411", ("Mistral",), 2.0, 6.0, 0.0, 2200, 350, 0.5),
    Model("x-ai/grok-3", "x-ai/grok-3", ("xAI",), 3.0, 15.0, 0.0, 2500, 480, 0.5),
    Model(
        "qwen/qwen3-235b-a22b",
        "qwen/qwen3-235b-a22b-04-28",
        ("DeepInfra", "Together", "Fireworks"),
        0.13,
        0.6,
        0.6,
        2100,
        420,
        0.9,
    ),
)


def _build_endpoints() -> tuple[Endpoint, ...]:
    endpoints: list[Endpoint] = []
    for model in MODELS:
        for provider in model.providers:
            endpoint_id = str(uuid.uuid5(_NAMESPACE, f"endpoint|{model.slug}|{provider}"))
            endpoints.append(Endpoint(endpoint_id, model, provider, len(endpoints)))
    return tuple(endpoints)


ENDPOINTS: tuple[Endpoint, ...] = _build_endpoints()


def _catalogue(size: int) -> tuple[Endpoint, ...]:
    """The real-looking endpoints, then regional variants of them for large accounts.

    Large days (thousands of endpoints) are what crash and load tests need; the variant
    ids are as stable as the catalogue's.
    """
    if size <= len(ENDPOINTS):
        return ENDPOINTS
    extra = []
    for i in range(size - len(ENDPOINTS)):
        base = ENDPOINTS[i % len(ENDPOINTS)]
        provider = f"{base.provider} (region {i // len(ENDPOINTS) + 2})"
        endpoint_id = str(uuid.uuid5(_NAMESPACE, f"endpoint|{base.model.slug}|{provider}"))
        extra.append(Endpoint(endpoint_id, base.model, provider, len(ENDPOINTS) + i))
    return ENDPOINTS + tuple(extra)


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class KeyInfo:
    """A fake inference API key of the account, as `GET /keys` describes it."""

    index: int
    name: str
    secret: str
    hash: str
    label: str
    disabled: bool
    created_at: datetime
    updated_at: datetime
    disabled_on: date | None  # first day without activity
    workspace_id: str
    creator_user_id: str
    limit: float | None
    limit_reset: str | None
    expires_at: datetime | None
    scale: float  # share of the account's traffic this key tends to carry

    def active_on(self, day: date) -> bool:
        """Whether the key can have activity on `day`."""
        if day < self.created_at.date():
            return False
        return self.disabled_on is None or day < self.disabled_on


def mask_key(secret: str) -> str:
    """Mask a key the way OpenRouter labels it: `sk-or-v1-0e6...1c96`."""
    prefix = "sk-or-v1-"
    body = secret[len(prefix) :] if secret.startswith(prefix) else secret
    return f"{prefix}{body[:3]}...{body[-4:]}"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _user_id(seed: int, index: int) -> str:
    rng = stable_rng(seed, "user", index)
    return "user_" + "".join(rng.choice(_ALNUM) for _ in range(27))


def _key_age_days(index: int, first_age: int = 150) -> int:
    # The second key is created inside the window so that archivers meet a key
    # whose history starts mid-window; the others predate the window.
    if index == 0:
        return first_age
    if index == 1:
        return 12
    return 60 + 15 * index


def _key_limits(index: int) -> tuple[float | None, str | None]:
    return {1: (50.0, "monthly"), 2: (25.0, "weekly")}.get(index, (None, None))


def _build_key(
    seed: int, index: int, count: int, anchor: date, workspace_ids: list[str], user_ids: list[str], first_age: int = 150
) -> KeyInfo:
    rng = stable_rng(seed, "key", index)
    secret = "sk-or-v1-" + hashlib.sha256(f"standin|{seed}|{index}".encode()).hexdigest()
    created_day = anchor - timedelta(days=_key_age_days(index, first_age))
    created_at = datetime.combine(
        created_day, time(rng.randint(7, 20), rng.randint(0, 59), rng.randint(0, 59)), tzinfo=timezone.utc
    )
    disabled = count >= 3 and index == count - 1
    # Disabled after the mid-window key appeared, so some days carry all keys.
    disabled_on = anchor - timedelta(days=5) if disabled else None
    updated_at = (
        datetime.combine(disabled_on, time(0, rng.randint(1, 59)), tzinfo=timezone.utc) if disabled_on else created_at
    )
    limit, limit_reset = _key_limits(index)
    return KeyInfo(
        index=index,
        name=_KEY_NAMES[index] if index < len(_KEY_NAMES) else f"Key {index + 1}",
        secret=secret,
        hash=hashlib.sha256(secret.encode()).hexdigest(),
        label=mask_key(secret),
        disabled=disabled,
        created_at=created_at,
        updated_at=updated_at,
        disabled_on=disabled_on,
        workspace_id=workspace_ids[index % len(workspace_ids)],
        creator_user_id=user_ids[index % len(user_ids)],
        limit=limit,
        limit_reset=limit_reset,
        expires_at=created_at + timedelta(days=365) if index == 2 else None,
        scale={0: 1.0, 1: 0.35, 2: 0.2}.get(index, 0.25),
    )


# --------------------------------------------------------------------------- rows


@dataclass
class _Row:
    """Mutable per-key (or aggregated) activity counters for one endpoint."""

    requests: int
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    cached_tokens: int | None
    usage: float
    byok_usage_inference: float

    def copy(self) -> _Row:
        return _Row(**self.__dict__)

    def add(self, other: _Row, *, rounded: bool) -> None:
        """Add `other` in place; `rounded` keeps per-key usage at USAGE_DECIMALS."""
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.reasoning_tokens += other.reasoning_tokens
        if self.cached_tokens is not None or other.cached_tokens is not None:
            self.cached_tokens = (self.cached_tokens or 0) + (other.cached_tokens or 0)
        usage = self.usage + other.usage
        byok = self.byok_usage_inference + other.byok_usage_inference
        self.usage = round(usage, USAGE_DECIMALS) if rounded else usage
        self.byok_usage_inference = round(byok, USAGE_DECIMALS) if rounded else byok


def _make_row(endpoint: Endpoint, requests: int, rng: random.Random, *, cached: bool) -> _Row:
    model = endpoint.model
    prompt = int(requests * model.prompt_size * rng.uniform(0.6, 1.5))
    completion = int(requests * model.completion_size * rng.uniform(0.6, 1.5))
    reasoning = 0
    if model.thinking_share > 0:
        thinking = min(requests, max(1, round(requests * model.thinking_share * rng.uniform(0.6, 1.4))))
        # Thinking budgets are often larger than the visible answer: the API allows
        # reasoning_tokens > completion_tokens.
        reasoning = int(thinking * rng.uniform(250, 2600))
    cached_tokens = int(prompt * rng.uniform(0.05, 0.6)) if cached else None
    cost = (prompt * model.prompt_price + (completion + reasoning) * model.completion_price) / 1_000_000
    if endpoint.provider in BYOK_PROVIDERS:
        usage, byok = cost * BYOK_FEE_RATE, cost
    else:
        usage, byok = cost, 0.0
    return _Row(
        requests=requests,
        prompt_tokens=prompt,
        completion_tokens=completion,
        reasoning_tokens=reasoning,
        cached_tokens=cached_tokens,
        usage=round(usage, USAGE_DECIMALS),
        byok_usage_inference=round(byok, USAGE_DECIMALS),
    )


def _item(day: date, endpoint: Endpoint, row: _Row, workspace_id: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "date": day.isoformat(),
        "model": endpoint.model.slug,
        "model_permaslug": endpoint.model.permaslug,
        "endpoint_id": endpoint.id,
        "provider_name": endpoint.provider,
        "usage": row.usage,
        "byok_usage_inference": row.byok_usage_inference,
        "requests": row.requests,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "reasoning_tokens": row.reasoning_tokens,
    }
    if row.cached_tokens is not None:
        item["cached_tokens"] = row.cached_tokens
    if workspace_id is not None:
        item["workspace_id"] = workspace_id
    return item


# --------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class Spike:
    """Extra spend on one day for one key (by hash), on one model (its slug; None: any).

    Added to the key's row of the model's first non-BYOK endpoint (created if the key did
    not use it that day), with requests and tokens scaled alike; every answer (/activity,
    per key, analytics, credits) sees it.
    """

    day: date
    usd: float
    api_key_hash: str
    model: str | None = None


class Dataset:
    """A fake OpenRouter organisation account: keys, workspaces and daily activity.

    `anchor` is the date the key history is laid out around (the mid-window key is
    created 12 days before it). It defaults to today's UTC date at construction and
    stays fixed afterwards, so a given day's data never changes as the clock moves.
    """

    def __init__(
        self,
        seed: int = 42,
        keys: int = 3,
        endpoints_per_day: int = 24,
        empty_day_every: int = 9,
        workspaces: int = 2,
        *,
        anchor: date | None = None,
        first_key_age_days: int = 150,
        users: int = 2,
        spikes: Iterable[Spike] = (),
    ) -> None:
        if keys < 1 or workspaces < 1 or users < 1:
            raise ValueError("a dataset needs at least one key, one workspace and one user")
        self.seed = seed
        self.endpoints: tuple[Endpoint, ...] = _catalogue(endpoints_per_day)
        self._endpoints_by_id = {endpoint.id: endpoint for endpoint in self.endpoints}
        self.endpoints_per_day = max(0, min(endpoints_per_day, len(self.endpoints)))
        self.empty_day_every = empty_day_every
        self.anchor = anchor or datetime.now(timezone.utc).date()
        self.workspace_ids = [str(uuid.uuid5(_NAMESPACE, f"workspace|{seed}|{i}")) for i in range(workspaces)]
        # `first_key_age_days` (the oldest key's age) sets how far back the account has any
        # history: the Analytics API serves up to 365 days of it.
        self.user_ids = [_user_id(seed, i) for i in range(users)]
        self.api_keys: tuple[KeyInfo, ...] = tuple(
            _build_key(seed, i, keys, self.anchor, self.workspace_ids, self.user_ids, first_key_age_days)
            for i in range(keys)
        )
        self._revisions: dict[date, int] = {}
        self.spikes: tuple[Spike, ...] = tuple(spikes)
        # (day, endpoint_id, key hash or None for every key) -> field overrides, or None: dropped
        self._amendments: dict[tuple[date, str, str | None], dict[str, str] | None] = {}
        self._cache: dict[tuple[date, int, int], dict[str, _Row]] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- public API

    def is_empty_day(self, day: date) -> bool:
        """Whether `day` has no activity at all (before any revision)."""
        every = self.empty_day_every
        return every > 0 and (day.toordinal() + self.seed) % every == 0

    def revision(self, day: date) -> int:
        """How many times `revise(day)` was called."""
        with self._lock:
            return self._revisions.get(day, 0)

    def revisions(self) -> tuple[tuple[date, int], ...]:
        """Every revised day with its revision: what changed since the dataset was made."""
        with self._lock:
            return tuple(sorted(self._revisions.items()))

    def revise(self, day: date) -> int:
        """Simulate late-arriving data for `day`; returns the new revision number."""
        with self._lock:
            self._revisions[day] = self._revisions.get(day, 0) + 1
            return self._revisions[day]

    def amend(
        self, day: date, endpoint: str, /, *, drop: bool = False, api_key_hash: str | None = None, **fields: str
    ) -> None:
        """Change how `day`'s row of `endpoint` is listed from now on (for one key, or all).

        `drop` removes the row (the day shrinks); `fields` override `endpoint_id` (the id
        changed), `model`, `model_permaslug` or `provider_name`. Per-key and account-level
        answers stay consistent; the key usage counters of `/keys` are not recomputed.
        """
        unknown = set(fields) - {"endpoint_id", "model", "model_permaslug", "provider_name"}
        if unknown:
            raise ValueError(f"cannot amend {sorted(unknown)}")
        with self._lock:
            slot = (day, endpoint, api_key_hash)
            previous = self._amendments.get(slot, {})
            self._amendments[slot] = None if drop or previous is None else {**previous, **fields}

    def _amended(self, day: date, endpoint_id: str, key: KeyInfo) -> dict[str, str] | None:
        if not self._amendments:  # the usual case, per row of every answer: no lock needed
            return {}
        with self._lock:
            for slot in ((day, endpoint_id, key.hash), (day, endpoint_id, None)):
                if slot in self._amendments:
                    return self._amendments[slot]
        return {}

    def key_by_hash(self, key_hash: str) -> KeyInfo | None:
        return next((key for key in self.api_keys if key.hash == key_hash), None)

    def activity(
        self,
        day: date,
        *,
        api_key_hash: str | None = None,
        user_id: str | None = None,
        workspace_id: str | None = None,
        group_by: str | None = None,
    ) -> list[dict[str, Any]]:
        """The activity items for one day, as `GET /activity?date=day` would list them."""
        if group_by not in (None, "workspace"):
            raise ValueError(f"unsupported group_by: {group_by!r}")
        selected = [
            key
            for key in self.api_keys
            if (api_key_hash is None or key.hash == api_key_hash)
            and (user_id is None or key.creator_user_id == user_id)
            and (workspace_id is None or key.workspace_id == workspace_id)
        ]
        groups: dict[tuple[str, str | None], _Row] = {}
        overrides: dict[tuple[str, str | None], tuple[str, dict[str, str]]] = {}
        # Summed in key order so that float totals are reproducible.
        for key in selected:
            for endpoint_id, row in self._key_rows(day, key).items():
                amended = self._amended(day, endpoint_id, key)
                if amended is None:
                    continue
                group = (amended.get("endpoint_id", endpoint_id), key.workspace_id if group_by else None)
                overrides.setdefault(group, (endpoint_id, amended))
                if group in groups:
                    groups[group].add(row, rounded=False)
                else:
                    groups[group] = row.copy()
        items = []
        for group, row in groups.items():
            endpoint_id, amended = overrides[group]
            items.append({**_item(day, self._endpoints_by_id[endpoint_id], row, group[1]), **amended})
        items.sort(key=lambda item: (item["model"], item["provider_name"], item.get("workspace_id", "")))
        return items

    def keys_as_api(self, today: date, *, include_disabled: bool = True) -> list[dict[str, Any]]:
        """The `GET /keys` objects of every key (usage counters as of `today`)."""
        return [self.key_as_api(key, today) for key in self.api_keys if include_disabled or not key.disabled]

    def key_as_api(self, key: KeyInfo, today: date) -> dict[str, Any]:
        """One `GET /keys` object."""
        usage = self._usage_counters(key, today)
        remaining = self._limit_remaining(key, usage)
        return {
            "hash": key.hash,
            "name": key.name,
            "label": key.label,
            "disabled": key.disabled,
            "limit": key.limit,
            "limit_remaining": remaining,
            "limit_reset": key.limit_reset,
            "include_byok_in_limit": False,
            **usage,
            "created_at": _iso(key.created_at),
            "updated_at": _iso(key.updated_at),
            "expires_at": _iso(key.expires_at),
            "creator_user_id": key.creator_user_id,
            "workspace_id": key.workspace_id,
        }

    def current_key_as_api(self, key: KeyInfo, today: date) -> dict[str, Any]:
        """The `GET /key` data for an inference key."""
        usage = self._usage_counters(key, today)
        return {
            "label": key.label,
            "limit": key.limit,
            "limit_remaining": self._limit_remaining(key, usage),
            "limit_reset": key.limit_reset,
            "include_byok_in_limit": False,
            **usage,
            "is_free_tier": False,
            "is_management_key": False,
            "is_provisioning_key": False,
            "creator_user_id": key.creator_user_id,
            "expires_at": _iso(key.expires_at),
            "rate_limit": _legacy_rate_limit(),
        }

    def management_key_as_api(self, secret: str) -> dict[str, Any]:
        """The `GET /key` data for the management key (it spends nothing itself)."""
        zero = dict.fromkeys(_USAGE_COUNTER_NAMES, 0.0)
        return {
            "label": mask_key(secret),
            "limit": None,
            "limit_remaining": None,
            "limit_reset": None,
            "include_byok_in_limit": False,
            **zero,
            "is_free_tier": False,
            "is_management_key": True,
            "is_provisioning_key": True,
            "creator_user_id": self.user_ids[0],
            "expires_at": None,
            "rate_limit": _legacy_rate_limit(),
        }

    def credits(self, today: date | None = None) -> dict[str, float]:
        """`GET /credits` data: lifetime spend of all keys and the credits bought."""
        today = today or self.anchor
        total_usage = round(sum(self._lifetime(key, today)[0] for key in self.api_keys), 6)
        # Credits are bought in $100 top-ups, plus a small promotional grant.
        total_credits = math.ceil((total_usage + 20.0) / 100.0) * 100.0 + 5.0
        return {"total_credits": total_credits, "total_usage": total_usage}

    # ---------------------------------------------------------------- generation

    def _day_plan(self, day: date) -> list[tuple[Endpoint, int]]:
        """The endpoints used on `day`, each with the key index that surely uses it."""
        active = [key for key in self.api_keys if key.active_on(day)]
        if not active or self.is_empty_day(day):
            return []
        rng = stable_rng(self.seed, day.isoformat(), "plan")
        chosen = sorted(rng.sample(self.endpoints, self.endpoints_per_day), key=lambda e: e.position)
        owners = rng.choices(active, weights=[key.scale for key in active], k=len(chosen))
        return [(endpoint, owner.index) for endpoint, owner in zip(chosen, owners)]

    def _has_cached_tokens(self, day: date, endpoint: Endpoint) -> bool:
        # A property of (day, endpoint), not of a key, so aggregated rows agree with per-key rows.
        return stable_int(self.seed, day.isoformat(), endpoint.id, "cached") % 5 == 0

    def _base_rows(self, day: date, key: KeyInfo) -> dict[str, _Row]:
        if not key.active_on(day):
            return {}
        rng = stable_rng(self.seed, day.isoformat(), "key", key.hash)
        weekday_factor = 0.55 if day.weekday() >= 5 else 1.0
        rows: dict[str, _Row] = {}
        for endpoint, owner in self._day_plan(day):
            draw = rng.random()
            if owner != key.index and draw >= 0.3:
                continue
            volume = rng.lognormvariate(math.log(30), 0.7) * key.scale * endpoint.model.popularity * weekday_factor
            cached = self._has_cached_tokens(day, endpoint)
            rows[endpoint.id] = _make_row(endpoint, max(1, round(volume)), rng, cached=cached)
        return rows

    def _apply_revision(self, day: date, number: int, key: KeyInfo, rows: dict[str, _Row]) -> None:
        """Late data for revision `number`: one key gets more traffic, maybe on a new endpoint."""
        active = [k for k in self.api_keys if k.active_on(day)]
        if not active:
            return
        rng = stable_rng(self.seed, day.isoformat(), "revision", number)
        if rng.choice(active).index != key.index:
            return
        for endpoint_id in rng.sample(sorted(rows), min(len(rows), rng.randint(1, 3))):
            endpoint = self._endpoints_by_id[endpoint_id]
            extra = _make_row(endpoint, rng.randint(1, 12), rng, cached=rows[endpoint_id].cached_tokens is not None)
            rows[endpoint_id].add(extra, rounded=True)
        unused = [endpoint for endpoint in self.endpoints if endpoint.id not in rows]
        if unused and (not rows or rng.random() < 0.4):
            endpoint = rng.choice(unused)
            rows[endpoint.id] = _make_row(
                endpoint, rng.randint(1, 8), rng, cached=self._has_cached_tokens(day, endpoint)
            )

    def _key_rows(self, day: date, key: KeyInfo) -> dict[str, _Row]:
        """Per-key rows for `day`, including revisions (cached; callers must not mutate)."""
        revision = self.revision(day)
        cache_key = (day, key.index, revision)
        with self._lock:
            cached = self._cache.get(cache_key)
        if cached is not None:
            return cached
        rows = self._base_rows(day, key)
        for number in range(1, revision + 1):
            self._apply_revision(day, number, key, rows)
        for spike in self.spikes:
            if spike.day == day and spike.api_key_hash == key.hash:
                self._apply_spike(spike, rows)
        with self._lock:
            if len(self._cache) > 20_000:  # a long-running demo must not grow without bound
                self._cache.clear()
            self._cache[cache_key] = rows
        return rows

    def _apply_spike(self, spike: Spike, rows: dict[str, _Row]) -> None:
        candidates = [e for e in self.endpoints if e.provider not in BYOK_PROVIDERS and spike.model in (None, e.model.slug)]
        if not candidates:
            raise ValueError(f"no endpoint of model {spike.model!r} to put a spike on")
        endpoint = next((e for e in candidates if e.id in rows), candidates[0])
        row = rows.get(endpoint.id)
        if row is None:
            rng = stable_rng(self.seed, spike.day.isoformat(), "spike", endpoint.id)
            row = rows[endpoint.id] = _make_row(endpoint, 1, rng, cached=self._has_cached_tokens(spike.day, endpoint))
            factor = spike.usd / max(row.usage, 1e-9)
            row.usage = 0.0  # the spike is all of this row's spend
        else:
            factor = (row.usage + spike.usd) / max(row.usage, 1e-9)
        row.requests = max(1, round(row.requests * factor))
        row.prompt_tokens = round(row.prompt_tokens * factor)
        row.completion_tokens = round(row.completion_tokens * factor)
        row.reasoning_tokens = round(row.reasoning_tokens * factor)
        if row.cached_tokens is not None:
            row.cached_tokens = round(row.cached_tokens * factor)
        row.usage = round(row.usage + spike.usd, USAGE_DECIMALS)

    # ---------------------------------------------------------------- key usage

    def _day_spend(self, key: KeyInfo, day: date) -> tuple[float, float]:
        rows = self._key_rows(day, key).values()
        return sum(row.usage for row in rows), sum(row.byok_usage_inference for row in rows)

    def _spend_between(self, key: KeyInfo, first: date, today: date) -> tuple[float, float]:
        """Spend from `first` to yesterday, plus today's partial spend."""
        usage = byok = 0.0
        for day in _days(max(first, key.created_at.date()), today):
            day_usage, day_byok = self._day_spend(key, day)
            usage, byok = usage + day_usage, byok + day_byok
        # `today` is still running: only part of its traffic has happened.
        if key.active_on(today):
            day_usage, day_byok = self._day_spend(key, today)
            usage, byok = usage + day_usage / 2, byok + day_byok / 2
        return usage, byok

    def _lifetime(self, key: KeyInfo, today: date) -> tuple[float, float]:
        return self._spend_between(key, key.created_at.date(), today)

    def _usage_counters(self, key: KeyInfo, today: date) -> dict[str, float]:
        periods = {
            "": key.created_at.date(),
            "_daily": today,
            "_weekly": today - timedelta(days=today.weekday()),
            "_monthly": today.replace(day=1),
        }
        counters: dict[str, float] = {}
        for suffix, first in periods.items():
            usage, byok = self._spend_between(key, first, today)
            counters[f"usage{suffix}"] = round(usage, 6)
            counters[f"byok_usage{suffix}"] = round(byok, 6)
        return {name: counters[name] for name in _USAGE_COUNTER_NAMES}

    @staticmethod
    def _limit_remaining(key: KeyInfo, usage: dict[str, float]) -> float | None:
        if key.limit is None:
            return None
        spent = usage[f"usage_{key.limit_reset}"] if key.limit_reset else usage["usage"]
        return round(max(0.0, key.limit - spent), 6)


_USAGE_COUNTER_NAMES = (
    "usage",
    "usage_daily",
    "usage_weekly",
    "usage_monthly",
    "byok_usage",
    "byok_usage_daily",
    "byok_usage_weekly",
    "byok_usage_monthly",
)


def _legacy_rate_limit() -> dict[str, Any]:
    return {"requests": -1, "interval": "10s", "note": "This field is deprecated and safe to ignore."}


def _days(first: date, end: date) -> Iterator[date]:
    """Days from `first` up to, but excluding, `end`."""
    day = first
    while day < end:
        yield day
        day += timedelta(days=1)


# --------------------------------------------------------------------------- wire format


def activity_window(today: date) -> list[date]:
    """The 30 completed UTC days before `today`, newest first."""
    return [today - timedelta(days=offset) for offset in range(1, WINDOW_DAYS + 1)]


def parse_api_day(text: str) -> date | None:
    """Parse a `date` query parameter: strictly YYYY-MM-DD, else None."""
    if not _DAY_RE.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def uses_live_date_style(seed: int, day: date) -> bool:
    """In "mixed" style, whether `day` is rendered like the live API (`... 00:00:00`)."""
    return stable_int(seed, day.isoformat(), "date-style") % 2 == 0


def uses_float_counts(seed: int, day: date) -> bool:
    """In "mixed" mode, whether `day`'s counts are rendered as doubles (`5.0`)."""
    return stable_int(seed, day.isoformat(), "float-counts") % 3 == 0


def serialize_item(item: dict[str, Any], *, live_date: bool, float_counts: bool) -> dict[str, Any]:
    """Render an activity item the way one of the API's versions would."""
    out = dict(item)
    if live_date:
        out["date"] = f"{item['date']} 00:00:00"
    if float_counts:
        for name in COUNT_FIELDS:
            if name in out:
                out[name] = float(out[name])
    return out
