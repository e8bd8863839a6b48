"""The alert notifier: exact payloads, channel choice by connection, no network beyond 127.0.0.1."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace
from typing import ClassVar

import pytest

from reid_tasks.notify import SMTP_CONN_ID, WEBHOOK_CONN_ID, AlertNotifier, webhook_url

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


def conn(**kw):
    base = dict(conn_type="http", host=None, port=None, login=None, password=None, schema=None, extra_dejson={})
    base.update(kw)
    return SimpleNamespace(**base)


def notifier(connections: dict, **kw) -> AlertNotifier:
    calls: list[str] = []

    def getter(conn_id: str):
        calls.append(conn_id)
        return connections.get(conn_id)

    n = AlertNotifier(
        run_key=RUN_KEY,
        alerts=[ALERT],
        summary=["no verdict: openvino bs1 has neither history nor reference"],
        connection_getter=getter,
        **kw,
    )
    n.lookups = calls  # type: ignore[attr-defined]
    return n


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
def http_server() -> Iterator[tuple[str, type[_Recorder]]]:
    handler = type("Recorder", (_Recorder,), {"received": [], "status": 200})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_text_and_payload_exact():
    n = notifier({})
    assert n.text() == TEXT
    assert n.payload() == {
        "source": "reid-validate",
        "run_key": RUN_KEY,
        "subject": "[reid-validate] 1 regression alert in reid_validation/manual__2026-01-02",
        "text": TEXT,
        "alerts": [ALERT],
        "url": None,
    }
    assert n.slack_payload() == {"text": TEXT}


def test_environment_change_not_repeated_when_the_message_has_it():
    alert = dict(ALERT, message=ALERT["message"] + "; changed since the last good run r0: onnxruntime 1.31.0 -> 1.32.0")
    text = AlertNotifier(run_key=RUN_KEY, alerts=[alert], connection_getter=lambda _id: None).text()
    assert text.count("changed since the last good run") == 1


def test_init_only_stores_arguments_connection_is_lazy():
    n = notifier({})
    assert n.lookups == []
    n.notify({})
    assert n.lookups == [WEBHOOK_CONN_ID, SMTP_CONN_ID]


def test_webhook_posts_generic_payload(http_server):
    url, handler = http_server
    n = notifier({WEBHOOK_CONN_ID: conn(host=url + "/hook", password="s3cret", extra_dejson={"headers": {"X-A": "1"}})})
    assert n.notify({}) == "webhook"
    [req] = handler.received
    assert req["path"] == "/hook"
    assert req["body"] == n.payload()
    assert req["headers"]["Authorization"] == "Bearer s3cret"
    assert req["headers"]["X-A"] == "1"
    assert req["headers"]["Content-Type"] == "application/json"
    assert n.lookups == [WEBHOOK_CONN_ID]  # the SMTP connection is not even looked up


def test_slack_connection_gets_slack_payload(http_server):
    url, handler = http_server
    n = notifier(
        {WEBHOOK_CONN_ID: conn(conn_type="slackwebhook", host=url, extra_dejson={"endpoint": "services/T/B/X"})}
    )
    assert n.notify({}) == "slack"
    [req] = handler.received
    assert req["path"] == "/services/T/B/X"
    assert req["body"] == {"text": TEXT}
    assert "Authorization" not in req["headers"]


def test_webhook_failure_is_logged_not_raised(http_server, caplog):
    url, handler = http_server
    handler.status = 500
    n = notifier({WEBHOOK_CONN_ID: conn(host=url)})
    with caplog.at_level("WARNING", logger="reid_tasks.notify"):
        assert n.notify({}) == "error"
    assert "could not send regression alerts through webhook" in caplog.text
    assert "onnxruntime bs16 fp32 throughput 30.0" in caplog.text  # the text still reaches the log


def test_no_connection_logs_the_alerts(caplog):
    with caplog.at_level("WARNING", logger="reid_tasks.notify"):
        assert notifier({}).notify({}) == "log"
    assert TEXT in caplog.text


def test_no_alerts_sends_nothing():
    n = AlertNotifier(run_key=RUN_KEY, alerts=[], connection_getter=lambda _id: pytest.fail("looked up"))
    assert n.notify({}) == "none"


def test_webhook_url_forms():
    assert webhook_url(conn(host="https://hooks.slack.com/services/A/B/C")) == "https://hooks.slack.com/services/A/B/C"
    assert webhook_url(conn(host="alerts.example.com", port=8443, extra_dejson={"endpoint": "/v1/reid"})) == (
        "https://alerts.example.com:8443/v1/reid"
    )
    assert webhook_url(conn(host="127.0.0.1", port=9000, schema="http")) == "http://127.0.0.1:9000"


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


def test_smtp_sends_one_mail():
    import email
    import email.policy

    handler = type("H", (_SMTPHandler,), {"messages": []})
    server = socketserver.TCPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        smtp = conn(
            conn_type="smtp",
            host="127.0.0.1",
            port=server.server_address[1],
            extra_dejson={"to": "ops@example.com, ml@example.com", "from_email": "reid@example.com"},
        )
        n = notifier({SMTP_CONN_ID: smtp})
        assert n.notify({}) == "smtp"
    finally:
        server.shutdown()
        server.server_close()
    [mail] = handler.messages
    assert mail["from"] == "<reid@example.com>"
    assert mail["rcpt"] == ["<ops@example.com>", "<ml@example.com>"]
    msg = email.message_from_string(mail["data"], policy=email.policy.default)
    assert msg["Subject"].strip() == n.subject
    assert msg["To"] == "ops@example.com, ml@example.com"
    assert msg.get_content().replace("\r\n", "\n").rstrip("\n") == TEXT


def test_smtp_without_recipients_is_an_error_not_an_exception():
    assert notifier({SMTP_CONN_ID: conn(conn_type="smtp", host="127.0.0.1", port=1)}).notify({}) == "error"
