"""Issue 14, step 8: ruff and mypy, as .ci/run runs them, are clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

BIN = Path(sys.executable).parent


def test_ci_runs_ruff_mypy_and_cog():
    script = (REPO_ROOT / ".ci" / "run").read_text()
    assert "ruff check" in script and "mypy etl" in script and "cog --check README.md" in script


def test_ruff_is_clean():
    result = subprocess.run([str(BIN / "ruff"), "check", "."], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout


# mypy itself runs in .ci/run: a cold run takes longer than a test may.
