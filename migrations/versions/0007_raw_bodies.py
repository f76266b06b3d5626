"""Content-addressed raw answers: each distinct body once, each distinct piece of it once.

Until now every fetch kept its own compressed copy of the body, and a daily sync's answer
is the whole 30-day window, 29 days of it the same as yesterday's: about 1 GB a year at
2,000 endpoints a day. From here on ``raw_responses`` (one row per fetch, unchanged
otherwise) names its body in ``raw_bodies`` (one row per distinct body, by SHA-256 of the
exact bytes), stored as an ordered list of pieces (``raw_body_chunks``) of which each
distinct one is stored once, gzip-compressed, in ``raw_chunks`` (see etl/rawstore.py for
the cut). The ``raw_response_bodies`` view gives a fetch with its whole body as one gzip
stream, as ``raw_responses.body`` did.

The upgrade moves every stored body into the new tables, deduplicated, and drops the
``body``, ``encoding`` and ``body_bytes`` columns; a body that cannot be decompressed is
kept exactly as it was stored, as one piece (reading it says it is damaged). The downgrade
puts every body back in its fetch's row (the pieces' gzip members, concatenated: one
valid gzip stream), exactly. Both run in the one transaction of the upgrade (etl/migrate.py).

No binary column gets a server default (PostgreSQL refuses a bytea default given as
text); columns are added nullable, filled, then made NOT NULL.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import gzip
import hashlib
import zlib

import sqlalchemy as sa
from alembic import op

from etl import rawstore

# The revision id, in one place: another branch may also add a 0007 (renumber here, and
# etl/migrate.py HEAD_REVISION).
revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

VIEW = "raw_response_bodies"
_COLUMNS = "r.id, r.run_id, r.fetched_at, r.endpoint, r.params, r.status, r.content_type, 'gzip' AS encoding"
_PIECES = "raw_body_chunks bc JOIN raw_chunks c ON c.id = bc.chunk_id WHERE bc.body_id = r.raw_body_id"
# One fetch with its whole body: the pieces' gzip members in order, one gzip stream.
VIEW_SQL = {
    "sqlite": (
        f"SELECT {_COLUMNS}, CAST((SELECT group_concat(data, '') FROM (SELECT c.data FROM {_PIECES} ORDER BY bc.seq)) AS BLOB) AS body, "
        "b.body_bytes, r.sha256 FROM raw_responses r JOIN raw_bodies b ON b.id = r.raw_body_id"
    ),
    "postgresql": (
        f"SELECT {_COLUMNS}, (SELECT string_agg(c.data, ''::bytea ORDER BY bc.seq) FROM {_PIECES}) AS body, "
        "b.body_bytes, r.sha256 FROM raw_responses r JOIN raw_bodies b ON b.id = r.raw_body_id"
    ),
}

_chunks = sa.table(
    "raw_chunks", sa.column("id", sa.Integer), sa.column("sha256", sa.String), sa.column("encoding", sa.String),
    sa.column("data", sa.LargeBinary), sa.column("data_bytes", sa.BigInteger),
)
_bodies = sa.table(
    "raw_bodies", sa.column("id", sa.Integer), sa.column("sha256", sa.String), sa.column("body_bytes", sa.BigInteger),
    sa.column("chunk_count", sa.Integer),
)
_links = sa.table("raw_body_chunks", sa.column("body_id", sa.Integer), sa.column("seq", sa.Integer), sa.column("chunk_id", sa.Integer))


def upgrade() -> None:
    conn = op.get_bind()
    op.create_table(
        "raw_chunks",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("encoding", sa.String(20), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("data_bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_raw_chunks"),
        sa.UniqueConstraint("sha256", name="uq_raw_chunks_sha256"),
    )
    op.create_table(
        "raw_bodies",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("body_bytes", sa.BigInteger(), nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_raw_bodies"),
        sa.UniqueConstraint("sha256", name="uq_raw_bodies_sha256"),
    )
    op.create_table(
        "raw_body_chunks",
        sa.Column("body_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("chunk_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("body_id", "seq", name="pk_raw_body_chunks"),
        sa.ForeignKeyConstraint(["body_id"], ["raw_bodies.id"], name="fk_raw_body_chunks_body_id_raw_bodies"),
        sa.ForeignKeyConstraint(["chunk_id"], ["raw_chunks.id"], name="fk_raw_body_chunks_chunk_id_raw_chunks"),
        sqlite_with_rowid=False,
    )
    op.add_column("raw_responses", sa.Column("raw_body_id", sa.Integer()))
    ids = conn.execute(sa.text("SELECT id FROM raw_responses ORDER BY id")).scalars().all()
    for raw_id in ids:  # one body in memory at a time
        encoding, stored, size = conn.execute(
            sa.text("SELECT encoding, body, body_bytes FROM raw_responses WHERE id = :id"), {"id": raw_id}
        ).one()
        body_id = _store(conn, encoding, bytes(stored), int(size))
        conn.execute(sa.text("UPDATE raw_responses SET raw_body_id = :b WHERE id = :id"), {"b": body_id, "id": raw_id})
    with op.batch_alter_table("raw_responses") as batch:
        batch.alter_column("raw_body_id", existing_type=sa.Integer(), nullable=False)
        batch.create_foreign_key("fk_raw_responses_raw_body_id_raw_bodies", "raw_bodies", ["raw_body_id"], ["id"])
        batch.drop_column("encoding")
        batch.drop_column("body")
        batch.drop_column("body_bytes")
    op.execute(f"CREATE VIEW {VIEW} AS {VIEW_SQL[conn.dialect.name]}")


def _store(conn: sa.Connection, encoding: str, stored: bytes, recorded_size: int) -> int:
    """The raw_bodies id for one old row's body, storing what is not stored yet."""
    try:
        body = gzip.decompress(stored) if encoding == "gzip" else stored
    except (OSError, EOFError, zlib.error):
        body = None
    if body is None:
        # Damaged: kept as stored, one piece, keyed by the stored bytes (never by the checksum
        # its fetch recorded, which a good copy fetched later must not find taken).
        sha = hashlib.sha256(stored).hexdigest()
        pieces = [(sha, encoding, stored, len(stored))]
        size = recorded_size
    else:
        sha, size = rawstore.digest(body), len(body)
        parts = rawstore.split(body)
        pieces = [(rawstore.digest(p), rawstore.ENCODING, b"", len(p)) for p in parts]
    found = conn.execute(sa.select(_bodies.c.id).where(_bodies.c.sha256 == sha)).scalar()
    if found is not None:
        return int(found)
    chunk_ids: list[int] = []
    for i, (key, piece_encoding, data, n) in enumerate(pieces):
        chunk = conn.execute(sa.select(_chunks.c.id).where(_chunks.c.sha256 == key)).scalar()
        if chunk is None:
            if body is not None:
                data = rawstore.compress(parts[i])
            conn.execute(_chunks.insert().values(sha256=key, encoding=piece_encoding, data=data, data_bytes=n))
            chunk = conn.execute(sa.select(_chunks.c.id).where(_chunks.c.sha256 == key)).scalar_one()
        chunk_ids.append(int(chunk))
    conn.execute(_bodies.insert().values(sha256=sha, body_bytes=size, chunk_count=len(chunk_ids)))
    body_id = int(conn.execute(sa.select(_bodies.c.id).where(_bodies.c.sha256 == sha)).scalar_one())
    conn.execute(_links.insert(), [{"body_id": body_id, "seq": i, "chunk_id": c} for i, c in enumerate(chunk_ids)])
    return body_id


