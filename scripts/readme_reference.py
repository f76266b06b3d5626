"""The README's generated parts, for cog (``cog -r README.md``; CI runs ``cog --check``).

- ``commands()``: every command's ``--help``, as the CLI prints it;
- ``configuration()``: the table of settings, read from ``config.toml``'s keys, defaults
  and the comments above them (consecutive keys under one comment share a row).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.+)$")


def command_paths(group: click.Group | None = None, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command, sub-groups first then their commands, in alphabetical order."""
    from etl.cli import cli

    group = group or cli
    for name in sorted(group.commands):
        cmd = group.commands[name]
        yield (*prefix, name), cmd
        if isinstance(cmd, click.Group):
            yield from command_paths(cmd, (*prefix, name))


def help_text(path: tuple[str, ...]) -> str:
    from click.testing import CliRunner

    from etl.cli import cli

    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="openrouter-archive", terminal_width=88)
    return result.output.rstrip() + "\n"


def commands() -> str:
    parts = []
    for path, _cmd in [((), None), *command_paths()]:
        title = " ".join(("openrouter-archive", *path))
        parts.append(f"#### `{title}`\n\n```text\n$ {title} --help\n{help_text(path)}```\n")
    return "\n".join(parts)


def settings(text: str) -> list[tuple[str, list[str], list[str], str]]:
    """(section, keys, defaults, meaning) per group of keys in a commented TOML file."""
    rows: list[tuple[str, list[str], list[str], str]] = []
    section, comment, started = "", [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section, comment, started = stripped, [], True
        elif stripped.startswith("#"):
            if started:
                comment.append(stripped.lstrip("#").strip())
        elif (match := _KEY.match(stripped)) and started:
            if not comment and rows and rows[-1][0] == section:
                rows[-1][1].append(match.group(1))
                rows[-1][2].append(match.group(2))
            else:
                rows.append((section, [match.group(1)], [match.group(2)], " ".join(comment)))
            comment = []
        elif not stripped and comment and rows and rows[-1][0] == section:
            # a comment after the section's last key is a note on it
            section_, keys, defaults, meaning = rows[-1]
            rows[-1] = (section_, keys, defaults, f"{meaning} {' '.join(comment)}")
            comment = []
    if comment and rows:
        section_, keys, defaults, meaning = rows[-1]
        rows[-1] = (section_, keys, defaults, f"{meaning} {' '.join(comment)}")
    return rows


def configuration() -> str:
    lines = ["| setting | default | meaning |", "| --- | --- | --- |"]
    for section, keys, defaults, meaning in settings((ROOT / "config.toml").read_text()):
        setting = f"`{section} {keys[0]}`" + "".join(f" / `{k}`" for k in keys[1:])
        default = " / ".join(f"`{d}`" for d in defaults)
        lines.append(f"| {setting} | {default} | {meaning.replace('|', chr(92) + '|')} |")
    return "\n".join(lines) + "\n"
