"""E-mail over SMTP (smtplib): STARTTLS (default) or TLS from the start, optional login
with the password from an environment variable. Connection failures and 4xx replies are
retried; authentication failures and 5xx replies are final."""

from __future__ import annotations

import os
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

from etl.alerts.config import EmailNotifier
from etl.logs import register_secret
from etl.notify import NotifyError
from etl.notify.message import body_text, subject


class Email:
    def __init__(self, config: EmailNotifier):
        self.config, self.name = config, config.name

    def describe(self) -> str:
        return f"email via {self.config.host}:{self.config.port}"

    def message(self, alert: Mapping[str, Any]) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = subject(alert)
        msg["From"] = self.config.sender
        msg["To"] = ", ".join(self.config.to)
        msg.set_content(body_text(alert))
        return msg

    def send(self, alert: Mapping[str, Any]) -> None:
        cfg = self.config
        password = ""
        if cfg.password_env:
            password = os.environ.get(cfg.password_env, "")
            if not password:
                raise NotifyError(f"{self.describe()}: environment variable ${cfg.password_env} is not set", retryable=False)
            register_secret(password)
        context = ssl.create_default_context()
        try:
            if cfg.tls:
                server: smtplib.SMTP = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout_seconds, context=context)
            else:
                server = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_seconds)
            with server:
                if cfg.starttls and not cfg.tls:
                    server.starttls(context=context)
                if cfg.user:
                    server.login(cfg.user, password)
                server.send_message(self.message(alert))
        except smtplib.SMTPAuthenticationError as exc:
            raise NotifyError(f"{self.describe()}: login refused ({exc.smtp_code})", retryable=False) from None
        except smtplib.SMTPResponseException as exc:
            raise NotifyError(f"{self.describe()}: SMTP {exc.smtp_code}", retryable=exc.smtp_code < 500) from None
        except smtplib.SMTPRecipientsRefused:
            raise NotifyError(f"{self.describe()}: recipients refused", retryable=False) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise NotifyError(f"{self.describe()}: {type(exc).__name__}: {exc}") from None
