"""Regression alerts through Airflow's own notifiers.

``AlertNotifier`` is an ``airflow.sdk.BaseNotifier``: its ``__init__`` stores the message
(``reid_tasks.notify.AlertMessage``, our only formatting), the channel is chosen on ``notify`` by which Airflow
connection exists, and delivery is the provider's notifier:

- ``reid_alerts_webhook`` of type ``slackwebhook``: ``SlackWebhookNotifier`` (apache-airflow-providers-slack)
  posts the alert text; the connection is Slack's own (password: the webhook token or URL).
- ``reid_alerts_webhook`` of any other type: ``HttpNotifier`` (apache-airflow-providers-http) POSTs the JSON
  payload to the connection's URL plus ``extra.endpoint`` (HttpHook: login/password as basic auth, the other
  extras as headers).
- ``reid_alerts_smtp``: ``SmtpNotifier`` (apache-airflow-providers-smtp) mails the text to ``extra.to``
  (list or comma separated) from ``extra.from_email``.
- neither, or the provider is not installed: the alert text goes to the task log.

A notifier never decides the task's state: a delivery error is logged with the alert text and ``notify``
returns; ``check_regressions`` raises to fail the run. ``sent_via`` tells which channel took the alerts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseNotifier

from reid_tasks.notify import SMTP_CONN_ID, WEBHOOK_CONN_ID, AlertMessage

__all__ = ["AlertNotifier"]

_PROVIDER = {
    "slack": "apache-airflow-providers-slack",
    "webhook": "apache-airflow-providers-http",
    "smtp": "apache-airflow-providers-smtp",
}


class AlertNotifier(BaseNotifier):
    """Sends the regression alerts of one run through the first configured channel."""

    def __init__(
        self,
        *,
        run_key: str,
        alerts: Sequence[Mapping[str, Any] | str],
        summary: Sequence[str] = (),
        url: str = "",
        smtp_conn_id: str = SMTP_CONN_ID,
        webhook_conn_id: str = WEBHOOK_CONN_ID,
    ) -> None:
        super().__init__()
        self.message = AlertMessage(run_key=run_key, alerts=list(alerts), summary=tuple(summary), url=url)
        self.smtp_conn_id = smtp_conn_id
        self.webhook_conn_id = webhook_conn_id
        self.sent_via: str | None = None

    def channel(self) -> tuple[str, BaseNotifier | None]:
        """("slack" | "webhook" | "smtp", the provider's notifier) for the first connection that exists, or
        ("log", None). Raises ImportError naming the provider to install when it is missing."""
        webhook = _connection(self.webhook_conn_id)
        if webhook is not None:
            if str(webhook.conn_type or "").startswith("slack"):
                try:
                    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier
                except ImportError as exc:
                    raise ImportError(f"{self.webhook_conn_id} is a Slack connection: {_missing('slack')}") from exc
                return "slack", SlackWebhookNotifier(
                    slack_webhook_conn_id=self.webhook_conn_id, text=self.message.slack_text()
                )
            try:
                from airflow.providers.http.notifications.http import HttpNotifier
            except ImportError as exc:
                raise ImportError(f"{self.webhook_conn_id}: {_missing('webhook')}") from exc
            return "webhook", HttpNotifier(
                http_conn_id=self.webhook_conn_id,
                endpoint=webhook.extra_dejson.get("endpoint"),
                json=self.message.payload(),
                headers={"Content-Type": "application/json"},
            )
        smtp = _connection(self.smtp_conn_id)
        if smtp is None:
            return "log", None
        to = smtp.extra_dejson.get("to") or []
        if isinstance(to, str):
            to = [r.strip() for r in to.split(",") if r.strip()]
        if not to:
            raise ValueError(f"connection {self.smtp_conn_id!r}: extra 'to' (recipients) is empty")
        try:
            from airflow.providers.smtp.notifications.smtp import SmtpNotifier
        except ImportError as exc:
            raise ImportError(f"{self.smtp_conn_id}: {_missing('smtp')}") from exc
        return "smtp", SmtpNotifier(
            to=to,
            from_email=smtp.extra_dejson.get("from_email") or smtp.login or "reid-validate@localhost",
            subject=self.message.subject,
            html_content=self.message.html(),
            smtp_conn_id=self.smtp_conn_id,
        )

    def notify(self, context: Any) -> None:
        """Send the alerts once; a delivery problem is logged with the alert text, never raised."""
        if not self.message.alerts:
            self.sent_via = "none"
            return
        kind = "channel lookup"
        try:
            kind, notifier = self.channel()
            if notifier is not None:
                # notify(), not __call__: the provider would render our text as a Jinja template
                notifier.notify(context)
                self.sent_via = kind
                self.log.info("regression alerts of %s sent via %s", self.message.run_key, kind)
                return
            self.sent_via = "log"
        except Exception as exc:
            self.log.error("could not send regression alerts through %s: %s", kind, exc)
            self.sent_via = "error"
        self.log.warning("%s", self.message.text())


def _connection(conn_id: str) -> Any | None:
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        return None


def _missing(kind: str) -> str:
    return f"{_PROVIDER[kind]} is not installed (pip install {_PROVIDER[kind]})"
