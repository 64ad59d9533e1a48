"""Real servers for the health tests, on this branch's loopback range 127.82.0.0/16.

HTTP(S) from http.server, nginx for PROXY-protocol listeners, aiosmtpd,
Dovecot for POP3/IMAP, pyftpdlib, a dnspython-built UDP responder, and a
scripted TCP server that speaks a fixed greeting (for servers that answer
wrongly) and records what it received (the PROXY header).
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import socketserver
import ssl
import subprocess
import threading
import time

import dns.flags
import dns.message
import dns.rcode
import dns.rrset


def free_port(ip: str, kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def wait_listening(ip: str, port: int, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((ip, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {ip}:{port} after {seconds}s")


@contextlib.contextmanager
def serving(server: socketserver.BaseServer):
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# --------------------------------------------------------------------- HTTP


class Handler(http.server.BaseHTTPRequestHandler):
    """``/ok`` 200 "all good", ``/status/NNN`` NNN, ``/host`` 200 with the Host header as body,
    ``/name`` the server's ``name``. HTTP/1.1: a client may keep its connection."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/name":
            code, body = 200, getattr(self.server, "name", "").encode()
        elif self.path.startswith("/status/"):
            code, body = int(self.path.rsplit("/", 1)[1]), b"as asked"
        elif self.path == "/host":
            code, body = 200, (self.headers.get("Host") or "").encode()
        elif self.path == "/ok":
            code, body = 200, b"all good"
        else:
            code, body = 404, b"no such page"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class HTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextlib.contextmanager
def http_server(ip: str, cert: tuple[str, str] | None = None):
    server = HTTPServer((ip, 0), Handler)
    if cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*cert)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    with serving(server):
        yield server.server_address[1]


def self_signed(directory: str) -> tuple[str, str]:
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=www.example.test", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    return cert, key


@contextlib.contextmanager
def nginx(directory: str, ip: str, cert: tuple[str, str] | None = None):
    """nginx with a PROXY-protocol listener answering "proxied <$proxy_protocol_addr>".

    With ``cert`` the listener speaks TLS after the PROXY header (as behind an L4 proxy).
    """
    if not shutil.which("nginx"):
        raise RuntimeError("nginx is not installed")
    port = free_port(ip)
    tls = f"ssl_certificate {cert[0]}; ssl_certificate_key {cert[1]};" if cert else ""
    conf = os.path.join(directory, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""
daemon off; master_process off; worker_processes 1; pid {directory}/nginx.pid;
error_log {directory}/error.log warn;
events {{ worker_connections 64; }}
http {{
  access_log off; client_body_temp_path {directory}/tmp;
  server {{
    listen {ip}:{port} {"ssl " if cert else ""}proxy_protocol; {tls}
    location / {{ return 200 "proxied <$proxy_protocol_addr>"; }}
  }}
}}
""")
    proc = subprocess.Popen(["nginx", "-p", directory, "-c", conf], stderr=subprocess.PIPE)
    try:
        wait_listening(ip, port)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


# --------------------------------------------------------- mail, FTP servers


class Scripted(socketserver.ThreadingTCPServer):
    """Sends ``greeting`` (after a PROXY header if ``proxy``), answers each line with
    ``replies[first word]``; records the bytes it received."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, ip: str, greeting: bytes, replies: dict[bytes, bytes] | None = None,
                 proxy: bool = False):
        self.greeting, self.replies, self.received, self.proxy = greeting, replies or {}, [], proxy
        super().__init__((ip, 0), ScriptedHandler)


class ScriptedHandler(socketserver.StreamRequestHandler):
    def handle(self):
        self.request.settimeout(5)
        data = b""
        if self.server.proxy and self.rfile.peek(5)[:5] == b"\r\n\r\n\x00":  # PROXY v2: binary
            head = self.rfile.read(16)
            data = head + self.rfile.read(int.from_bytes(head[14:16], "big"))
        if self.server.greeting:
            self.wfile.write(self.server.greeting)
        with contextlib.suppress(OSError):
            while line := self.rfile.readline():
                data += line
                word = line.split(b" ", 1)[0].strip().upper()
                if word in self.server.replies:
                    self.wfile.write(self.server.replies[word])
                if word in (b"QUIT", b"LOGOUT"):
                    break
        self.server.received.append(data)


