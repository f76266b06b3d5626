"""Issue 14: dialect code lives in etl/db.py (and PostgreSQL's own in etl/postgres.py).

No other module issues a PRAGMA or tells a database in memory from a file itself; the
functions that do it are checked here against a real SQLite file.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from sqlalchemy import text

from etl.db import broken_foreign_keys, checkpoint_wal, foreign_keys_deferred, open_engine, sqlite_in_memory, storage_facts

ETL = Path(__file__).resolve().parent.parent / "etl"
DIALECT_MODULES = {"db.py", "postgres.py"}


def strings(path: Path) -> list[str]:
    return [node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_no_module_but_db_issues_a_pragma_or_tests_for_memory():
    for path in sorted(ETL.rglob("*.py")):
        if path.name in DIALECT_MODULES and path.parent == ETL:
            continue
        for value in strings(path):
            code = value.strip().upper()
            assert not code.startswith("PRAGMA"), (path.name, value)
            assert value not in (":memory:", "mode=memory"), (path.name, value)


@pytest.mark.parametrize(("url", "memory"), [
    ("sqlite://", True), ("sqlite:///:memory:", True), ("sqlite:///file:x?mode=memory&uri=true", True),
    ("sqlite:////tmp/a.db", False), ("sqlite:///relative.db", False), ("postgresql+psycopg://u@h/db", False), ("not a url", False),
])
def test_sqlite_in_memory(url, memory):
    assert sqlite_in_memory(url) is memory


def test_a_url_in_memory_is_refused_by_the_configuration():
    from etl.config import check_urls, parse_config
    from etl.errors import ConfigError

    for url in ("sqlite://", "sqlite:///:memory:", "sqlite:///file:x?mode=memory&uri=true"):
        with pytest.raises(ConfigError, match="in memory"):
            check_urls(parse_config({"warehouse": {"url": url}}, "test"), {})
    check_urls(parse_config({"warehouse": {"url": "sqlite:////tmp/a.db"}}, "test"), {})


@pytest.fixture
def engine(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE parent (id INTEGER PRIMARY KEY)"))
        conn.execute(text("CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES parent(id))"))
    yield engine
    engine.dispose()


def test_foreign_keys_are_off_inside_the_block_only_and_breaks_are_found(engine):
    with engine.connect() as conn:
        with foreign_keys_deferred(conn):
            with conn.begin():
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
                conn.execute(text("INSERT INTO child VALUES (1, 99)"))  # accepted: enforcement is off
                assert broken_foreign_keys(conn)
                conn.execute(text("DELETE FROM child"))
                assert not broken_foreign_keys(conn)
        with conn.begin():
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_checkpoint_empties_the_wal(engine, tmp_path):
    wal = tmp_path / "w.db-wal"
    with engine.connect() as conn:
        with conn.begin():
            conn.execute(text("INSERT INTO parent VALUES (1)"))
        assert wal.exists() and wal.stat().st_size > 0
        checkpoint_wal(conn)
        assert wal.stat().st_size == 0


def test_storage_facts_of_a_sqlite_file(engine, tmp_path):
    size, version = storage_facts(engine)
    files = [p for p in (tmp_path / "w.db", tmp_path / "w.db-wal") if p.exists()]
    assert size == sum(p.stat().st_size for p in files) and size > 0 and version is None
    missing = open_engine(f"sqlite:///{tmp_path / 'none.db'}", read_only=True)
    assert storage_facts(missing) == (None, None)
