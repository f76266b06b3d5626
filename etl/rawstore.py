"""How a raw answer is cut into content-addressed pieces, and put back together (pure).

Every answer OpenRouter sends is kept byte for byte, but a year of daily syncs must not
keep a year of near-copies: each sync's ``GET /activity`` answer is the whole 30-day
window, which shares 29 days with yesterday's. So an answer is stored once per distinct
body (its SHA-256), and the body itself as a list of pieces, each stored once per distinct
content (its own SHA-256): the items of one day are one piece wherever that day sits in
the window, so a daily sync adds one new day's piece, not another 30 days.

The cut is a pure function of the bytes: at every place where the ``"date"`` of the
items changes, the separator between two days' items (``,``) becomes a piece of its own,
and so do the answer's opening (``{"data":[``) and closing (``]}``). The pieces are
slices at increasing offsets, so their concatenation is the body exactly, whatever the
bytes; where the cut does not fit (no dates, dates not grouped together, a small body)
the body is one piece. The cut only decides how much is shared, never what is kept.

Each piece is compressed as its own gzip member (no time stamp, so identical pieces
compress identically), and concatenated gzip members are one valid gzip stream (RFC 1952
§2.2): the pieces of a body, joined in order, are a gzip file of the whole answer, which
``gunzip`` or ``gzip.decompress`` read as such. That is what the ``raw_response_bodies``
view returns. The members are written by zlib-ng (the same format, read back here by the
standard library's ``gzip``), at a level that stores what zlib's level 6 did to within a
few percent in well under half its time: a first sync compresses a year of answers, tens
of megabytes, and that was a sixth of its CPU.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from zlib_ng import zlib_ng

ENCODING = "gzip"
# zlib-ng's level 5, on the pieces that are new. A year of a first sync's analytics
# answers (30 MB, scripts/bench_history.py): 0.12 s of CPU and 3.30 MB, against zlib's
# level 6 at 0.30 s and 3.20 MB (level 1: 0.10 s, 4.29 MB). A daily sync adds one day
# of the /activity window, where the level hardly matters (README, "Storage").
COMPRESS_LEVEL = 5
# Below this a body is one piece: a cut could save less than its bookkeeping costs.
MIN_SPLIT_BYTES = 32 * 1024

_DATE = re.compile(rb'"date"\s*:\s*"([^"\\]{1,40})"')


def digest(content: bytes) -> str:
    """The key of a body or piece: SHA-256 of the uncompressed bytes, as hex."""
    return hashlib.sha256(content).hexdigest()


def compress(piece: bytes, level: int = COMPRESS_LEVEL) -> bytes:
    # wbits 31: one gzip member, zlib's own header (mtime 0, so identical pieces compress identically).
    return zlib_ng.compress(piece, level, wbits=31)


@dataclass(frozen=True, eq=False)
class Packed:
    """A body cut, hashed and its pieces compressed ahead of the write: all ``store_body`` computes.

    zlib and SHA-256 release the GIL on large inputs, so a thread that fetched an answer can
    pack it while another writes rows: the analytics fetch threads do, for their answers of
    up to a few megabytes (a year's compression was a sixth of a first sync's CPU, and the
    cut and hashes a tenth of the writing thread's time, when that thread did them).
    ``body`` is the packed object itself, not a copy: a writer uses a ``Packed`` only for the
    very bytes it was made from (``is``), so no other body can be stored under its keys.
    """

    body: bytes
    sha256: str  # of the whole body
    keys: tuple[str, ...]  # each piece's SHA-256, in order
    sizes: tuple[int, ...]  # each piece's length, uncompressed
    data: dict[str, bytes]  # each distinct piece compressed, by its key


def made_from(packed: Packed | None, body: bytes) -> Packed | None:
    """``packed`` if it was made from this very ``body`` object, else None (pack it again)."""
    return packed if packed is not None and packed.body is body else None


def pack(body: bytes) -> Packed:
    pieces = split(body)
    keys = tuple(digest(p) for p in pieces)
    data: dict[str, bytes] = {}
    for key, piece in zip(keys, pieces):
        if key not in data:
            data[key] = compress(piece)
    return Packed(body, digest(body), keys, tuple(len(p) for p in pieces), data)


def decompress(encoding: str, data: bytes) -> bytes:
    if encoding == ENCODING:
        return gzip.decompress(data)
    if encoding == "identity":
        return bytes(data)
    raise ValueError(f"unknown encoding of a stored piece: {encoding!r}")


def cuts(body: bytes) -> list[int]:
    """Offsets (strictly increasing, inside the body) where the body is cut into pieces."""
    if len(body) < MIN_SPLIT_BYTES:
        return []
    found: list[int] = []
    seen: set[bytes] = set()
    runs = 0
    previous: bytes | None = None
    last_date = -1
    for match in _DATE.finditer(body):
        last_date = match.start()
        value = match.group(1)
        if value == previous:
            continue
        previous = value
        runs += 1
        seen.add(value)
        start = body.rfind(b"{", 0, match.start())  # the item that holds this date
        if start <= (found[-1] if found else 0):
            continue
        if runs > 1:
            end = body.rfind(b"}", 0, start) + 1  # the previous day's last item ends here
            if end > (found[-1] if found else 0) and end < start:
                found.append(end)
        found.append(start)
    if runs > 2 * len(seen):  # the days are not grouped: cutting would share nothing
        return []
    close = body.rfind(b"]")
    if found and close > last_date:
        end = body.rfind(b"}", last_date, close) + 1
        if end > found[-1] and end < len(body):
            found.append(end)
    return found


def split(body: bytes) -> list[bytes]:
    """The pieces of ``body``, in order; ``b"".join(split(body)) == body`` always."""
    offsets = [0, *cuts(body), len(body)]
    return [body[a:b] for a, b in zip(offsets, offsets[1:])] or [body]


def join(pieces: Iterable[tuple[str, bytes]]) -> bytes:
    """The body from its stored pieces, in order: (encoding, data) each."""
    return b"".join(decompress(encoding, data) for encoding, data in pieces)
