"""Regression alert notifier: SMTP, Slack, a generic webhook, or the task log.

Shaped like Airflow's notifiers (``BaseNotifier``): ``__init__`` only stores its arguments, the transport
(connection) is looked up lazily, ``notify`` builds one payload and sends it once. The channel is chosen by
which Airflow connection exists:

- ``reid_alerts_webhook``: HTTP POST of JSON. A Slack incoming-webhook URL (``hooks.slack.com``) or a
  connection of type ``slack*`` gets Slack's ``{"text": ...}``; any other URL gets the full alert payload.
  The URL is the connection's host when it contains ``://``, else ``<schema or https>://host[:port]``,
  plus ``extra.endpoint``; ``extra.headers`` are sent, a password becomes ``Authorization: Bearer``.
- ``reid_alerts_smtp``: a plain-text mail. host, port, login, password; extra: ``to`` (list or comma
  separated), ``from_email``, ``ssl`` (SMTPS), ``starttls`` (default true unless ``ssl``), ``timeout``.
- neither: the alert text is written to the task log.

A notifier never decides the task's state: sending errors are logged (and the text falls back to the
log); the DAG's ``check_regressions`` task raises to fail the run. No Airflow import at module level:
connections are resolved through ``connection_getter`` (default: Airflow's ``Connection.get`` when
running inside Airflow), which is also the test seam.
"""

from __future__ import annotations

import json
import logging
import smtplib
import ssl as ssl_lib
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from email.message import EmailMessage
from typing import Any

__all__ = ["SMTP_CONN_ID", "WEBHOOK_CONN_ID", "AlertNotifier", "airflow_connection"]

SMTP_CONN_ID = "reid_alerts_smtp"
WEBHOOK_CONN_ID = "reid_alerts_webhook"

log = logging.getLogger("reid_tasks.notify")

ConnectionGetter = Callable[[str], Any]


def airflow_connection(conn_id: str) -> Any | None:
    """Airflow's connection ``conn_id`` (an object with host, port, login, password, schema, conn_type,
    extra_dejson), or None when Airflow is not importable or the connection does not exist."""
    try:
        from airflow.sdk import Connection  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        return Connection.get(conn_id)
    except Exception as exc:  # AirflowNotFoundException, no supervisor: the connection is optional
        log.debug("connection %r not available: %s", conn_id, exc)
        return None