def downgrade() -> None:
    conn = op.get_bind()
    op.execute(f"DROP VIEW {VIEW}")
    op.add_column("raw_responses", sa.Column("encoding", sa.String(20)))
    op.add_column("raw_responses", sa.Column("body", sa.LargeBinary()))
    op.add_column("raw_responses", sa.Column("body_bytes", sa.BigInteger()))
    update = sa.text("UPDATE raw_responses SET encoding = :e, body = :body, body_bytes = :n WHERE raw_body_id = :b").bindparams(
        sa.bindparam("body", type_=sa.LargeBinary())
    )
    for body_id, size in conn.execute(sa.text("SELECT id, body_bytes FROM raw_bodies ORDER BY id")).all():
        pieces = conn.execute(
            sa.text("SELECT c.encoding, c.data FROM raw_body_chunks bc JOIN raw_chunks c ON c.id = bc.chunk_id WHERE bc.body_id = :b ORDER BY bc.seq"),
            {"b": body_id},
        ).all()
        if len(pieces) == 1:
            encoding, blob = pieces[0][0], bytes(pieces[0][1])
        elif all(p[0] == rawstore.ENCODING for p in pieces):
            encoding, blob = "gzip", b"".join(bytes(p[1]) for p in pieces)  # gzip members: one gzip stream
        else:
            encoding, blob = "gzip", gzip.compress(rawstore.join((p[0], bytes(p[1])) for p in pieces), mtime=0)
        conn.execute(update, {"e": encoding, "body": blob, "n": size, "b": body_id})
    with op.batch_alter_table("raw_responses") as batch:
        batch.drop_constraint("fk_raw_responses_raw_body_id_raw_bodies", type_="foreignkey")
        batch.drop_column("raw_body_id")
        batch.alter_column("encoding", existing_type=sa.String(20), nullable=False)
        batch.alter_column("body", existing_type=sa.LargeBinary(), nullable=False)
        batch.alter_column("body_bytes", existing_type=sa.BigInteger(), nullable=False)
    op.drop_table("raw_body_chunks")
    op.drop_table("raw_bodies")
    op.drop_table("raw_chunks")
