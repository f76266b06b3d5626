"""A table never cuts a number, at any terminal width.

Group columns are ``no_wrap``, so rich measured their minimum as their whole text and, when
the fitted metrics left less room than that, cropped the table's right edge instead:
``total tokens`` came out as ``26,85`` (a wrong number) at 90 columns, and as an empty
column at 100. Fitting now also caps the group columns to the room the metrics leave.
"""

from __future__ import annotations

import io

import pytest

from etl.db import open_engine
from etl.export import print_table, table_rows
from etl.query import ReportSpec, run_report


@pytest.fixture
def reports(cli_env, run, warehouse_url):
    assert run("backfill").exit_code == 0
    engine = open_engine(warehouse_url)
    with engine.connect() as conn:
        out = [run_report(conn, ReportSpec(group_by=g)) for g in (("model",), ("model", "provider"), ("endpoint",), ("provider",))]
    engine.dispose()
    return out


def test_every_shown_number_is_printed_whole(reports):
    for width, report in ((w, r) for w in (*range(56, 200, 6), 250) for r in reports):
        buffer = io.StringIO()
        dropped = print_table(report, human=False, width=width, file=buffer)
        lines = buffer.getvalue().splitlines()
        assert all(len(line) <= width for line in lines), (report.spec.group_by, width)
        header, body, footer = table_rows(report, False)
        n = len(report.spec.group_by)
        shown = [i for i in range(n, len(header)) if header[i] not in dropped]
        printed_rows = lines[2:2 + len(body)]
        assert len(printed_rows) == len(body)
        for cells, line in zip(body, printed_rows):
            tokens = line.replace("│", " ").split()
            for i in shown:
                assert cells[i] in tokens, (report.spec.group_by, width, header[i], cells[i], line)
        total = lines[-1].replace("│", " ").split()
        for i in shown:
            assert footer[i] in total, (report.spec.group_by, width, header[i], footer[i], lines[-1])
