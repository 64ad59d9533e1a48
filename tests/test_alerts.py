"""Alerts from a real manager daemon to a real HTTP receiver and an aiosmtpd relay."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import signal
import subprocess
import threading

import pytest

from clusterkit.config import build_cluster
from clusterkit.definition.tables import ConfigError
from clusterkit.plugins import get_plugin_manager
from mailftp_support import SmtpNode
from support import common_port, free_port, tcp_server, wait_for
from sync_support import CLUSTERKIT, Daemon, sync_cluster

PREFIX = "127.88.6"
SECRET = "s3cret-for-hmac"


class Receiver(http.server.ThreadingHTTPServer):
    """A webhook receiver that records every POST; ``fail`` answers 500 that many times first."""

    def __init__(self, ip: str, fail: int = 0):
        self.bodies: list[tuple[dict, dict]] = []
        self.fail = fail
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.fail > 0:
                    receiver.fail -= 1
                    self.send_response(500)
                else:
                    receiver.bodies.append((json.loads(body), {**self.headers, "raw": body}))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        super().__init__((ip, free_port(ip)), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}/hook"

    def alerts(self) -> list[dict]:
        return [a for body, _ in self.bodies for a in body["alerts"]]

    def close(self) -> None:
        self.shutdown()
        self.server_close()


def cluster(tmp_path, receiver, port, group_wait=0.5, extra="", grace=0):
    config = sync_cluster(tmp_path, nodes=2, prefix=PREFIX)
    config.write_text(config.read_text() + (
        f'\n[[policy]]\nvip = "{PREFIX}.100"\nport = {port}\nservice = "http"\n'
        'members = {node1 = 1, node2 = 1}\ncheck = {kind = "tcp", inter = 0.2, fall = 1, rise = 1}\n'
        f'\n[alerts]\ngroup_wait = {group_wait}\ninterval = 0.3\nstartup_grace = {grace}\n'
        f'webhook = {{ url = "{receiver.url}", secret = "{SECRET}", timeout = 2 }}\n{extra}'))
    return config


def member_down(alerts, node, state="firing"):
    return [a for a in alerts if a["kind"] == "member-down" and a["node"] == node and a["state"] == state]


@pytest.fixture
def receiver():
    r = Receiver(f"{PREFIX}.1")
    yield r
    r.close()


def test_member_down_then_up_are_grouped_signed_and_sent(tmp_path, receiver):
    port = common_port([f"{PREFIX}.11", f"{PREFIX}.12", f"{PREFIX}.100"])
    backends = [tcp_server(f"{PREFIX}.11", port)]
    config = cluster(tmp_path, receiver, port)
    try:
        with Daemon(config):
            wait_for(lambda: member_down(receiver.alerts(), "node2"), what="node2's down alert")
            assert not member_down(receiver.alerts(), "node1")
            body, headers = next((b, h) for b, h in receiver.bodies if member_down(b["alerts"], "node2"))
            assert body["cluster"] == "test" and body["host"] == "manager"
            expected = "sha256=" + hmac.new(SECRET.encode(), headers["X-Clusterkit-Timestamp"].encode()
                                            + b"." + headers["raw"], hashlib.sha256).hexdigest()
            assert headers["X-Clusterkit-Signature"] == expected
            # a burst is one message: node2's down and the nodes' unreachable panels arrive together
            assert len({a["kind"] for a in body["alerts"]}) >= 1
            backends.append(tcp_server(f"{PREFIX}.12", port))
            wait_for(lambda: member_down(receiver.alerts(), "node2", "resolved"), what="resolved")
            assert len(member_down(receiver.alerts(), "node2")) == 1, "fired once"
    finally:
        for b in backends:
            b.close()


def test_maintenance_silences_a_node(tmp_path, receiver):
    port = common_port([f"{PREFIX}.11", f"{PREFIX}.12", f"{PREFIX}.100"])
    config = cluster(tmp_path, receiver, port)
    with Daemon(config):
        wait_for(lambda: member_down(receiver.alerts(), "node1"), what="node1's alert")
        subprocess.run([*CLUSTERKIT, "node", "maintenance", "node2", "on", "-c", str(config)], check=True,
                       capture_output=True, timeout=30)
        # node2 may have fired before maintenance: after it, nothing more about node2
        count = len([a for a in receiver.alerts() if a["node"] == "node2"])
        serve_sock = tcp_server(f"{PREFIX}.11", port)
        try:
            wait_for(lambda: member_down(receiver.alerts(), "node1", "resolved"), what="node1 resolved")
        finally:
            serve_sock.close()
        assert len([a for a in receiver.alerts() if a["node"] == "node2"]) == count
        assert not member_down(receiver.alerts(), "node2", "resolved"), "silenced, not resolved"


def test_restart_in_the_middle_of_a_burst_loses_and_repeats_nothing(tmp_path, receiver):
    port = common_port([f"{PREFIX}.11", f"{PREFIX}.12", f"{PREFIX}.100"])
    config = cluster(tmp_path, receiver, port, group_wait=4, grace=30)
    daemon = Daemon(config).start()
    try:
        wait_for(lambda: (daemon.query("status").get("alerts") or {}).get("pending"),
                 what="alerts pending in the group window")
        assert not receiver.bodies
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(10)
    finally:
        daemon.stop() if daemon.proc.poll() is None else None
    with Daemon(config):
        wait_for(lambda: member_down(receiver.alerts(), "node2"), timeout=20, what="the kept alert")
        wait_for(lambda: member_down(receiver.alerts(), "node1"), timeout=20, what="the kept alert")
    assert len(member_down(receiver.alerts(), "node1")) == 1
    assert len(member_down(receiver.alerts(), "node2")) == 1


def test_failed_delivery_is_retried_and_shown(tmp_path):
    receiver = Receiver(f"{PREFIX}.1", fail=1)
    port = common_port([f"{PREFIX}.11", f"{PREFIX}.12", f"{PREFIX}.100"])
    config = cluster(tmp_path, receiver, port, extra="retry_max = 1\n")
    try:
        with Daemon(config) as daemon:
            wait_for(lambda: member_down(receiver.alerts(), "node1"), what="the retried message")
            assert receiver.fail == 0
            assert daemon.query("status")["alerts"]["delivery_errors"] >= 1
    finally:
        receiver.close()


def test_alert_test_sends_one_of_each_kind_by_webhook_and_email(tmp_path, receiver):
    smtp_port = free_port(f"{PREFIX}.1")
    relay = SmtpNode(f"{PREFIX}.1", smtp_port, "relay")
    try:
        config = cluster(tmp_path, receiver, 80, extra=(
            f'email = {{ relay = "{PREFIX}.1:{smtp_port}", from = "ck@example.test", '
            f'to = ["ops@example.test"] }}\n'))
        done = subprocess.run([*CLUSTERKIT, "alert", "test", "-c", str(config)], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        from clusterkit_alerts.rules import KINDS
        assert {a["kind"] for a in receiver.alerts()} == set(KINDS)
        assert len(relay.messages) == 1
        mail = relay.messages[0]
        assert mail.rcpt_tos == ["ops@example.test"]
        text = mail.content.decode()
        assert "Subject: [clusterkit test] ALERT: TEST member-down" in text
        assert all(f"TEST {kind}" in text for kind in KINDS)
    finally:
        relay.stop()
    receiver.close()  # nobody listens: the command says so and exits 1
    done = subprocess.run([*CLUSTERKIT, "alert", "test", "-c", str(config)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 1 and "error: webhook" in done.stderr


@pytest.mark.parametrize("table, key", [
    ('[alerts]\ngroup_wait = nan\n', "alerts.group_wait"),
    ('[alerts]\nwebhook = { url = "ftp://x/" }\n', "alerts.webhook.url"),
    ('[alerts]\nemail = { relay = "h:99999", from = "a@b", to = ["c@d"] }\n', "alerts.email.relay"),
    ('[alerts]\nemail = { relay = "h:25", from = "a@b", to = [] }\n', "alerts.email.to"),
    ('[alerts]\nsms = "x"\n', "alerts.sms"),
])
def test_bad_alert_settings_are_named(tmp_path, table, key):
    text = sync_cluster(tmp_path, nodes=1, prefix=PREFIX).read_text() + table
    with pytest.raises(ConfigError) as err:
        build_cluster(text, "cluster.toml", get_plugin_manager())
    assert key in str(err.value)


def test_an_edit_of_the_definition_is_taken_and_a_removed_sender_drops_its_queue(tmp_path):
    receiver = Receiver(f"{PREFIX}.1", fail=1000)  # refuses everything: messages queue up
    port = common_port([f"{PREFIX}.11", f"{PREFIX}.12", f"{PREFIX}.100"])
    config = cluster(tmp_path, receiver, port, extra="retry_max = 1\n")
    try:
        with Daemon(config) as daemon:
            wait_for(lambda: (daemon.query("status").get("alerts") or {}).get("undelivered", {})
                     .get("webhook"), what="a message waiting for the webhook")
            text = config.read_text()
            config.write_text(text.replace("group_wait = 0.5", "group_wait = 1.5"))
            wait_for(lambda: "reloaded" in daemon.log.read_text(), what="the reload")
            webhook_line = next(line for line in text.splitlines() if line.startswith("webhook = "))
            config.write_text(text.replace(webhook_line + "\n", "").replace(
                "[alerts]\n", f'[alerts]\nemail = {{ relay = "{PREFIX}.1:1", from = "a@b.test", '
                              'to = ["c@d.test"] }\n'))
            wait_for(lambda: daemon.query("status")["alerts"]["senders"] == ["email"],
                     what="the new senders")
            assert "webhook" not in daemon.query("status")["alerts"]["undelivered"]
            assert daemon.proc.poll() is None and "Traceback" not in daemon.log.read_text()
    finally:
        receiver.close()