class AlertNotifier:
    """Sends the regression alerts of one run through the first configured channel.

    :param run_key: the run the alerts belong to (``dag_id/run_id``).
    :param alerts: alert records (``AlertRecord.to_dict()``: ``message``, ``rule``, ``series_key``,
        ``observed``, ``baseline``, ``threshold``, ``z``, ``env_diff`` {field: [last good, now]}) or strings.
    :param summary: optional extra lines (e.g. the series without a verdict).
    :param url: optional link to the run in the UI.
    """

    def __init__(
        self,
        *,
        run_key: str,
        alerts: Sequence[Mapping[str, Any] | str],
        summary: str | Sequence[str] = "",
        url: str = "",
        smtp_conn_id: str = SMTP_CONN_ID,
        webhook_conn_id: str = WEBHOOK_CONN_ID,
        connection_getter: ConnectionGetter | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.run_key = run_key
        self.alerts = list(alerts)
        self.summary = summary
        self.url = url
        self.smtp_conn_id = smtp_conn_id
        self.webhook_conn_id = webhook_conn_id
        self.connection_getter = connection_getter
        self.timeout_s = timeout_s
        self._channel: tuple[str, Any] | None = None

    # ------------------------------------------------------------------ payload
    @property
    def subject(self) -> str:
        n = len(self.alerts)
        return f"[reid-validate] {n} regression alert{'s' if n != 1 else ''} in {self.run_key}"

    def text(self) -> str:
        """The human-readable alert text (mail body, Slack message, log lines)."""
        lines = [self.subject, ""]
        for alert in self.alerts:
            message = _message(alert)
            lines.append(f"- {message}")
            changed = (alert.get("env_diff") or alert.get("changed")) if isinstance(alert, Mapping) else None
            if changed and "changed since" not in message:  # the store's messages usually say it already
                lines.append(f"  changed since the last good run: {_changed_text(changed)}")
        extra = [self.summary] if isinstance(self.summary, str) else list(self.summary)
        extra = [s for s in extra if s]
        if extra:
            lines += ["", *extra]
        if self.url:
            lines += ["", self.url]
        return "\n".join(lines)

    def payload(self) -> dict[str, Any]:
        """The generic-webhook JSON payload."""
        return {
            "source": "reid-validate",
            "run_key": self.run_key,
            "subject": self.subject,
            "text": self.text(),
            "alerts": [dict(a) if isinstance(a, Mapping) else {"message": str(a)} for a in self.alerts],
            "url": self.url or None,
        }

    def slack_payload(self) -> dict[str, Any]:
        """Slack incoming-webhook payload."""
        return {"text": self.text()}

    def email(self, sender: str, recipients: Sequence[str]) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = self.subject
        msg["From"] = sender
        msg["To"] = ", ".join(recipients)
        msg.set_content(self.text())
        return msg

    # ------------------------------------------------------------------ transport
    def _get_connection(self, conn_id: str) -> Any | None:
        getter = self.connection_getter or airflow_connection
        return getter(conn_id)

    @property
    def channel(self) -> tuple[str, Any]:
        """("webhook" | "smtp" | "log", connection), looked up once, on first use."""
        if self._channel is None:
            conn = self._get_connection(self.webhook_conn_id)
            if conn is not None:
                self._channel = ("webhook", conn)
            else:
                conn = self._get_connection(self.smtp_conn_id)
                self._channel = ("smtp", conn) if conn is not None else ("log", None)
        return self._channel

    def notify(self, context: Mapping[str, Any] | None = None) -> str:
        """Send the alerts; returns the channel used ("webhook", "slack", "smtp", "log") or "error".

        Never raises for a delivery problem: the error and the alert text go to the log instead.
        """
        if not self.alerts:
            return "none"
        kind, conn = self.channel
        try:
            if kind == "webhook":
                return self._send_webhook(conn)
            if kind == "smtp":
                return self._send_smtp(conn)
        except Exception as exc:
            log.error("could not send regression alerts through %s: %s", kind, exc)
            log.warning("%s", self.text())
            return "error"
        log.warning("%s", self.text())
        return "log"

    __call__ = notify

    def _send_webhook(self, conn: Any) -> str:
        url = webhook_url(conn)
        slack = str(getattr(conn, "conn_type", "") or "").startswith("slack") or "hooks.slack.com" in url
        body = self.slack_payload() if slack else self.payload()
        headers = {"Content-Type": "application/json"}
        extra = _extra(conn)
        headers.update({str(k): str(v) for k, v in (extra.get("headers") or {}).items()})
        if getattr(conn, "password", None) and not slack:
            headers.setdefault("Authorization", f"Bearer {conn.password}")
        request = urllib.request.Request(
            url, data=json.dumps(body, default=str).encode(), headers=headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            status = response.status
        if not 200 <= status < 300:
            raise RuntimeError(f"POST {url}: HTTP {status}")
        log.info("regression alerts posted to %s (HTTP %s)", url, status)
        return "slack" if slack else "webhook"

    def _send_smtp(self, conn: Any) -> str:
        extra = _extra(conn)
        recipients = extra.get("to") or []
        if isinstance(recipients, str):
            recipients = [r.strip() for r in recipients.split(",") if r.strip()]
        if not recipients:
            raise ValueError(f"connection {self.smtp_conn_id!r}: extra 'to' (recipients) is empty")
        sender = extra.get("from_email") or conn.login or "reid-validate@localhost"
        use_ssl = bool(extra.get("ssl", False))
        timeout = float(extra.get("timeout", self.timeout_s))
        host = conn.host or "localhost"
        port = int(conn.port or (465 if use_ssl else 25))
        if use_ssl:
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                host, port, timeout=timeout, context=ssl_lib.create_default_context()
            )
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            if not use_ssl and extra.get("starttls", True) and client.has_extn("starttls"):
                client.starttls(context=ssl_lib.create_default_context())
            if conn.login and conn.password:
                client.login(conn.login, conn.password)
            client.send_message(self.email(sender, recipients))
        log.info("regression alerts mailed to %s via %s:%s", ", ".join(recipients), host, port)
        return "smtp"


def webhook_url(conn: Any) -> str:
    """The URL an HTTP / Slack-webhook connection points at."""
    host = str(conn.host or "")
    if not host:
        raise ValueError("webhook connection has no host")
    if "://" in host:
        url = host
    else:
        scheme = conn.schema if conn.schema in ("http", "https") else "https"
        url = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
    endpoint = _extra(conn).get("endpoint")
    if endpoint:
        url = url.rstrip("/") + "/" + str(endpoint).lstrip("/")
    return url


def _extra(conn: Any) -> dict[str, Any]:
    extra = getattr(conn, "extra_dejson", None)
    if extra is None:
        raw = getattr(conn, "extra", None) or "{}"
        extra = json.loads(raw) if isinstance(raw, str) else dict(raw)
    return dict(extra or {})


def _message(alert: Mapping[str, Any] | str) -> str:
    if isinstance(alert, Mapping):
        if alert.get("message"):
            return str(alert["message"])
        parts = [str(alert.get(k)) for k in ("rule", "series_key", "metric") if alert.get(k)]
        return " ".join(parts) + f": observed {alert.get('observed')} vs baseline {alert.get('baseline')}"
    return str(alert)


def _changed_text(changed: Any) -> str:
    if isinstance(changed, Mapping):
        items = []
        for key, value in changed.items():
            if isinstance(value, Mapping) and {"before", "after"} <= set(value):
                items.append(f"{key}: {value['before']} -> {value['after']}")
            elif isinstance(value, list | tuple) and len(value) == 2:
                items.append(f"{key}: {value[0]} -> {value[1]}")
            else:
                items.append(f"{key}: {value}")
        return "; ".join(items)
    if isinstance(changed, list | tuple):
        return "; ".join(str(c) for c in changed)
    return str(changed)
