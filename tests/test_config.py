import pytest

from etl.config import DB_ENV, load_config, read_api_key
from etl.errors import ConfigError


def test_defaults_without_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    cfg = load_config(env={})
    assert cfg.source == "built-in defaults"
    assert cfg.sync.refetch_days == 2
    assert cfg.openrouter.base_url == "https://openrouter.ai/api/v1"
    assert cfg.warehouse_url.startswith("sqlite:///") and cfg.warehouse_url.endswith("archive.db")


def test_documented_config_file_matches_the_defaults(repo_root):
    from etl.config import Config

    documented = load_config(repo_root / "config.toml", env={})
    assert documented == Config()


def test_env_overrides_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[warehouse]\nurl = "sqlite:///from-file.db"\n[sync]\nrefetch_days = 5\n')
    cfg = load_config(path, env={DB_ENV: "sqlite:///from-env.db", "OPENROUTER_BASE_URL": "http://x/api/v1"})
    assert cfg.warehouse_url == "sqlite:///from-env.db"
    assert cfg.openrouter.base_url == "http://x/api/v1"
    assert cfg.sync.refetch_days == 5


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[sync]\nrefetch_days = -1\n", "[sync] refetch_days"),
        ("[sync]\nrefetch_days = 'two'\n", "[sync] refetch_days"),
        ("[sync]\nrefetch_dayz = 2\n", "[sync] refetch_dayz: unknown setting"),
        ("[openrouter]\ntimeout_seconds = 0\n", "[openrouter] timeout_seconds"),
        ("[sync\n", "not valid TOML"),
    ],
)
def test_bad_config_names_file_key_and_problem(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    message = str(err.value)
    assert str(path) in message and needle in message and "\n" not in message


def test_named_config_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_key_from_env_or_dotenv(tmp_path):
    from etl.config import Config

    cfg = Config()
    assert read_api_key(cfg, env={"OPENROUTER_API_KEY": "sk-env"}, dotenv_path=tmp_path / ".env") == "sk-env"
    (tmp_path / ".env").write_text("OPENROUTER_API_KEY=sk-from-dotenv\n")
    assert read_api_key(cfg, env={}, dotenv_path=tmp_path / ".env") == "sk-from-dotenv"
    assert read_api_key(cfg, env={}, dotenv_path=tmp_path / "missing") is None
