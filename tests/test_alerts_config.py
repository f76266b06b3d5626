"""[alerts] and [[alerts.budgets]]: parsed into dataclasses; bad rules are one-line errors naming the rule."""

from __future__ import annotations

import pytest

from etl.alerts.config import Budget, CommandNotifier, EmailNotifier, WebhookNotifier
from etl.config import load_config
from etl.errors import ConfigError

GOOD = """
[schedule]
alerts_cron = "*/5 * * * *"

[alerts]
anomaly_min_usd = 2.5
sensitivity = 3
notify = [
  { kind = "webhook", url = "https://hooks.example.com/T000/B000", format = "slack", headers_env = { Authorization = "ALERT_WEBHOOK_AUTH" } },
  { kind = "email", host = "smtp.example.com", port = 587, starttls = true, user = "alerts", password_env = "SMTP_PASSWORD", from = "archive@example.com", to = ["finance@example.com"] },
  { kind = "command", run = ["/usr/local/bin/page-oncall"] },
]

[[alerts.budgets]]
name = "team monthly"
period = "month"
limit_usd = 500.0
thresholds = [1.0, 0.8]
forecast = true
scope = { model = "openai/*", key = "production*" }

[[alerts.budgets]]
name = "daily"
period = "day"
limit_usd = 20
metric = "usage"
"""


def test_a_full_alerts_section_parses(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    config = load_config(path, env={})
    alerts = config.alerts
    assert config.schedule.alerts_cron == "*/5 * * * *"
    assert alerts.anomaly_min_usd == 2.5 and alerts.sensitivity == 3.0
    monthly, daily = alerts.budgets
    assert monthly == Budget("team monthly", "month", 500.0, "total_usage", (0.8, 1.0), True, (("model", "openai/*"), ("key", "production*")))
    assert monthly.scope_text == "model=openai/*,key=production*"
    assert daily.metric == "usage" and daily.scope_text == "*" and daily.thresholds == (0.8, 1.0) and not daily.forecast
    webhook, email, command = alerts.notify
    assert isinstance(webhook, WebhookNotifier) and webhook.format == "slack" and webhook.headers_env == (("Authorization", "ALERT_WEBHOOK_AUTH"),)
    assert isinstance(email, EmailNotifier) and email.starttls and not email.tls and email.to == ("finance@example.com",)
    assert isinstance(command, CommandNotifier) and command.run == ("/usr/local/bin/page-oncall",)
    # Stable names that do not show the target (a Slack URL is a credential of sorts).
    assert len({n.name for n in alerts.notify}) == 3 and "hooks.example.com" not in webhook.name


@pytest.mark.parametrize(
    ("rule", "needle"),
    [
        ('name = "r1"\nperiod = "year"\nlimit_usd = 10', "'r1': period: unknown period 'year'"),
        ('name = "r2"\nperiod = "day"\nlimit_usd = -1', "'r2': limit_usd: must be greater than 0"),
        ('name = "r3"\nperiod = "day"\nlimit_usd = 1\nscope = { team = "x" }', "'r3': scope: unknown scope field 'team'"),
        ('name = "r4"\nperiod = "day"\nlimit_usd = 1\nscope = { key = "prod[" }', "'r4': scope key: bad glob"),
        ('name = "r5"\nperiod = "day"\nlimit_usd = 1\nmetric = "tokens"', "'r5': metric: unknown metric"),
        ('name = "r6"\nperiod = "day"\nlimit_usd = 1\nthresholds = [0]', "'r6': thresholds"),
        ('name = "r7"\nperiod = "day"\nlimit_usd = 1\nscope = { key = "a", app = "b" }', "'r7': scope: at most one"),
        ('name = "r8"\nperiod = "day"\nlimit_usd = 1\nlimt = 2', "'r8': limt: unknown setting"),
        ('period = "day"\nlimit_usd = 1', "#1: name: required"),
    ],
)
def test_a_bad_rule_is_a_config_error_naming_it(tmp_path, rule, needle, run):
    path = tmp_path / "bad.toml"
    path.write_text(f"[[alerts.budgets]]\n{rule}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    message = str(err.value)
    assert str(path) in message and needle in message and "\n" not in message
    result = run("--config", str(path), "status")
    assert result.exit_code == 2 and needle in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("notifier", "needle"),
    [
        ('{ kind = "pager" }', "kind: unknown kind 'pager'"),
        ('{ kind = "webhook", url = "ftp://x" }', "url: expected an http"),
        ('{ kind = "webhook", url = "https://x", headers = { Authorization = "Bearer s3cret" } }', "secrets are never read from the config file"),
        ('{ kind = "email", host = "h", from = "a@b", to = ["c@d"], password = "hunter2" }', "secrets are never read"),
        ('{ kind = "email", host = "h", from = "a@b", to = [] }', "to: expected a list"),
        ('{ kind = "command", run = [] }', "run: expected a command"),
    ],
)
def test_a_bad_notifier_is_a_config_error(tmp_path, notifier, needle):
    path = tmp_path / "bad.toml"
    path.write_text(f"[alerts]\nnotify = [{notifier}]\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, env={})
    assert needle in str(err.value) and "s3cret" not in str(err.value) and "hunter2" not in str(err.value)
