"""The README's `status` sample is today's output: the same lines in the same order, the
newest schema revision, timestamps as status prints them (to the second)."""

from __future__ import annotations

import re
from pathlib import Path

from etl.migrate import HEAD_REVISION

README = Path(__file__).resolve().parent.parent / "README.md"


def _sample() -> list[str]:
    text = README.read_text()
    start = text.index("```console\n$ openrouter-archive status\n") + len("```console\n$ openrouter-archive status\n")
    return text[start:text.index("```", start)].splitlines()


def _labels(lines: list[str]) -> list[str]:
    return [line[:14].strip() for line in lines if line[:14].strip()]


def test_the_status_sample_is_what_status_prints(run, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("OPENROUTER_ARCHIVE_ANALYTICS")  # the demo as a new user sees it: the year of history too
    result = run("demo", "--db", str(tmp_path / "demo.db"))
    assert result.exit_code == 0, result.output
    out = result.stdout
    status = out[out.index("\nwarehouse ") + 1:].split("\n\n")[0].splitlines()
    sample = _sample()
    assert _labels(sample) == [label for label in _labels(status) if label != "history" or "history" in _labels(sample)]
    assert f"schema        revision {HEAD_REVISION}" in sample
    assert f"schema        revision {HEAD_REVISION}" in status
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00")
    for lines in (sample, status):
        assert all(m.group(1) is None for line in lines for m in stamp.finditer(line)), lines  # to the second
    for a, b in zip(sample, status):  # each line says the same kind of thing
        assert re.sub(r"[\d,.]+", "N", a.split(":")[0])[:14] == re.sub(r"[\d,.]+", "N", b.split(":")[0])[:14]
