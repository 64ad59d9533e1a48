"""Reloading an ftp policy: a new passive range applies to new sessions, a bad one is refused."""

from __future__ import annotations

import ftplib

from mailftp_support import Daemon, FtpNode, cluster_file, common_port, free_port

NET = "127.85.6"
VIP = f"{NET}.100"
NODE = f"{NET}.11"


def policy(public: int, port: int, passive: str) -> str:
    return (f'[[policy]]\nvip = "{VIP}"\nport = {public}\nservice = "ftp"\n'
            f'backend_port = {port}\nmembers = {{node1 = 1}}\n'
            f'options = {{passive_ports = "{passive}", ftps_passive_ports = "54100-54109"}}\n')


def pasv_port(public: int) -> int:
    with ftplib.FTP() as client:
        client.connect(VIP, public, timeout=10)
        client.login("u", "p")
        return ftplib.parse227(client.sendcmd("PASV"))[1]


def test_reload_changes_the_range_for_new_sessions_and_refuses_a_bad_one(tmp_path):
    port = common_port([NODE])
    node = FtpNode(NODE, port, tmp_path / "node1")
    public = free_port(VIP)
    try:
        config = cluster_file(tmp_path, NET, 1, policy(public, port, "54000-54000"))
        daemon = Daemon(config)
        try:
            assert pasv_port(public) == 54000
            cluster_file(tmp_path, NET, 1, policy(public, port, "54001-54001"))
            assert daemon.call(daemon.runtime.reload())["changed"]
            assert pasv_port(public) == 54001
            cluster_file(tmp_path, NET, 1, policy(public, port, "54001-54000"))
            result = daemon.call(daemon.runtime.reload())
            assert not result["reloaded"] and "policy[0].options.passive_ports" in result["error"]
            assert pasv_port(public) == 54001  # the running definition stays
        finally:
            daemon.stop()
    finally:
        node.stop()
