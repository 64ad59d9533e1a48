"""Real servers for the mail and FTP tests, and the real daemon in a thread.

Everything listens on 127.85.0.0/16 (this area's loopback range): the
manager at ``{net}.1`` with the VIP ``{net}.100``, nodes at ``{net}.11``…,
clients bind ``{net}.50``. Each test module takes its own ``net`` so that
TIME_WAIT sockets of one never meet another.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from clusterkit.plugins import get_plugin_manager
from clusterkit.runtime import Runtime, new_event_loop
from support import common_port, free_port  # noqa: F401 (re-exported)

# pyftpdlib adds a stderr handler unless logging looks configured; under
# pytest that stream is closed after each test while node threads still log
logging.getLogger("pyftpdlib").addHandler(logging.NullHandler())


def wait_port(ip: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((ip, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {ip}:{port}") from None
            time.sleep(0.05)


def wait_for(predicate, timeout: float = 10.0, step: float = 0.02):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(step)


def listening_ports(ip: str, ports: range) -> list[int]:
    """The ports of ``ports`` someone listens on at ``ip``.

    A bind with SO_REUSEADDR succeeds next to TIME_WAIT and established
    sockets but never next to a listener: exactly "is the port taken back".
    """
    busy = []
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((ip, port))
                s.listen(1)
            except OSError:
                busy.append(port)
    return busy


# ------------------------------------------------------------------ the daemon


def cluster_file(tmp_path: Path, net: str, nodes: int, policies: str,
                 manager_ip: str | None = None, vip: str | None = None,
                 node_ips: list[str] | None = None) -> Path:
    """A definition on ``net``: manager .1 (VIP .100), nodes node1.. at .11..

    Only the load balancer is under test: DNS is off, and every host's
    filesystem is a directory here (nothing replicates into the real /).
    """
    manager_ip = manager_ip or f"{net}.1"
    vip = vip or f"{net}.100"
    node_ips = node_ips or [f"{net}.{10 + i}" for i in range(1, nodes + 1)]
    text = (f'[cluster]\nname = "mailftp"\nstate_dir = "{tmp_path}/state"\n\n'
            f'[dns]\nenabled = false\n\n'
            f'[manager]\nname = "manager"\nip = "{manager_ip}"\npublic_ips = ["{vip}"]\n'
            f'root = "{tmp_path}/root-manager"\n')
    for i, ip in enumerate(node_ips, 1):
        text += f'\n[[node]]\nname = "node{i}"\nip = "{ip}"\nroot = "{tmp_path}/root-node{i}"\n'
    path = tmp_path / "cluster.toml"
    path.write_text(text + "\n" + policies)
    return path


class Daemon:
    """The manager's :class:`Runtime` (all plugins, the native proxy) on a loop in a thread."""

    def __init__(self, config: Path):
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runtime = Runtime(str(config), get_plugin_manager(), watch_config=False)
        try:
            self.call(self.runtime.start())
        except BaseException:
            self._halt()
            raise

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def sync(self, fn, *args):
        """Run ``fn`` on the daemon's loop (nothing there is thread-safe)."""
        async def run():
            return fn(*args)
        return self.call(run())

    @property
    def engine(self):
        """The native proxy (the policies' engine here)."""
        return self.runtime.engine.running["native"]

    def stop(self) -> None:
        try:
            self.call(self.runtime.stop())
        finally:
            self._halt()

    def _halt(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


# ---------------------------------------------------------------------- FTP


class FtpNode:
    """A pyftpdlib server for one node: user ``u``/``p`` with its own root directory."""

    def __init__(self, ip: str, port: int, root: Path, passive: range | None = None,
                 masquerade: str | None = None, tls: tuple[Path, Path] | None = None):
        from pyftpdlib.authorizers import DummyAuthorizer
        from pyftpdlib.handlers import FTPHandler
        from pyftpdlib.ioloop import IOLoop
        from pyftpdlib.servers import ThreadedFTPServer

        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        authorizer = DummyAuthorizer()
        authorizer.add_user("u", "p", str(root), perm="elradfmwMT")
        base, extra = FTPHandler, {}
        if tls is not None:  # explicit FTPS (AUTH TLS); needs pyOpenSSL
            from pyftpdlib.handlers import TLS_FTPHandler

            base, extra = TLS_FTPHandler, {"certfile": str(tls[0]), "keyfile": str(tls[1])}
        handler = type("NodeHandler", (base,), {
            "authorizer": authorizer, "banner": f"node {ip} ready", "timeout": 60,
            "passive_ports": list(passive) if passive else None,
            "masquerade_address": masquerade, **extra,
        })
        # its own IOLoop: pyftpdlib's default is one per process, and two
        # servers in two threads on one loop corrupt each other's transfers.
        # Threaded: the single-threaded server stalls sessions when many
        # active-mode (PORT) transfers run at once, also without any proxy.
        self.server = ThreadedFTPServer((ip, port), handler, ioloop=IOLoop())
        self.server.max_cons = 512
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
        self.server.close_all()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)


