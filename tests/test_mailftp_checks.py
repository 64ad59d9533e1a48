"""The mail and FTP health checks against real servers (aiosmtpd, Dovecot, pyftpdlib).

The protocol check kinds (``smtp``, ``pop3``, ``imap``, ``ftp``) come from the
checks plugin; each case is skipped while its kind is not registered.
"""

from __future__ import annotations

import asyncio
import ssl

import pytest

from clusterkit.config import registry_of
from clusterkit.registry import CheckFailed, CheckTarget

from mailftp_support import (DovecotNode, FtpNode, SmtpNode, common_port, dovecot_unavailable,
                             self_signed)

NET = "127.85.5"
NODE = f"{NET}.11"


@pytest.fixture(scope="module")
def checks():
    from clusterkit.plugins import get_plugin_manager

    return registry_of(get_plugin_manager()).checks


def run(checks, kind: str, port: int, service: str, **options) -> str:
    if kind not in checks:
        pytest.skip(f"the {kind!r} check kind is not registered (it comes with the health checks)")
    proxy = options.pop("proxy_protocol", "")
    target = CheckTarget(node="node1", address=NODE, port=port, timeout=5.0, service=service,
                         options=options, proxy_protocol=proxy)
    return asyncio.run(checks[kind].run(target))


@pytest.fixture(scope="module")
def servers(tmp_path_factory, checks):
    if not {"smtp", "pop3", "imap", "ftp"} & set(checks):
        pytest.skip("no mail or ftp check kind is registered (they come with the health checks)")
    base = tmp_path_factory.mktemp("checks")
    cert, key = self_signed(base)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    ports = {}
    started = []
    try:
        ports["smtp"] = common_port([NODE])
        started.append(SmtpNode(NODE, ports["smtp"], "node1", tls_context=tls))
        ports["smtps"] = common_port([NODE])
        started.append(SmtpNode(NODE, ports["smtps"], "node1", ssl_context=tls))
        ports["ftp"] = common_port([NODE])
        started.append(FtpNode(NODE, ports["ftp"], base / "ftp"))
        if dovecot_unavailable() is None:
            kinds = ("imap", "imaps", "pop3", "pop3s", "imap_proxied")
            dovecot_ports = {k: common_port([NODE]) for k in kinds}
            started.append(DovecotNode(base / "dovecot", NODE, dovecot_ports, "node1", cert, key))
            ports.update(dovecot_ports)
    except BaseException:
        for server in started:
            server.stop()
        raise
    yield ports
    for server in started:
        server.stop()


def need(ports, name):
    if name not in ports:
        pytest.skip(dovecot_unavailable() or "server not started")
    return ports[name]


def test_smtp_checks(checks, servers):
    assert "EHLO 250" in run(checks, "smtp", servers["smtp"], "smtp")
    assert "EHLO 250" in run(checks, "smtp", servers["smtps"], "smtps", tls=True)


def test_ftp_check(checks, servers):
    assert run(checks, "ftp", servers["ftp"], "ftp").startswith("220 ")


def test_pop3_and_imap_checks_against_dovecot(checks, servers):
    assert run(checks, "pop3", need(servers, "pop3"), "pop3").startswith("+OK")
    assert run(checks, "pop3", need(servers, "pop3s"), "pop3s", tls=True).startswith("+OK")
    assert run(checks, "imap", need(servers, "imap"), "imap").upper().startswith("* OK")
    assert run(checks, "imap", need(servers, "imaps"), "imaps", tls=True).upper().startswith("* OK")


def test_a_check_sends_the_proxy_header_when_the_policy_does(checks, servers):
    port = need(servers, "imap_proxied")
    assert run(checks, "imap", port, "imap", proxy_protocol="v2").upper().startswith("* OK")


def test_the_wrong_protocol_fails_the_check(checks, servers):
    with pytest.raises(CheckFailed):
        run(checks, "smtp", need(servers, "pop3"), "smtp")
    with pytest.raises(CheckFailed):
        run(checks, "imap", need(servers, "pop3"), "imap")
    with pytest.raises(CheckFailed):  # the PROXY listener refuses a check without the header
        run(checks, "imap", need(servers, "imap_proxied"), "imap")
