"""Health across real links: a manager daemon and three nodes in network namespaces.

Each node runs a real nginx. One node's server is stopped, another node's link
is cut: each is marked down within ``inter × fall + timeout`` (read from the
daemon's own transition time), the third stays up, and both come back after
``rise`` checks once they return. With a load-balancing engine installed, the
same happens under a steady bounded client load from a client namespace with
zero failed requests, and the returned nodes receive traffic again. Needs
root (the ``netns`` fixture skips otherwise).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from clusterkit.control import ControlError, request

from health_cluster import DAEMON_ENV

INTER, TIMEOUT, RISE, FALL = 0.5, 0.4, 2, 3
BOUND = INTER * FALL + TIMEOUT
PORT = 8080
NODES = ("node1", "node2", "node3")
CLUSTERKIT = os.path.join(os.path.dirname(sys.executable), "clusterkit")


def start_nginx(net, node: str, directory) -> subprocess.Popen:
    """nginx in ``node``'s namespace answering its own name; SIGQUIT stops it gracefully."""
    prefix = directory / f"nginx-{node}"
    prefix.mkdir(exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
daemon off; worker_processes 1; pid {prefix}/nginx.pid; error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
  access_log off; client_body_temp_path {prefix}/tmp;
  server {{ listen {net.ip(node)}:{PORT}; location / {{ return 200 "{node}\\n"; }} }}
}}
""")
    proc = net.popen(node, ["nginx", "-p", str(prefix), "-c", str(conf)],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    net.wait_port("manager", net.ip(node), PORT)
    return proc


def start_cluster(net, tmp_path):
    """nginx on every node, ``clusterkit run`` in the manager's namespace; returns (state dir, VIP)."""
    vip = f"{net.subnet}.100"
    net.add_address("manager", vip)
    servers = {n: start_nginx(net, n, tmp_path) for n in NODES}
    nodes = "".join(f'\n[[node]]\nname = "{n}"\nip = "{net.ip(n)}"\n' for n in NODES)
    config = tmp_path / "cluster.toml"
    config.write_text(
        f'[cluster]\nname = "netns"\nstate_dir = "{tmp_path}/state"\n\n'
        f'[manager]\nname = "manager"\nip = "{net.ip("manager")}"\npublic_ips = ["{vip}"]\n{nodes}\n'
        f'[[policy]]\nvip = "{vip}"\nport = {PORT}\nservice = "http"\nconnect_timeout = 0.3\n'
        f'members = {{ node1 = 1, node2 = 1, node3 = 1 }}\n\n'
        f'[policy.check]\nkind = "http"\npath = "/"\ninter = {INTER}\ntimeout = {TIMEOUT}\n'
        f'rise = {RISE}\nfall = {FALL}\n')
    state_dir = str(tmp_path / "state" / "manager")
    net.popen("manager", [CLUSTERKIT, "run", "-c", str(config)], env=DAEMON_ENV,
              stderr=open(tmp_path / "daemon.log", "w"))
    wait(state_dir, lambda m: all(x["health"] == "up 4/4" for x in m.values()), 15)
    return state_dir, vip, servers


def members(state_dir):
    report = request(state_dir, "status", timeout=5)
    return next(iter(report["members"].values()))["nodes"]


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


def stop_and_cut(net, state_dir, servers, tmp_path):
    """Stop node1's nginx, cut node2's link; check detection; bring both back; check return."""
    stopped = time.time()
    servers["node1"].send_signal(signal.SIGQUIT)  # graceful: in-flight requests finish
    m = wait(state_dir, lambda m: m["node1"]["state"] == "down", 10)
    assert since(m["node1"]) - stopped <= BOUND, m["node1"]
    assert "Connection refused" in m["node1"]["output"]

    cut = time.time()
    net.cut("node2")
    m = wait(state_dir, lambda m: m["node2"]["state"] == "down", 10)
    assert since(m["node2"]) - cut <= BOUND, m["node2"]
    assert "no answer within" in m["node2"]["output"]
    assert m["node3"]["state"] == "up"

    servers["node1"].wait(10)
    net.restore("node2")
    servers["node1"] = start_nginx(net, "node1", tmp_path)
    m = wait(state_dir, lambda m: m["node1"]["state"] == m["node2"]["state"] == "up", 15)
    assert m["node1"]["health"] == m["node2"]["health"] == "up 4/4"
    log = (tmp_path / "daemon.log").read_text()
    assert "node2 (http): up -> down: http" in log and "node2 (http): down -> up: HTTP 200" in log


def test_stopped_server_and_cut_link_are_detected_and_return(netns, tmp_path):
    net = netns(["manager", *NODES])
    state_dir, _, servers = start_cluster(net, tmp_path)
    stop_and_cut(net, state_dir, servers, tmp_path)


