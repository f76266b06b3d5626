"""Mutation audit (module ``query``): glob filters escape every character but ``*`` and ``?``.

``glob_match`` is SQLite's GLOB (``[`` escaped as ``[[]``) and, on PostgreSQL, a LIKE with
``%``, ``_`` and ``\\`` escaped. The LIKE pattern is checked here by running it in a real
SQLite (with ``case_sensitive_like`` on, as PostgreSQL's LIKE is), so that the audit,
which runs without PostgreSQL, still sees a dropped escape.
"""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import column, create_engine, literal, select

from etl.db import glob_match, glob_matches

CASES = [  # pattern, matching values, values that must not match
    ("a%b", ["a%b"], ["axb", "ab", "axxb"]),
    ("a_b", ["a_b"], ["axb"]),
    ("[ab]", ["[ab]"], ["a", "b"]),
    ("a\\b", ["a\\b"], ["ab"]),
    ("a?b", ["axb", "a%b", "a_b"], ["ab", "axxb"]),
    ("a*b", ["ab", "axxb", "a%b"], ["ba", "Ab"]),
    ("a[*", ["a[", "a[xx"], ["a", "ab"]),
]


@pytest.mark.parametrize(("pattern", "yes", "no"), CASES)
def test_the_like_pattern_matches_only_what_the_glob_says(pattern, yes, no):
    _column, _glob, like = glob_match(column("x"), pattern).clauses
    db = sqlite3.connect(":memory:")
    db.execute("PRAGMA case_sensitive_like=ON")
    for value in yes + no:
        (got,) = db.execute("SELECT ? LIKE ? ESCAPE '\\'", (value, like.value)).fetchone()
        assert bool(got) == (value in yes), (pattern, like.value, value)


@pytest.mark.parametrize(("pattern", "yes", "no"), CASES)
def test_sqlite_glob_and_python_agree(pattern, yes, no):
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        for value in yes + no:
            assert conn.execute(select(glob_match(literal(value), pattern))).scalar() == (value in yes), (pattern, value)
            assert glob_matches(value, pattern) == (value in yes), (pattern, value)
