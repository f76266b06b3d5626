"""Issue 14, step 4: global options after the command; --help names the environment and
the exit codes; --log-format json makes the final Error: line JSON."""

from __future__ import annotations

import json

import pytest

from etl.cli import cli


def all_commands(group=cli, prefix=()):
    import click

    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


def test_every_command_takes_the_global_options():
    for path, cmd in all_commands():
        opts = {o for p in cmd.params for o in p.opts}
        assert {"--config", "-q", "-v", "--log-format", "--debug"} <= opts, path
        assert cmd.epilog and cmd.epilog.startswith("Exit status: 0"), path


def test_config_after_the_command_is_used(run, cli_env, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[sync]\nrefetch_days = 'many'\n")
    result = run("sync", "--config", str(bad))
    assert result.exit_code == 2 and "bad.toml" in result.stderr
    assert run("--config", str(bad), "sync").exit_code == 2


def test_quiet_after_the_command(run, cli_env):
    loud = run("backfill", "--days", "3")
    quiet = run("backfill", "--days", "3", "-q")
    assert loud.exit_code == quiet.exit_code == 0
    assert len(quiet.stdout.splitlines()) < len(loud.stdout.splitlines())


def test_log_format_json_makes_the_error_line_json(run, cli_env):
    for args in (["report", "--log-format", "json", "-g", "colour"], ["--log-format", "json", "report", "-g", "colour"]):
        result = run(*args)
        assert result.exit_code == 2
        entry = json.loads(result.stderr.strip().splitlines()[-1])
        assert entry["level"] == "error" and "unknown group" in entry["message"] and entry["exit_code"] == 2
    text = run("report", "-g", "colour")
    assert text.stderr.startswith("Error: ")


def test_help_names_the_environment_and_exit_codes(run):
    text = run("--help").stdout
    for name in ("OPENROUTER_API_KEY", ".env", "OPENROUTER_BASE_URL", "OPENROUTER_ARCHIVE_DB",
                 "OPENROUTER_ARCHIVE_CONFIG", "OPENROUTER_ARCHIVE_ANALYTICS", "Exit status"):
        assert name in text
    assert "Exit status: 0 every day" in " ".join(run("sync", "--help").stdout.split())


@pytest.mark.parametrize("args", [["db", "upgrade", "-q"], ["status", "-v", "--json"]])
def test_global_options_on_nested_and_other_commands(run, cli_env, args):
    assert run(*args).exit_code == 0
