"""Alert notifications: our exact message, and delivery through the providers' notifiers chosen by connection.

Connections are Airflow's (``AIRFLOW_CONN_*`` environment variables); servers are local (127.0.0.1).
"""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

import plugins.reid_notify as reid_notify
from plugins.reid_notify import AlertNotifier
from reid_tasks.notify import SMTP_CONN_ID, WEBHOOK_CONN_ID, AlertMessage

ALERT = {
    "id": 7,
    "run_key": "reid_validation/manual__2026-01-02",
    "rule": "history_throughput",
    "metric": "throughput",
    "series_key": "onnxruntime|cpu|bs16|fp32|real",
    "series": {"target": "onnxruntime", "batch_size": 16},
    "observed": 30.0,
    "baseline": 38.0,
    "threshold": 36.1,
    "z": -8.2,
    "message": "onnxruntime bs16 fp32 throughput 30.0 img/s vs median 38.0 (z=-8.2, -21.1%)",
    "env_diff": {"onnxruntime": ["1.31.0", "1.32.0"]},
    "created_at": "2026-01-02T03:04:05+00:00",
    "acknowledged_at": None,
}
RUN_KEY = "reid_validation/manual__2026-01-02"
TEXT = (
    "[reid-validate] 1 regression alert in reid_validation/manual__2026-01-02\n"
    "\n"
    "- onnxruntime bs16 fp32 throughput 30.0 img/s vs median 38.0 (z=-8.2, -21.1%)\n"
    "  changed since the last good run: onnxruntime: 1.31.0 -> 1.32.0\n"
    "\n"
    "no verdict: openvino bs1 has neither history nor reference"
)


def logs(capsys: pytest.CaptureFixture[str]) -> str:
    """What the notifier logged (Airflow's structlog writes the task log lines to the console here)."""
    out = capsys.readouterr()
    return out.out + out.err


def notifier(**kw) -> AlertNotifier:
    return AlertNotifier(
        run_key=RUN_KEY,
        alerts=[ALERT],
        summary=["no verdict: openvino bs1 has neither history nor reference"],
        **kw,
    )


def set_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))


@pytest.fixture(autouse=True)
def _no_alert_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    for conn_id in (WEBHOOK_CONN_ID, SMTP_CONN_ID):
        monkeypatch.delenv(f"AIRFLOW_CONN_{conn_id.upper()}", raising=False)


class _Recorder(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []
    status = 200

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body)})
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[int, type[_Recorder]]]:
    handler = type("Recorder", (_Recorder,), {"received": [], "status": 200})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port, handler
    finally:
        server.shutdown()
        server.server_close()


def test_text_and_payload_exact():
    m = notifier().message
    assert m.text() == TEXT
    assert m.payload() == {
        "source": "reid-validate",
        "run_key": RUN_KEY,
        "subject": "[reid-validate] 1 regression alert in reid_validation/manual__2026-01-02",
        "text": TEXT,
        "alerts": [ALERT],
        "url": None,
    }
    assert m.slack_text() == TEXT
    assert m.html() == "<pre>" + TEXT.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") + "</pre>"


def test_environment_change_not_repeated_when_the_message_has_it():
    alert = dict(ALERT, message=ALERT["message"] + "; changed since the last good run r0: onnxruntime 1.31.0 -> 1.32.0")
    text = AlertMessage(run_key=RUN_KEY, alerts=[alert]).text()
    assert text.count("changed since the last good run") == 1


