"""An empty per-key report on an archive without the key breakdown says why, truthfully.

It said "the archive holds no activity yet" although the account's activity was there.
"""

from __future__ import annotations


def test_a_key_report_without_the_key_breakdown_does_not_call_the_archive_empty(cli_env, run):
    assert run("backfill").exit_code == 0
    result = run("report", "-g", "key")
    assert result.exit_code == 0, result.output
    assert "holds no activity yet" not in result.stderr
    assert 'no key breakdown archived yet; add "key" to [sync] breakdowns' in result.stderr


def test_an_empty_archive_is_still_called_empty(cli_env, run, tmp_path):
    (tmp_path / "config.toml").write_text("[sync]\nrefetch_days = 0\n")
    assert run("db", "upgrade").exit_code == 0
    result = run("report", "-g", "key")
    assert result.exit_code == 0, result.output
    assert "holds no activity yet" in result.stderr
