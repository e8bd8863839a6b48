"""The text of a regression alert: subject, plain text, the webhook's JSON payload, Slack's and a mail body.

Only the message is ours; delivery is Airflow's (``plugins/reid_notify.py``: an ``airflow.sdk.BaseNotifier``
that hands this message to the SMTP, Slack or HTTP provider's notifier). No Airflow import here.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SMTP_CONN_ID", "WEBHOOK_CONN_ID", "AlertMessage"]

#: Airflow connections that choose the channel (see plugins/reid_notify.py).
SMTP_CONN_ID = "reid_alerts_smtp"
WEBHOOK_CONN_ID = "reid_alerts_webhook"


@dataclass(frozen=True)
class AlertMessage:
    """The regression alerts of one run, as people read them.

    :param run_key: the run the alerts belong to (``dag_id/run_id``).
    :param alerts: alert records (``AlertRecord.to_dict()``: ``message``, ``rule``, ``series_key``,
        ``observed``, ``baseline``, ``threshold``, ``z``, ``env_diff`` {field: [last good, now]}) or strings.
    :param summary: extra lines (e.g. the series without a verdict).
    :param url: link to the run in the UI.
    """

    run_key: str
    alerts: Sequence[Mapping[str, Any] | str]
    summary: Sequence[str] = field(default_factory=tuple)
    url: str = ""

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

    def slack_text(self) -> str:
        """Slack's message text (mrkdwn; the plain text reads well there)."""
        return self.text()

    def html(self) -> str:
        """The mail body: the plain text, preformatted."""
        return f"<pre>{html.escape(self.text())}</pre>"


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