@contextlib.contextmanager
def scripted(ip: str, greeting: bytes, replies: dict[bytes, bytes] | None = None, proxy=False):
    """``proxy``: expect a PROXY header before speaking (as a server configured for it does)."""
    with serving(Scripted(ip, greeting, replies, proxy)) as server:
        yield server


@contextlib.contextmanager
def smtp_server(ip: str, cert: tuple[str, str] | None = None):
    """aiosmtpd; with ``cert``, SMTPS (TLS from the first byte, port 465 style)."""
    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_DATA(self, server, session, envelope):
            return "250 OK"

    tls = None
    if cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(*cert)
    controller = Controller(Sink(), hostname=ip, port=free_port(ip), ident="test ESMTP",
                            ssl_context=tls)
    controller.start()
    try:
        yield controller.port
    finally:
        controller.stop()


@contextlib.contextmanager
def ftp_server(ip: str):
    from pyftpdlib.authorizers import DummyAuthorizer
    from pyftpdlib.handlers import FTPHandler
    from pyftpdlib.servers import ThreadedFTPServer

    handler = type("Handler", (FTPHandler,), {"authorizer": DummyAuthorizer(),
                                               "banner": "test ftpd ready"})
    server = ThreadedFTPServer((ip, 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"timeout": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.address[1]
    finally:
        server.close_all()
        thread.join(5)


@contextlib.contextmanager
def dovecot(directory: str, ip: str):
    """A real Dovecot (run as root, as its packaging does) with IMAP/POP3, and IMAP behind PROXY."""
    if not shutil.which("dovecot"):
        raise RuntimeError("dovecot is not installed")
    ports = {name: free_port(ip) for name in ("imap", "pop3", "imap_proxy")}
    conf = os.path.join(directory, "dovecot.conf")
    with open(conf, "w") as f:
        f.write(f"""
base_dir = {directory}/run
state_dir = {directory}/state
log_path = {directory}/dovecot.log
protocols = imap pop3
listen = {ip}
ssl = no
haproxy_trusted_networks = 127.0.0.0/8
passdb {{
  driver = static
  args = password=unused
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home={directory}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {ports["imap"]}
  }}
  inet_listener imap_proxy {{
    port = {ports["imap_proxy"]}
    haproxy = yes
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {ports["pop3"]}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
""")
    proc = subprocess.Popen(["dovecot", "-c", conf, "-F"], stderr=subprocess.PIPE)
    try:
        for port in ports.values():
            wait_listening(ip, port)
        yield ports
    finally:
        proc.terminate()
        proc.wait(10)


# ----------------------------------------------------------------------- DNS


class DNSResponder(socketserver.UDPServer):
    """Answers SOA for ``zone`` with AA (or without, or with ``rcode``), from dnspython messages."""

    allow_reuse_address = True

    def __init__(self, ip: str, zone: str, aa: bool = True, rcode: int = dns.rcode.NOERROR):
        self.zone, self.aa, self.rcode = zone, aa, rcode
        super().__init__((ip, 0), DNSHandler)


class DNSHandler(socketserver.BaseRequestHandler):
    def handle(self):
        data, sock = self.request
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.set_rcode(self.server.rcode)
        if self.server.aa:
            response.flags |= dns.flags.AA
        question = query.question[0]
        if self.server.rcode == dns.rcode.NOERROR and question.name.to_text() == self.server.zone:
            response.answer.append(dns.rrset.from_text(
                self.server.zone, 3600, "IN", "SOA",
                f"ns1.{self.server.zone} hostmaster.{self.server.zone} 2026112601 3600 600 86400 300"))
        sock.sendto(response.to_wire(), self.client_address)


@contextlib.contextmanager
def dns_server(ip: str, zone: str = "example.test.", **kw):
    with serving(DNSResponder(ip, zone, **kw)) as server:
        yield server.server_address[1]
