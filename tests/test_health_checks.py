"""Every check kind against a real server that passes and one that fails."""

from __future__ import annotations

import asyncio
import os
import shutil
import time

import dns.rcode
import pytest

from clusterkit.config import registry_of
from clusterkit.plugins import get_plugin_manager
from clusterkit.registry import CheckFailed, CheckTarget

import health_servers as hs

IP = "127.82.1.1"


@pytest.fixture(scope="module")
def checks():
    return registry_of(get_plugin_manager()).checks


def run(checks, kind, port, ip=IP, timeout=2.0, proxy="", **options):
    target = CheckTarget(node="n1", address=ip, port=port, timeout=timeout, service=kind,
                         options=options, proxy_protocol=proxy)
    return asyncio.run(checks[kind].run(target))


def fails(checks, kind, port, match, **kw):
    with pytest.raises(CheckFailed, match=match):
        run(checks, kind, port, **kw)


def test_every_kind_is_registered(checks):
    assert {"tcp", "command", "http", "https", "smtp", "pop3", "imap", "ftp", "dns"} <= set(checks)


def test_tcp(checks):
    with hs.http_server(IP) as port:
        assert "connected" in run(checks, "tcp", port)
    fails(checks, "tcp", port, "Connection refused")


def test_tcp_timeout_names_the_stage(checks):
    # a full listen backlog never completes the handshake: the check must give up in time
    import socket
    with socket.socket() as s:
        s.bind((IP, 0))
        s.listen(0)
        port = s.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):
                f = socket.socket()
                f.setblocking(False)
                f.connect_ex((IP, port))
                fillers.append(f)
            started = time.monotonic()
            with pytest.raises(CheckFailed, match=r"no answer within 0.3s \(connecting\)"):
                run(checks, "tcp", port, timeout=0.3)
            assert time.monotonic() - started < 2
        finally:
            for f in fillers:
                f.close()


def test_command(checks, tmp_path):
    assert run(checks, "command", 80, command='test "$CK_NODE" = n1 && echo fine') == "fine"
    fails(checks, "command", 80, "exited 3: nope", command="echo nope; exit 3")
    fails(checks, "command", 80, "timed out", command="sleep 5", timeout=0.3)
    fails(checks, "command", 80, "'command' is not set")


def test_http(checks):
    with hs.http_server(IP) as port:
        assert run(checks, "http", port, path="/ok").startswith("HTTP 200 OK")
        assert run(checks, "http", port, path="/ok", expect="all good")
        assert run(checks, "http", port, path="/status/301")  # 3xx passes by default
        assert run(checks, "http", port, path="/status/503", status="503")
        assert run(checks, "http", port, path="/host", host="www.example.test", expect="www.example.test")
        fails(checks, "http", port, r"HTTP 503 .*expected 200-399", path="/status/503")
        fails(checks, "http", port, r"HTTP 301 .*expected 2xx", path="/status/301", status="2xx")
        fails(checks, "http", port, "does not contain 'bad news'", path="/ok", expect="bad news")
        fails(checks, "http", port, "does not contain 'www.example.test'", path="/host",
              expect="www.example.test")
        fails(checks, "http", port, "check option status", path="/ok", status="fine")
    fails(checks, "http", port, "Connection refused", path="/ok")


