"""End to end: a zone file changed on the manager is answered by every node's DNS.

Three daemons (manager, node1, node2) as subprocesses; the zone replicates as
a file of the DNS plugin's sync set, each node notices its copy changed and
calls ``clusterkit_applied``, where the DNS plugin reloads the zone.
"""

from __future__ import annotations

import time

import dns.rcode

from conftest import write_cluster
from dns_support import ask, free_port
from sync_support import Daemon

PREFIX = "127.84.6"
ADDRS = {"manager": f"{PREFIX}.1", "node1": f"{PREFIX}.11", "node2": f"{PREFIX}.12"}


def zone(serial: int, address: str) -> str:
    return (f"$TTL 60\n@ SOA ns hostmaster {serial} 3600 600 86400 60\n@ NS ns\n"
            f"ns A 192.0.2.5\nwww A {address}\n")


def answer(host: str, port: int) -> str | None:
    try:
        reply = ask("www.replicated.test", "A", ADDRS[host], port)
    except Exception:  # not listening yet, or the answer got lost: asked again
        return None
    if reply.rcode() != dns.rcode.NOERROR or not reply.answer:
        return None
    return reply.answer[0][0].address


def wait_answers(port: int, expected: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        got = {h: answer(h, port) for h in ("node1", "node2")}
        if all(v == expected for v in got.values()) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def test_a_zone_changed_on_the_manager_is_answered_by_every_node(tmp_path):
    port = free_port(ADDRS["manager"])
    config = write_cluster(tmp_path / "cluster.toml", PREFIX, nodes=2,
                           extra=f'\n[dns]\nport = {port}\nzones_dir = "/srv/zones"\n')
    zones = tmp_path / "manager" / "srv" / "zones"
    zones.mkdir(parents=True)
    with Daemon(config), Daemon(config, host="node1"), Daemon(config, host="node2"):
        assert answer("node1", port) is None  # not served anywhere yet
        (zones / "replicated.test.zone").write_text(zone(1, "192.0.2.80"))
        assert wait_answers(port, "192.0.2.80") == {"node1": "192.0.2.80", "node2": "192.0.2.80"}
        (zones / "replicated.test.zone").write_text(zone(2, "192.0.2.81"))
        assert wait_answers(port, "192.0.2.81") == {"node1": "192.0.2.81", "node2": "192.0.2.81"}
