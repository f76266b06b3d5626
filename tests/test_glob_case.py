"""`--model` / `--provider` globs mean the same on every backend and on both sides of the boundary.

SQLite's LIKE ignores ASCII case while PostgreSQL's does not, and the analytics history and
the key filters match with ``fnmatch.fnmatchcase``: the same report gave different totals
depending on the warehouse. Globs are case-sensitive everywhere, like exact names.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.both_backends


def _report(run, *args: str) -> list[dict]:
    result = run("report", "-g", "model", "-f", "json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_glob_is_case_sensitive_like_exact_names(cli_env, run):
    assert run("backfill").exit_code == 0
    rows = _report(run)
    model = next(r["model"] for r in rows if "/" in r["model"])
    vendor = model.split("/")[0]
    lower = _report(run, "--model", f"{vendor}/*")
    assert {r["model"] for r in lower} == {r["model"] for r in rows if r["model"].startswith(vendor + "/")}
    assert _report(run, "--model", f"{vendor.upper()}/*") == []
    assert _report(run, "--model", model.upper()) == []


def test_glob_special_characters_are_literal(cli_env, run):
    assert run("backfill").exit_code == 0
    rows = _report(run)
    model = rows[0]["model"]
    # LIKE's own wildcards are not the user's: '%' and '_' match only themselves
    assert _report(run, "--model", "%") == []
    assert _report(run, "--model", model[:-1] + "_") == [] or model.endswith("_")
    assert [r["model"] for r in _report(run, "--model", model[:-1] + "?")] == [model]
    # '[' is literal too (documented: only * and ? are wildcards)
    assert _report(run, "--model", "[a-z]*") == []
