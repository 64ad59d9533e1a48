"""Health across real links: a manager daemon and three nodes in network namespaces.

One node's server is stopped, another node's link is cut: each is marked down
within ``inter × fall + timeout`` (measured from the daemon's own transition
time), the third stays up, and both come back after ``rise`` checks once they
return. Needs root (the ``netns`` fixture skips otherwise).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time

from clusterkit.control import ControlError, request

INTER, TIMEOUT, RISE, FALL = 0.5, 0.4, 2, 3
PORT = 8080
CLUSTERKIT = os.path.join(os.path.dirname(sys.executable), "clusterkit")


def definition(net, state_dir) -> str:
    nodes = "".join(f'\n[[node]]\nname = "{n}"\nip = "{net.ip(n)}"\n' for n in ("node1", "node2", "node3"))
    return (f'[cluster]\nname = "netns"\nstate_dir = "{state_dir}"\n\n'
            f'[manager]\nname = "manager"\nip = "{net.ip("manager")}"\n{nodes}\n'
            f'[[policy]]\nvip = "{net.ip("manager")}"\nport = {PORT}\nservice = "http"\n'
            f'members = {{ node1 = 1, node2 = 1, node3 = 1 }}\n\n'
            f'[policy.check]\nkind = "http"\npath = "/"\ninter = {INTER}\ntimeout = {TIMEOUT}\n'
            f'rise = {RISE}\nfall = {FALL}\n')


def members(state_dir, port=PORT):
    report = request(state_dir, "status", timeout=5)
    return next(iter(report["members"].values()))


def wait(state_dir, predicate, seconds):
    deadline = time.monotonic() + seconds
    last = None
    while time.monotonic() < deadline:
        try:
            last = members(state_dir)
            if predicate(last):
                return last
        except (ControlError, KeyError, StopIteration):
            pass
        time.sleep(0.05)
    raise AssertionError(f"not reached in {seconds}s: {json.dumps(last, indent=1)}")


def since(member) -> float:
    """The transition's wall time, as the daemon recorded it."""
    return datetime.datetime.fromisoformat(member["since"].replace("Z", "+00:00")).timestamp()


def test_stopped_server_and_cut_link_are_detected_and_return(netns, tmp_path):
    net = netns(["manager", "node1", "node2", "node3"])
    servers = {n: net.popen(n, [sys.executable, "-m", "http.server", "--bind", net.ip(n), str(PORT)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for n in ("node1", "node2", "node3")}
    for n in servers:
        net.wait_port("manager", net.ip(n), PORT)
    config = tmp_path / "cluster.toml"
    config.write_text(definition(net, tmp_path / "state"))
    state_dir = str(tmp_path / "state" / "manager")
    net.popen("manager", [CLUSTERKIT, "run", "-c", str(config)],
              stderr=open(tmp_path / "daemon.log", "w"))
    wait(state_dir, lambda m: all(x["health"] == "up 4/4" for x in m.values()), 15)

    bound = INTER * FALL + TIMEOUT
    stopped = time.time()
    servers["node1"].send_signal(signal.SIGKILL)
    m = wait(state_dir, lambda m: m["node1"]["state"] == "down", 10)
    assert since(m["node1"]) - stopped <= bound, m["node1"]
    assert "Connection refused" in m["node1"]["output"]

    cut = time.time()
    net.cut("node2")
    m = wait(state_dir, lambda m: m["node2"]["state"] == "down", 10)
    assert since(m["node2"]) - cut <= bound, m["node2"]
    assert "no answer within" in m["node2"]["output"]
    assert m["node3"]["state"] == "up"

    net.restore("node2")
    servers["node1"] = net.popen("node1", [sys.executable, "-m", "http.server", "--bind",
                                           net.ip("node1"), str(PORT)], stderr=subprocess.DEVNULL)
    m = wait(state_dir, lambda m: m["node1"]["state"] == m["node2"]["state"] == "up", 15)
    assert m["node1"]["health"] == m["node2"]["health"] == "up 4/4"
    log = (tmp_path / "daemon.log").read_text()
    assert "node2 (http): up -> down: http" in log and "node2 (http): down -> up: HTTP 200" in log


