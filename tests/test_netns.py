"""The namespace harness itself: hosts reach each other, a cut link isolates a host."""

from __future__ import annotations


def test_hosts_reach_each_other_and_a_cut_isolates(netns):
    net = netns(["manager", "node1", "node2"])
    ping = ["ping", "-c", "1", "-W", "1"]
    assert net.run("manager", [*ping, net.ip("node1")]).returncode == 0
    assert net.run("node2", [*ping, net.ip("manager")]).returncode == 0
    net.cut("node1")
    assert net.run("manager", [*ping, net.ip("node1")]).returncode != 0
    assert net.run("manager", [*ping, net.ip("node2")]).returncode == 0
    net.restore("node1")
    assert net.run("manager", ["ping", "-c", "1", "-W", "3", net.ip("node1")]).returncode == 0


def test_processes_run_inside_and_are_torn_down(netns):
    net = netns(["a", "b"])
    server = net.popen("b", ["python3", "-m", "http.server", "--bind", net.ip("b"), "8088"])
    net.wait_port("a", net.ip("b"), 8088)
    fetched = net.run("a", ["python3", "-c", f"import urllib.request;print(urllib.request."
                                                 f"urlopen('http://{net.ip('b')}:8088/').status)"])
    assert fetched.stdout.strip() == "200"
    net.close()
    assert server.poll() is not None, "teardown kills what the test started"
