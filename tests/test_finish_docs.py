"""Issue 14, step 7: docs that cannot drift. The README's command and configuration
references are generated (cog) and current; every command, option and module is named."""

from __future__ import annotations

import subprocess
import sys

import click

from tests.conftest import REPO_ROOT


def readme() -> str:
    return (REPO_ROOT / "README.md").read_text()


def test_the_generated_parts_of_the_readme_are_current():
    result = subprocess.run([sys.executable, "-m", "cogapp", "--check", "README.md"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, "README.md is out of date: run `cog -r README.md`\n" + result.stdout + result.stderr


def test_every_command_and_option_is_documented():
    sys.path.insert(0, str(REPO_ROOT / "scripts"))
    try:
        from readme_reference import command_paths
    finally:
        sys.path.remove(str(REPO_ROOT / "scripts"))
    text = readme()
    paths = list(command_paths())
    assert len(paths) >= 9
    for path, cmd in paths:
        assert f"openrouter-archive {' '.join(path)}" in text, path
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.hidden:
                for opt in param.opts:
                    assert opt in text, (path, opt)


def test_every_setting_of_config_toml_is_in_the_readme():
    import tomllib

    text = readme()
    for section, values in tomllib.loads((REPO_ROOT / "config.toml").read_text()).items():
        for key in values:
            assert f"`[{section}] {key}`" in text or f"/ `{key}`" in text, (section, key)


def test_the_development_list_names_every_module():
    section = readme().split("## Development", 1)[1]
    for path in sorted((REPO_ROOT / "etl").iterdir()):
        if path.name.startswith(("_", ".")) and path.name not in ("__init__.py", "__main__.py"):
            continue
        if path.suffix == ".py":
            assert f"etl/{path.name}" in section, path.name
        elif path.is_dir() and (path / "__init__.py").exists():
            assert f"etl/{path.name}/" in section, path.name
