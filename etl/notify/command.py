"""A command run with the alert as JSON on stdin; exit status 0 is delivered.

No shell: ``run`` is the argument list. A non-zero exit or a timeout is retried; a
command that cannot be started is final. The message carries the exit status and the
last line the command wrote to stderr (redacted)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from typing import Any

from etl.alerts.config import CommandNotifier
from etl.notify import NotifyError


class Command:
    def __init__(self, config: CommandNotifier):
        self.config, self.name = config, config.name

    def describe(self) -> str:
        return f"command {self.config.run[0]}"

    def send(self, alert: Mapping[str, Any]) -> None:
        try:
            done = subprocess.run(
                list(self.config.run), input=json.dumps(dict(alert)).encode(), capture_output=True, timeout=self.config.timeout_seconds, check=False
            )
        except FileNotFoundError:
            raise NotifyError(f"{self.describe()}: not found", retryable=False) from None
        except PermissionError:
            raise NotifyError(f"{self.describe()}: not executable", retryable=False) from None
        except subprocess.TimeoutExpired:
            raise NotifyError(f"{self.describe()}: timed out after {self.config.timeout_seconds:g}s") from None
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            last = f": {lines[-1][:200]}" if lines else ""
            raise NotifyError(f"{self.describe()}: exit status {done.returncode}{last}")