def test_init_only_stores_arguments_connection_is_lazy(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(reid_notify, "_connection", lambda conn_id: calls.append(conn_id))
    n = notifier()
    assert calls == []
    n({})
    assert calls == [WEBHOOK_CONN_ID, SMTP_CONN_ID] and n.sent_via == "log"


def test_webhook_posts_generic_payload_through_the_http_provider(http_server, monkeypatch):
    port, handler = http_server
    set_conn(
        monkeypatch,
        WEBHOOK_CONN_ID,
        conn_type="http",
        host="127.0.0.1",
        port=port,
        schema="http",
        extra={"endpoint": "hook", "X-A": "1"},
    )
    n = notifier()
    n({})
    assert n.sent_via == "webhook"
    [req] = handler.received
    assert req["path"] == "/hook"
    assert req["body"] == n.message.payload()
    assert req["headers"]["X-A"] == "1"
    assert req["headers"]["Content-Type"] == "application/json"


def test_slack_connection_goes_through_the_slack_provider(http_server, monkeypatch):
    port, handler = http_server
    set_conn(
        monkeypatch,
        WEBHOOK_CONN_ID,
        conn_type="slackwebhook",
        host=f"http://127.0.0.1:{port}",
        password="services/T/B/X",
    )
    n = notifier()
    n({})
    assert n.sent_via == "slack"
    [req] = handler.received
    assert req["path"] == "/services/T/B/X"
    assert req["body"] == {"text": TEXT}


def test_webhook_failure_is_logged_not_raised(http_server, monkeypatch, capsys):
    port, handler = http_server
    handler.status = 500
    set_conn(monkeypatch, WEBHOOK_CONN_ID, conn_type="http", host="127.0.0.1", port=port, schema="http")
    n = notifier()
    n({})
    assert n.sent_via == "error"
    logged = logs(capsys)
    assert "could not send regression alerts through webhook" in logged
    assert "onnxruntime bs16 fp32 throughput 30.0" in logged  # the text still reaches the log


def test_no_connection_logs_the_alerts(capsys):
    n = notifier()
    n({})
    assert n.sent_via == "log" and TEXT in logs(capsys)


def test_no_alerts_sends_nothing(monkeypatch):
    monkeypatch.setattr(reid_notify, "_connection", lambda conn_id: pytest.fail("looked up"))
    n = AlertNotifier(run_key=RUN_KEY, alerts=[])
    n({})
    assert n.sent_via == "none"


class _SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP (RFC 5321) to receive one message."""

    messages: ClassVar[list[dict]] = []

    def handle(self):
        w = self.wfile.write
        w(b"220 localhost test SMTP\r\n")
        mail: dict = {"rcpt": []}
        while line := self.rfile.readline():
            cmd = line.decode().strip()
            verb = cmd.split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                w(b"250 localhost\r\n")
            elif verb == "MAIL":
                mail["from"] = cmd.split(":", 1)[1].strip()
                w(b"250 OK\r\n")
            elif verb == "RCPT":
                mail["rcpt"].append(cmd.split(":", 1)[1].strip())
                w(b"250 OK\r\n")
            elif verb == "DATA":
                w(b"354 go ahead\r\n")
                data = []
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data.append(chunk.decode())
                mail["data"] = "".join(data)
                type(self).messages.append(mail)
                w(b"250 queued\r\n")
            elif verb == "QUIT":
                w(b"221 bye\r\n")
                return
            else:
                w(b"250 OK\r\n")


def test_smtp_sends_one_mail_through_the_smtp_provider(monkeypatch):
    import email
    import email.policy

    handler = type("H", (_SMTPHandler,), {"messages": []})
    server = socketserver.TCPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        set_conn(
            monkeypatch,
            SMTP_CONN_ID,
            conn_type="smtp",
            host="127.0.0.1",
            port=server.server_address[1],
            extra={
                "to": "ops@example.com, ml@example.com",
                "from_email": "reid@example.com",
                "disable_ssl": True,
                "disable_tls": True,
            },
        )
        n = notifier()
        n({})
        assert n.sent_via == "smtp"
    finally:
        server.shutdown()
        server.server_close()
    [mail] = handler.messages
    assert mail["from"] == "<reid@example.com>"
    assert mail["rcpt"] == ["<ops@example.com>", "<ml@example.com>"]
    msg = email.message_from_string(mail["data"], policy=email.policy.default)
    assert msg["Subject"].strip() == n.message.subject
    assert msg["To"] == "ops@example.com, ml@example.com"
    body = msg.get_body(("html",)).get_content().replace("\r\n", "\n").strip()
    assert body == n.message.html()


def test_smtp_without_recipients_is_an_error_not_an_exception(monkeypatch):
    set_conn(monkeypatch, SMTP_CONN_ID, conn_type="smtp", host="127.0.0.1", port=1)
    n = notifier()
    n({})
    assert n.sent_via == "error"
