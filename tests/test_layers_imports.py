"""Issues 13 and 14: layers point one way, and the quick commands import only what they use.

Two kinds of check. Statically (``ast``): which modules a module names in its imports,
lazy ones inside functions included. Dynamically: a fresh interpreter imports a module, or
runs a real command against a real archive, and reports ``sys.modules``: that catches an
import pulled in by a dependency of a dependency.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ETL = Path(__file__).resolve().parent.parent / "etl"
REPO = ETL.parent
# What a command that only reads the archive (status, report) or only prints help has no use for.
HTTP = {"httpx", "httpcore", "tenacity"}
NOT_FOR_QUICK_COMMANDS = HTTP | {"pydantic", "matplotlib", "apscheduler", "alembic", "etl.client", "etl.sync", "etl.validate"}


def imported_names(path: Path, *, runtime_only: bool = False) -> set[str]:
    """Every module ``path`` imports (absolute names), at the top or inside functions.

    ``runtime_only`` leaves out imports under ``if TYPE_CHECKING:``.
    """
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped.update(id(n) for child in node.body for n in ast.walk(child))
    names: set[str] = set()
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def touches(names: set[str], module: str) -> bool:
    return any(n == module or n.startswith(module + ".") for n in names)


def test_the_warehouse_does_not_import_the_http_client():
    names = imported_names(ETL / "warehouse.py")
    for module in ("etl.client", "httpx", "tenacity", "etl.deadline"):
        assert not touches(names, module), module


def test_validation_does_not_import_sqlalchemy():
    names = imported_names(ETL / "validate.py")
    for module in ("sqlalchemy", "etl.schema", "etl.db", "etl.warehouse"):
        assert not touches(names, module), module


def test_the_shared_answer_types_need_only_the_standard_library():
    for name in imported_names(ETL / "fetched.py"):
        assert name.split(".")[0] in sys.stdlib_module_names, name


def test_the_cli_does_not_query_schema_tables():
    names = imported_names(ETL / "cli.py", runtime_only=True)
    assert not touches(names, "etl.schema")
    assert not touches(names, "sqlalchemy"), sorted(n for n in names if n.startswith("sqlalchemy"))


def fresh_modules(code: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> set[str]:
    """``sys.modules`` of a fresh interpreter after ``code``."""
    script = code + "\nimport sys, json\nprint('\\nMODULES=' + json.dumps(sorted(sys.modules)))\n"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env=env, cwd=cwd or REPO)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("MODULES="))
    return set(json.loads(line.removeprefix("MODULES=")))


@pytest.mark.parametrize(("module", "absent"), [
    ("etl.warehouse", HTTP | {"etl.client", "pydantic"}),
    ("etl.validate", {"sqlalchemy", "etl.schema", "etl.db"} | HTTP),
    ("etl.fetched", {"sqlalchemy", "pydantic"} | HTTP),
    ("etl.context", {"sqlalchemy", "pydantic"} | HTTP),
    ("etl.cli", NOT_FOR_QUICK_COMMANDS | {"sqlalchemy", "rich"}),
])
def test_importing_a_module_loads_nothing_of_the_layers_it_must_not_use(module, absent):
    loaded = fresh_modules(f"import {module}")
    assert module in loaded
    assert not loaded & absent, sorted(loaded & absent)


RUN_COMMAND = """
import sys
from etl.cli import cli
try:
    cli.main(args={args!r}, prog_name="openrouter-archive", standalone_mode=False)
except SystemExit as exc:
    assert not exc.code, exc.code
"""


@pytest.fixture
def archive(run, cli_env, tmp_path):
    """A real archive (the stand-in's window, backfilled by the real CLI) and the environment that names it."""
    assert run("backfill", "--days", "3").exit_code == 0
    return {**os.environ, **cli_env}


@pytest.mark.parametrize(("args", "also_absent"), [
    (["--help"], {"sqlalchemy", "rich", "etl.config"}),
    (["report", "--help"], {"sqlalchemy", "rich"}),
    (["status"], {"rich"}),
    (["status", "--json"], {"rich"}),
    (["report"], set()),
    (["report", "-g", "month", "-f", "csv"], {"rich"}),
    (["sql", "SELECT count(*) FROM activity", "-f", "json"], {"rich"}),
])
def test_quick_commands_import_only_what_they_use(archive, tmp_path, args, also_absent):
    loaded = fresh_modules(RUN_COMMAND.format(args=args), env=archive, cwd=tmp_path)
    assert "etl.cli" in loaded
    unwanted = (NOT_FOR_QUICK_COMMANDS | also_absent) & loaded
    assert not unwanted, f"{' '.join(args)} imported {sorted(unwanted)}"


def test_a_sync_does_import_the_client(archive, tmp_path):
    """The check above can see an import: a sync needs the HTTP client, and it is there."""
    loaded = fresh_modules(RUN_COMMAND.format(args=["sync"]), env=archive, cwd=tmp_path)
    assert {"httpx", "tenacity", "pydantic", "etl.client"} <= loaded
    # httpx's own command-line client (and the rich console and pygments it pulls in) is no
    # part of a sync: it cost every cron run 80 to 110 ms of CPU before it was kept out.
    assert not {"pygments", "rich.console"} & loaded, sorted({"pygments", "rich.console"} & loaded)