def test_http_body_ends_at_content_length_on_a_kept_open_connection(checks):
    reply = {b"GET": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"}
    with hs.scripted(IP, b"", reply) as server:  # answers, and never closes the connection
        assert run(checks, "http", server.server_address[1], expect="hello", timeout=1.0)
        fails(checks, "http", server.server_address[1], "does not contain 'hello!'",
              expect="hello!", timeout=1.0)


def test_http_against_a_server_speaking_something_else(checks):
    with hs.scripted(IP, b"220 mail.example.test ESMTP\r\n") as server:
        fails(checks, "http", server.server_address[1], "not an HTTP response")


def test_https_does_not_verify_by_default(checks, tmp_path):
    cert = hs.self_signed(str(tmp_path))
    with hs.http_server(IP, cert=cert) as port:
        assert run(checks, "https", port, path="/ok", expect="all good")
        assert run(checks, "https", port, path="/host", host="www.example.test", expect="www.example.test")
        fails(checks, "https", port, "HTTP 404", path="/missing")
        fails(checks, "https", port, "TLS failed: CERTIFICATE_VERIFY_FAILED", path="/ok", verify="true")
        assert run(checks, "https", port, path="/ok", verify="true", ca=cert[0], host="www.example.test")
    with hs.http_server(IP) as plain:
        fails(checks, "https", plain, "TLS failed", path="/ok")


@pytest.fixture
def nginx_proxy(tmp_path):
    if not shutil.which("nginx"):
        pytest.skip("nginx is not installed")
    with hs.nginx(str(tmp_path), "127.82.1.2") as port:
        yield port


def test_http_sends_the_proxy_header_to_nginx(checks, nginx_proxy):
    port = nginx_proxy
    out = run(checks, "http", port, ip="127.82.1.2", proxy="v1", expect="proxied <127.")
    assert out.startswith("HTTP 200")
    # v2 uses the LOCAL command (health checks): accepted, no client address
    assert run(checks, "http", port, ip="127.82.1.2", proxy="v2", expect="proxied <>")
    # without the header a PROXY listener refuses the request: the check fails
    fails(checks, "http", port, "closed while waiting for the status line|not an HTTP", ip="127.82.1.2")


def test_https_sends_the_proxy_header_before_tls(checks, tmp_path):
    if not shutil.which("nginx"):
        pytest.skip("nginx is not installed")
    cert = hs.self_signed(str(tmp_path))
    with hs.nginx(str(tmp_path), "127.82.1.4", cert=cert) as port:
        assert run(checks, "https", port, ip="127.82.1.4", proxy="v1", expect="proxied <127.")
        assert run(checks, "https", port, ip="127.82.1.4", proxy="v2", expect="proxied <>")
        fails(checks, "https", port, "the TLS handshake", ip="127.82.1.4", timeout=1.0)  # no header


def test_proxy_header_bytes_come_first(checks):
    with hs.scripted(IP, b"220 ok\r\n", {b"EHLO": b"250 hi\r\n", b"QUIT": b"221 bye\r\n"},
                     proxy=True) as server:
        run(checks, "smtp", server.server_address[1], proxy="v1")
        run(checks, "smtp", server.server_address[1], proxy="v2")
        time.sleep(0.2)
    v1, v2 = server.received
    assert v1.startswith(b"PROXY TCP4 127.") and b"\r\nEHLO clusterkit-check\r\n" in v1
    assert v2.startswith(b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00EHLO ")


def test_smtp(checks):
    with hs.smtp_server(IP) as port:
        assert run(checks, "smtp", port).startswith("220 ")
    fails(checks, "smtp", port, "Connection refused")
    with hs.scripted(IP, b"554 5.3.2 not accepting mail\r\n") as server:
        fails(checks, "smtp", server.server_address[1], "SMTP greeting 554")
    with hs.scripted(IP, b"220-first\r\n220 second\r\n", {b"EHLO": b"502 5.5.1 no EHLO\r\n"}) as server:
        fails(checks, "smtp", server.server_address[1], "EHLO answered 502")
    with hs.scripted(IP, b"") as server:
        fails(checks, "smtp", server.server_address[1], r"no answer within 0.3s \(the SMTP greeting\)",
              timeout=0.3)


def test_smtps_speaks_tls_first_by_service(checks, tmp_path):
    cert = hs.self_signed(str(tmp_path))
    with hs.smtp_server(IP, cert=cert) as port:
        assert "EHLO 250" in asyncio.run(checks["smtp"].run(CheckTarget(
            "n1", IP, port, 2.0, "smtps")))  # the service name implies TLS
        assert "EHLO 250" in run(checks, "smtp", port, tls="true")
        fails(checks, "smtp", port, "no answer within 0.5s", timeout=0.5)  # plain SMTP: silence
    with hs.smtp_server(IP) as plain:
        with pytest.raises(CheckFailed, match="TLS failed"):
            asyncio.run(checks["smtp"].run(CheckTarget("n1", IP, plain, 2.0, "smtps")))


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("Dovecot's master process needs root to start its login services")
    if not shutil.which("dovecot"):
        pytest.skip("dovecot is not installed")
    with hs.dovecot(str(tmp_path_factory.mktemp("dovecot")), "127.82.1.3") as ports:
        yield ports


def test_pop3_against_dovecot(checks, dovecot):
    assert run(checks, "pop3", dovecot["pop3"], ip="127.82.1.3").startswith("+OK Dovecot")
    fails(checks, "pop3", dovecot["imap"], "POP3 greeting '\\* OK", ip="127.82.1.3")
    with hs.scripted(IP, b"-ERR [SYS/TEMP] try later\r\n") as server:
        fails(checks, "pop3", server.server_address[1], "POP3 greeting '-ERR")


def test_imap_against_dovecot(checks, dovecot):
    assert run(checks, "imap", dovecot["imap"], ip="127.82.1.3").startswith("* OK")
    fails(checks, "imap", dovecot["pop3"], "IMAP greeting '\\+OK", ip="127.82.1.3")
    with hs.scripted(IP, b"* BYE too many connections\r\n") as server:
        fails(checks, "imap", server.server_address[1], "IMAP greeting '\\* BYE")


def test_imap_with_proxy_protocol_against_dovecot(checks, dovecot):
    port = dovecot["imap_proxy"]
    assert run(checks, "imap", port, ip="127.82.1.3", proxy="v2").startswith("* OK")
    assert run(checks, "imap", port, ip="127.82.1.3", proxy="v1").startswith("* OK")
    fails(checks, "imap", port, "IMAP", ip="127.82.1.3", timeout=1.0)


def test_ftp(checks):
    with hs.ftp_server(IP) as port:
        assert "test ftpd ready" in run(checks, "ftp", port)
    fails(checks, "ftp", port, "Connection refused")
    with hs.scripted(IP, b"421 Too many users, try later\r\n") as server:
        fails(checks, "ftp", server.server_address[1], "FTP greeting 421")
    with hs.scripted(IP, b"220-welcome\r\n to the\r\n220 ftp\r\n", {b"QUIT": b"221 bye\r\n"}) as server:
        assert "welcome" in run(checks, "ftp", server.server_address[1])


def test_dns(checks):
    with hs.dns_server(IP) as port:
        assert "SOA serial 2026112601, AA" in run(checks, "dns", port, zone="example.test")
        fails(checks, "dns", port, "no SOA for other.test.", zone="other.test")
        fails(checks, "dns", port, "'zone' is not set")
    with hs.dns_server(IP, aa=False) as port:
        fails(checks, "dns", port, "not authoritative", zone="example.test")
    with hs.dns_server(IP, rcode=dns.rcode.REFUSED) as port:
        fails(checks, "dns", port, "answered REFUSED", zone="example.test")
    fails(checks, "dns", hs.free_port(IP, __import__("socket").SOCK_DGRAM), "no answer .* within 0.3s",
          zone="example.test", timeout=0.3)


def test_dns_against_the_clusterkit_dns_server(checks, tmp_path):
    """The project's own authoritative server (``clusterkit dns serve``) as the real target."""
    import subprocess
    import sys

    if get_plugin_manager().get_plugin("dns") is None:
        pytest.skip("the dns plugin is not installed")
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "example.test.zone").write_text(
        "$ORIGIN example.test.\n$TTL 60\n@ IN SOA ns1 hostmaster 7 3600 600 86400 60\n"
        "@ IN NS ns1\nns1 IN A 127.82.1.9\n")
    port = hs.free_port("127.82.1.9", __import__("socket").SOCK_DGRAM)
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "clusterkit"), "dns",
                               "serve", "--zones", str(zones), "--listen", f"127.82.1.9:{port}"],
                              stderr=subprocess.DEVNULL)
    try:
        hs.wait_listening("127.82.1.9", port)  # TCP and UDP are bound together
        assert "example.test. SOA serial 7, AA" in run(checks, "dns", port, ip="127.82.1.9",
                                                      zone="example.test")
        fails(checks, "dns", port, "other.test. SOA answered REFUSED|not authoritative|no SOA",
              ip="127.82.1.9", zone="other.test")
    finally:
        server.terminate()
        server.wait(10)
