"""Issue 14: the README's module map names every module, and no docstring cites a file
outside the repository (a reader of the code has only the repository)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ETL = REPO / "etl"


def module_map() -> str:
    section = (REPO / "README.md").read_text().split("## Development", 1)[1]
    return section.split("```", 2)[1]


def entry(text: str, prefix: str) -> str:
    """The module map's entry for ``prefix``: its line and the indented lines after it."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(prefix))
    end = next((i for i in range(start + 1, len(lines)) if lines[i] and not lines[i].startswith(" ")), len(lines))
    return "\n".join(lines[start:end])


def test_every_module_of_every_package_is_in_the_module_map():
    text = module_map()
    for path in sorted(ETL.rglob("*.py")):
        relative = path.relative_to(ETL)
        if "__pycache__" in relative.parts:
            continue
        if len(relative.parts) == 1:
            assert f"etl/{path.name}" in text, path.name
        elif path.name != "__init__.py":
            package = f"etl/{relative.parts[0]}/"
            assert re.search(rf"\b{re.escape(path.name)}\b", entry(text, package)), f"{package}{path.name}"


def test_no_docstring_cites_a_file_outside_the_repository():
    outside = re.compile(r"shared/reference|api-notes\.md|/work/")
    for path in sorted(ETL.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not outside.search(node.value), (str(path.relative_to(REPO)), outside.search(node.value).group())