# --------------------------------------------------------------------- SMTP


class SmtpNode:
    """An aiosmtpd server that keeps every message it receives, tagged with its name."""

    def __init__(self, ip: str, port: int, name: str, **smtp_kwargs):
        from aiosmtpd.controller import Controller

        self.name = name
        self.messages: list = []
        self.sessions: list = []
        node = self

        class Keep:
            async def handle_PROXY(self, server, session, envelope, proxy_data):
                return True  # trust the header: the manager is the only peer

            async def handle_DATA(self, server, session, envelope):
                node.messages.append(envelope)
                node.sessions.append(session)
                return f"250 queued on {name}"

        self.controller = Controller(Keep(), hostname=ip, port=port, ident=f"{name} ESMTP",
                                     **smtp_kwargs)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


# ------------------------------------------------------------------ Dovecot


def self_signed(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A throw-away certificate and key made with openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


DOVECOT_CONF = """\
protocols = imap pop3
listen = {ip}
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = no
auth_mechanisms = plain login
haproxy_trusted_networks = {trusted}
login_greeting = {name} ready
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {dir}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={homes}/%u
}}
mail_location = maildir:~/Maildir
# the passwd-file lives in the test's (root-only) directory
service auth {{
  user = root
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
  }}
  inet_listener imap_proxied {{
    port = {imap_proxied}
    haproxy = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
  }}
}}
"""


def dovecot_unavailable() -> str | None:
    if shutil.which("dovecot") is None:
        return "dovecot is not installed (apt-get install dovecot-imapd dovecot-pop3d; CI does)"
    if os.geteuid() != 0:
        return "the Dovecot fixture runs dovecot as root (mail as nobody); not root here"
    return None


class DovecotNode:
    """A real Dovecot (``dovecot -F``) for one node: imap, imaps, pop3, pop3s, PROXY listener.

    Config, certificate, users, logs and state live in ``directory``; the
    mailboxes are under a private 0711 directory in /tmp, because mail
    processes run as ``nobody`` and cannot cross pytest's 0700 directories.
    """

    USERS = {"alice": "secret", "bob": "hunter2"}

    def __init__(self, directory: Path, ip: str, ports: dict, name: str, cert, key,
                 trusted: str = "127.0.0.0/8"):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.ip, self.ports, self.name = ip, ports, name
        self.homes = Path(tempfile.mkdtemp(prefix="ck-dovecot-"))
        os.chmod(self.homes, 0o711)
        for user in self.USERS:
            (self.homes / user).mkdir()
            shutil.chown(self.homes / user, "nobody", "nogroup")
        (directory / "users").write_text(
            "".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in self.USERS.items()))
        conf = directory / "dovecot.conf"
        conf.write_text(DOVECOT_CONF.format(ip=ip, dir=directory, cert=cert, key=key,
                                            homes=self.homes, trusted=trusted, name=name,
                                            **ports))
        self.log = directory / "dovecot.log"
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", str(conf)], start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            for port in ports.values():
                wait_port(ip, port, timeout=15)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"dovecot did not start: {self.log_text()}") from None

    def log_text(self) -> str:
        return self.log.read_text() if self.log.exists() else "(no log)"

    def deliver(self, user: str, message: bytes) -> None:
        """Put a message in ``user``'s INBOX directly (maildir new/)."""
        new = self.homes / user / "Maildir" / "new"
        for sub in ("new", "cur", "tmp"):
            (new.parent / sub).mkdir(parents=True, exist_ok=True)
            shutil.chown(new.parent / sub, "nobody", "nogroup")
        shutil.chown(new.parent, "nobody", "nogroup")
        path = new / f"{time.time_ns()}.{self.name}"
        path.write_bytes(message)
        shutil.chown(path, "nobody", "nogroup")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.homes, ignore_errors=True)