LOAD = r"""
import http.client, json, sys, time
vip, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
counts, failures, end = {}, [], time.monotonic() + seconds
while time.monotonic() < end:
    try:
        c = http.client.HTTPConnection(vip, port, timeout=15)
        c.request("GET", "/")
        r = c.getresponse()
        body = r.read().decode().strip()
        c.close()
        if r.status == 200:
            counts[body] = counts.get(body, 0) + 1
        else:
            failures.append(f"HTTP {r.status}")
    except OSError as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
    time.sleep(0.005)
print(json.dumps({"counts": counts, "failures": failures}))
"""


def test_no_client_request_fails_while_nodes_go_and_return(netns, tmp_path):
    net = netns(["manager", *NODES, "client"])
    state_dir, vip, servers = start_cluster(net, tmp_path)
    if "policies" not in request(state_dir, "status"):
        pytest.skip("no load-balancing engine is installed: only detection is tested")
    clients = [net.popen("client", [sys.executable, "-c", LOAD, vip, str(PORT), "14"],
                         stdout=subprocess.PIPE, text=True) for _ in range(3)]
    time.sleep(1.0)
    assert all(isinstance(m["active"], int) for m in members(state_dir).values())
    stop_and_cut(net, state_dir, servers, tmp_path)
    returned = time.monotonic()
    results = [json.loads(c.communicate(timeout=60)[0]) for c in clients]
    assert time.monotonic() - returned > 1.0, "the load must outlast the return"
    failures = [f for r in results for f in r["failures"]]
    assert failures == [], failures[:5]
    counts = {n: sum(r["counts"].get(n, 0) for r in results) for n in NODES}
    assert all(counts.values()), counts
    # after coming back, the two nodes received traffic again: count requests since the return
    after = [json.loads(net.run("client", [sys.executable, "-c", LOAD, vip, str(PORT), "1.5"]).stdout)]
    assert {n for r in after for n in r["counts"]} == set(NODES), after


MAIL = r"""
import json, smtplib, sys
vip, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
failures = []
for i in range(count):
    try:
        with smtplib.SMTP(vip, port, timeout=10) as s:
            s.sendmail("a@example.test", ["b@example.test"], f"Subject: {i}\r\n\r\nhello\r\n")
    except (OSError, smtplib.SMTPException) as exc:
        failures.append(f"{type(exc).__name__}: {exc}")
print(json.dumps(failures))
"""


def test_a_mail_node_that_stops_is_detected_and_mail_still_flows(netns, tmp_path):
    from clusterkit.config import registry_of
    from clusterkit.plugins import get_plugin_manager

    if "smtp" not in registry_of(get_plugin_manager()).services:
        pytest.skip("no smtp service kind is installed (the mail plugin)")
    net = netns(["manager", *NODES, "client"])
    vip = f"{net.subnet}.100"
    net.add_address("manager", vip)
    smtpd = {n: net.popen(n, [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"{net.ip(n)}:2525"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for n in NODES}
    for n in NODES:
        net.wait_port("manager", net.ip(n), 2525)
    nodes = "".join(f'\n[[node]]\nname = "{n}"\nip = "{net.ip(n)}"\n' for n in NODES)
    config = tmp_path / "cluster.toml"
    config.write_text(
        f'[cluster]\nname = "mail"\nstate_dir = "{tmp_path}/state"\n\n'
        f'[manager]\nname = "manager"\nip = "{net.ip("manager")}"\npublic_ips = ["{vip}"]\n{nodes}\n'
        f'[[policy]]\nvip = "{vip}"\nport = 25\nservice = "smtp"\nbackend_port = 2525\n'
        f'members = {{ node1 = 1, node2 = 1, node3 = 1 }}\n\n'
        f'[policy.check]\nkind = "smtp"\ninter = {INTER}\ntimeout = {TIMEOUT}\n'
        f'rise = {RISE}\nfall = {FALL}\n')
    state_dir = str(tmp_path / "state" / "manager")
    net.popen("manager", [CLUSTERKIT, "run", "-c", str(config)], env=DAEMON_ENV,
              stderr=open(tmp_path / "daemon.log", "w"))
    m = wait(state_dir, lambda m: all(x["health"] == "up 4/4" for x in m.values()), 15)
    assert m["node1"]["output"].startswith("220 ") and "EHLO 250" in m["node1"]["output"]

    stopped = time.time()
    smtpd["node1"].send_signal(signal.SIGKILL)
    m = wait(state_dir, lambda m: m["node1"]["state"] == "down", 10)
    assert since(m["node1"]) - stopped <= BOUND, m["node1"]
    sent = net.run("client", [sys.executable, "-c", MAIL, vip, "25", "30"])
    assert json.loads(sent.stdout) == [], sent.stdout

    net.popen("node1", [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"{net.ip('node1')}:2525"],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait(state_dir, lambda m: m["node1"]["state"] == "up", 15)
