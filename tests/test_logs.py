import json
import logging

from etl.logs import JsonFormatter, redact, register_secret


def record(msg, *args, **extra):
    rec = logging.LogRecord("etl.daemon", logging.INFO, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_extra_fields():
    line = JsonFormatter().format(record("sync ok: %d day(s)", 2, event="sync", days_archived=2))
    entry = json.loads(line)
    assert entry["message"] == "sync ok: 2 day(s)"
    assert entry["level"] == "info" and entry["logger"] == "etl.daemon"
    assert entry["event"] == "sync" and entry["days_archived"] == 2
    assert entry["time"].endswith("+00:00")


def test_registered_secrets_are_masked_in_text_and_json():
    secret = "sk-or-v1-unit-test-secret-value-123456"
    register_secret(secret)
    assert redact(f"key={secret}!") == "key=***!"
    line = JsonFormatter().format(record("oops %s", secret, detail=secret))
    assert secret not in line and "***" in line
