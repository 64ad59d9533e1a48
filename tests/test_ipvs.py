"""The IPVS engine without ip_vs: what it registers and refuses, the ``ipvsadm -S -n`` lines
rendered for every scheduler, forward, persistence, weight and member state, the engine's
changes to a table (an in-memory one with the kernel adapter's methods), and the failure on a
kernel without IPVS. The kernel itself is driven in tests/test_ipvs_netns.py."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import os
import subprocess

import pytest

import clusterkit_ipvs
from clusterkit.config import Member
from clusterkit.definition.tables import ConfigError
from clusterkit.plugins import get_plugin_manager
from clusterkit_ipvs.cli import load
from clusterkit_ipvs.engine import IpvsEngine
from clusterkit_ipvs.kernel import (NO_IPVS, Counters, IpvsError, Kernel, KernelService,
                                    dest_request, read_dest, read_service, service_request)
from clusterkit_ipvs.carry import check_policy, requirements
from clusterkit_ipvs.rules import plan, render, weight
from proxy_support import cluster_text, line_of, make_cluster
from support import free_port, wait_for
from sync_support import CLUSTERKIT, Daemon

NET = "127.87.1"
VIP = f"{NET}.100"
N1, N2 = f"{NET}.11", f"{NET}.12"
HAS_IPVS = os.path.exists("/proc/net/ip_vs")


def policy_text(port: int = 80, **keys) -> str:
    keys = {"engine": "ipvs", "service": "http", **keys}
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in keys.items())
    return (f'[[policy]]\nvip = "{VIP}"\nport = {port}\nmembers = {{ node1 = 3, node2 = 1 }}\n'
            f'{extra}')


def cluster(tmp_path, *policies: str, net: str = NET):
    """The definition judged as ``policy ipvs-rules`` judges it (this kernel's IPVS aside)."""
    path = tmp_path / "cluster.toml"
    path.write_text(cluster_text(net, 2, "\n".join(policies), str(tmp_path / "state")))
    return load(str(path), get_plugin_manager())


def lines(tmp_path, states=None, **keys) -> list[str]:
    c = cluster(tmp_path, policy_text(**keys))
    return render([plan(c.policies[0], c.hosts, states or {})])


# ------------------------------------------------------------------ registration and refusals

def test_one_engine_with_dr_nat_and_tun_is_registered():
    engines = get_plugin_manager().registry.engines
    kind = engines["ipvs"]
    assert kind.forwards == ("dr", "nat", "tun")  # dr first: the default
    assert kind.schedulers == ("rr", "wrr", "lc", "wlc", "sh")
    assert kind.persistence and kind.proxy_protocols == ("",) and kind.handlers is False
    assert not {"ipvs-nat", "ipvs-tun"} & set(engines)


@pytest.mark.skipif(HAS_IPVS, reason="this kernel has IPVS")
def test_config_check_refuses_ipvs_on_a_kernel_without_it(tmp_path):
    with pytest.raises(ConfigError) as err:
        make_cluster(tmp_path, NET, 2, policy_text(), get_plugin_manager())
    assert NO_IPVS in str(err.value)
    assert str(err.value).startswith(f"{tmp_path / 'cluster.toml'}:")
    assert clusterkit_ipvs.unavailable() == NO_IPVS
    config = tmp_path / "cluster.toml"
    config.write_text(cluster_text(NET, 2, policy_text(), str(tmp_path / "state")))
    for argv in (["config", "check"], ["run"]):  # the daemon refuses to start, and says why
        done = subprocess.run([*CLUSTERKIT, *argv, "-c", str(config)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done
        assert "policy[0].engine: the kernel has no IPVS (ip_vs module not loaded): " \
               "/proc/net/ip_vs missing" in done.stderr


def refused(tmp_path, text: str) -> tuple[str, list[str]]:
    """The definition's refusal (judged as ``policy ipvs-rules`` judges it), and its lines."""
    with pytest.raises(ConfigError) as err:
        cluster(tmp_path, text)
    return str(err.value), cluster_text(NET, 2, text, str(tmp_path / "state")).splitlines()


@pytest.mark.parametrize("keys, where, message", [
    ({"backend_port": 8080}, "backend_port",
     "direct routing cannot change the port: the members must serve 80, the VIP's port, not "
     'backend_port 8080 (forward = "nat", the ipvs engine\'s NAT mode, can)'),
    ({"forward": "tun", "backend_port": 8080}, "backend_port",
     "IP-in-IP tunnelling cannot change the port: the members must serve 80"),
    ({"max_conn": 10}, "max_conn", "the ipvs engine limits connections per member only "
                                   "(member_max_conn): max_conn cannot be enforced"),
    ({"forward": "nat", "fallback": "node1"}, "fallback",
     "the ipvs engine has no fallback: a fallback needs a proxy"),
    ({"proxy_protocol": "v1"}, "engine", "engine 'ipvs' cannot send PROXY protocol v1"),
])
def test_what_ipvs_cannot_carry_is_refused_at_its_key_and_line(tmp_path, keys, where, message):
    text, lines = refused(tmp_path, policy_text(**keys))
    assert f"cluster.toml:{line_of(lines, where + ' =')}: policy[0].{where}: {message}" in text
    assert "(engines that can carry this policy: " in text


def test_config_check_names_the_line_of_each_refusal(tmp_path):
    """The CLI on a file: FILE:LINE: policy[0].KEY, exit 2 (what the policy asks is judged before
    whether this kernel has IPVS)."""
    text = policy_text(forward="tun", backend_port=8080, member_max_conn=5)
    config = tmp_path / "cluster.toml"
    config.write_text(cluster_text(NET, 2, text, str(tmp_path / "state")))
    lines = config.read_text().splitlines()
    done = subprocess.run([*CLUSTERKIT, "config", "check", "-c", str(config)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert (f"{config}:{line_of(lines, 'backend_port =')}: policy[0].backend_port: IP-in-IP "
            "tunnelling cannot change the port") in done.stderr


def test_nat_carries_another_port_and_member_limits_and_proxies_have_no_forward(tmp_path):
    c = cluster(tmp_path, policy_text(forward="nat", backend_port=8080, member_max_conn=50))
    assert c.policies[0].forward == "nat" and c.policies[0].member_max_conn == 50
    text, _ = refused(tmp_path, policy_text(forward="tun").replace('engine = "ipvs"',
                                                                    'engine = "native"'))
    assert "policy[0].forward: engine 'native' is a proxy: it has no forward = 'tun' " \
           "(engines that can carry this policy: ipvs)" in text


def test_ftp_is_refused_with_the_lvs_way_named(tmp_path):
    text, lines = refused(tmp_path, policy_text(service="ftp", port=21))
    assert f"cluster.toml:{line_of(lines, 'engine =')}: policy[0].engine: the ftp service needs " \
           "its protocol handler, which IPVS does not run (FTP's PASV/PORT rewriting)" in text
    assert "firewall mark" in text and "native engine, or nft's direct routing" in text


def test_ipv6_vips_are_not_carried(tmp_path):
    policy = dataclasses.replace(cluster(tmp_path, policy_text()).policies[0], vip="fd00::100")
    for forward in ("", "dr", "nat", "tun"):
        assert check_policy(dataclasses.replace(policy, forward=forward), None, {}) == (
            "vip", "the ipvs engine balances IPv4 VIPs only")


def test_on_the_manager_a_dr_member_off_its_subnets_is_refused(tmp_path):
    net = "10.87.1"  # not loopback: lo's subnet does not count
    c = cluster(tmp_path, policy_text().replace(NET, net), net=net)
    policy, hosts = c.policies[0], c.hosts
    manager, node1, node2 = (hosts[h].ip for h in ("manager", "node1", "node2"))
    here = [ipaddress.IPv4Interface("127.0.0.1/8"), ipaddress.IPv4Interface(f"{manager}/32"),
            ipaddress.IPv4Interface(f"{node1}/32")]
    off = ("members.node2", (
        f"node2 ({node2}) is not on a subnet of the manager's interfaces ({manager}/32, "
        f"{node1}/32): "
        "direct routing needs the node on the manager's L2 segment (forward = \"nat\" for nodes "
        "behind a router)"))
    assert check_policy(policy, None, hosts, here) == off
    assert check_policy(dataclasses.replace(policy, forward="dr"), None, hosts, here) == off
    for forward in ("nat", "tun"):  # a NAT node routes through the manager, a tunnel anywhere
        assert check_policy(dataclasses.replace(policy, forward=forward), None, hosts, here) is None
    assert check_policy(policy, None, hosts, [ipaddress.IPv4Interface(f"{manager}/24")]) is None
    elsewhere = [ipaddress.IPv4Interface("192.0.2.1/24")]  # not the manager: nothing to check
    assert check_policy(policy, None, hosts, elsewhere) is None


def segment_definition(tmp_path, net, forward: str) -> str:
    """The manager (the namespace's {subnet}.10/24), node1 beside it, node2 behind a router."""
    return (f'[cluster]\nname = "t"\nstate_dir = "{tmp_path}/state"\n\n'
            f'[manager]\nname = "manager"\nip = "{net.ip("manager")}"\n'
            f'public_ips = ["{net.subnet}.100"]\n\n'
            f'[[node]]\nname = "node1"\nip = "{net.subnet}.11"\n\n'
            f'[[node]]\nname = "node2"\nip = "192.0.2.30"\n\n'
            f'[[policy]]\nvip = "{net.subnet}.100"\nport = 80\nservice = "http"\n'
            f'engine = "ipvs"\nforward = "{forward}"\nmembers = {{ node1 = 1, node2 = 1 }}\n')


def test_config_check_on_the_manager_refuses_an_off_segment_dr_member_only(netns, tmp_path):
    """``config check`` run where the manager's address is (a namespace) reads its subnets."""
    net = netns(["manager"])
    config = tmp_path / "cluster.toml"
    config.write_text(segment_definition(tmp_path, net, "dr"))
    done = net.run("manager", [*CLUSTERKIT, "config", "check", "-c", str(config)])
    assert done.returncode == 2, done
    line = line_of(config.read_text().splitlines(), "members =")
    assert (f"{config}:{line}: policy[0].members.node2: node2 (192.0.2.30) is not on a subnet of "
            f"the manager's interfaces ({net.subnet}.0/24): direct routing needs the node on the "
            "manager's L2 segment") in done.stderr
    assert "members.node1" not in done.stderr
    for forward, flag in (("nat", "-m"), ("tun", "-i")):  # judged as config check judges it
        config.write_text(segment_definition(tmp_path, net, forward))
        done = net.run("manager", [*CLUSTERKIT, "policy", "ipvs-rules", "-c", str(config)])
        assert done.returncode == 0, done
        assert f"-a -t {net.subnet}.100:80 -r 192.0.2.30:80 {flag} -w 1" in done.stdout


def test_requirements_say_what_each_forward_needs(tmp_path):
    policy = cluster(tmp_path, policy_text()).policies[0]
    need = {f: requirements(dataclasses.replace(policy, forward=f)) for f in ("", "dr", "nat", "tun")}
    assert need[""] == need["dr"] and "manager's L2 segment" in need["dr"]
    assert "VIP on their lo" in need["dr"] and "VIP on their lo" in need["tun"]
    assert "tunl0" in need["tun"] and "modprobe ipip" in need["tun"]
    assert "through the manager" in need["nat"] and "ip_forward=1" in need["nat"]
    assert "VIP on their lo" not in need["nat"]


# ------------------------------------------------------------------ rendering

@pytest.mark.parametrize("scheduler", ["rr", "wrr", "lc", "wlc", "sh"])
def test_every_scheduler_is_ipvs_own(tmp_path, scheduler):
    assert lines(tmp_path, scheduler=scheduler) == [
        f"-A -t {VIP}:80 -s {scheduler}",
        f"-a -t {VIP}:80 -r {N1}:80 -g -w 3", f"-a -t {VIP}:80 -r {N2}:80 -g -w 1"]


@pytest.mark.parametrize("forward, flag", [("dr", "-g"), ("nat", "-m"), ("tun", "-i")])
def test_each_forward_has_its_flag(tmp_path, forward, flag):
    assert lines(tmp_path, forward=forward)[1:] == [f"-a -t {VIP}:80 -r {N1}:80 {flag} -w 3",
                                                   f"-a -t {VIP}:80 -r {N2}:80 {flag} -w 1"]


def test_nat_reaches_another_backend_port_and_member_limits(tmp_path):
    assert lines(tmp_path, forward="nat", backend_port=8080, member_max_conn=50)[1:] == [
        f"-a -t {VIP}:80 -r {N1}:8080 -m -w 3 -x 50", f"-a -t {VIP}:80 -r {N2}:8080 -m -w 1 -x 50"]


def test_persistence_is_ipvsadm_p_and_services_bring_their_default(tmp_path):
    assert lines(tmp_path, persistence=300)[0] == f"-A -t {VIP}:80 -s wrr -p 300"
    assert lines(tmp_path, persistence=0)[0] == f"-A -t {VIP}:80 -s wrr"
    assert lines(tmp_path, service="https", port=443)[0].endswith(" -p 300")  # https's default


def test_member_states_weights_and_slow_start(tmp_path):
    states = {"node1": ("drain", 1.0), "node2": ("up", 0.5)}
    assert lines(tmp_path, states=states)[1:] == [f"-a -t {VIP}:80 -r {N1}:80 -g -w 0",
                                                  f"-a -t {VIP}:80 -r {N2}:80 -g -w 1"]
    for gone in ("down", "maintenance"):  # out of the table (once idle)
        assert lines(tmp_path, states={"node1": (gone, 1.0)})[1:] == [
            f"-a -t {VIP}:80 -r {N2}:80 -g -w 1"]
    assert lines(tmp_path, states={"node1": ("down", 1.0), "node2": ("down", 1.0)}) == [
        f"-A -t {VIP}:80 -s wrr"]
    assert [weight(100, "up", f) for f in (0.0, 0.001, 0.25, 1.0)] == [0, 1, 25, 100]
    assert weight(0, "up") == 0 and weight(5, "drain") == 0 and weight(256, "up") == 256


def test_the_command_prints_what_a_definition_asks(tmp_path):
    config = tmp_path / "cluster.toml"
    config.write_text(cluster_text(NET, 2, policy_text(scheduler="wlc", persistence=60,
                                                       forward="tun") + "\n"
                                   + policy_text(81, engine="native", backend_port=8081),
                                   str(tmp_path / "state")))

    def run(*args):
        return subprocess.run([*CLUSTERKIT, "policy", "ipvs-rules", "-c",
                               str(config), *args], capture_output=True, text=True, timeout=60)
    done = run()
    assert done.returncode == 0, done.stderr
    own = [f"-A -t {VIP}:80 -s wlc -p 60", f"-a -t {VIP}:80 -r {N1}:80 -i -w 3",
           f"-a -t {VIP}:80 -r {N2}:80 -i -w 1"]
    assert done.stdout.splitlines() == own
    done = run("--all")  # the native policy as DR would carry it: not to another port
    assert done.returncode == 2 and done.stdout.splitlines() == own
    assert f"policy {VIP}:81: backend_port: direct routing cannot change the port" in done.stderr
    done = run("--all", "--mode", "nat")  # as NAT would carry it; the ipvs policy keeps its own
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == own + [f"-A -t {VIP}:81 -s wrr",
                                              f"-a -t {VIP}:81 -r {N1}:8081 -m -w 3",
                                              f"-a -t {VIP}:81 -r {N2}:8081 -m -w 1"]
    assert run("--mode", "gre").returncode == 2


def test_the_command_takes_member_states_from_the_running_daemon(tmp_path):
    """A real manager daemon (native engine) with node2's service absent: health takes it down,
    and the rules rendered with --live leave it out."""
    import socket
    port = free_port(N1)
    server = socket.create_server((N1, port))
    text = (f'[[policy]]\nvip = "{VIP}"\nport = {port}\nservice = "http"\n'
            'members = { node1 = 2, node2 = 1 }\n'
            'check = { kind = "tcp", inter = 0.1, timeout = 0.2, rise = 1, fall = 1 }\n')
    config = tmp_path / "cluster.toml"
    text = cluster_text(NET, 2, text, str(tmp_path / "state"))
    for host, ip in (("manager", f"{NET}.1"), ("node1", N1), ("node2", N2)):  # files under tmp_path
        (tmp_path / host).mkdir()
        text = text.replace(f'ip = "{ip}"\n', f'ip = "{ip}"\nroot = "{tmp_path}/{host}"\n')
    config.write_text(text)
    with Daemon(config) as daemon:
        key = f"{VIP}:{port}"
        wait_for(lambda: daemon.query("status")["policies"][key]["members"]["node2"]["state"]
                 == "down", what="node2 down")
        done = subprocess.run([*CLUSTERKIT, "policy", "ipvs-rules", "-c",
                               str(config), "--all", "--live"], capture_output=True, text=True,
                              timeout=60)
    server.close()
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"-A -t {VIP}:{port} -s wrr",
                                        f"-a -t {VIP}:{port} -r {N1}:{port} -g -w 2"]


# ------------------------------------------------------------------ netlink messages

def message(**attrs):
    """An IPVS generic-netlink message as the kernel sends it (encoded, then decoded)."""
    from pyroute2.netlink.generic import ipvs
    msg = ipvs.ipvsmsg()
    msg["cmd"], msg["version"] = ipvs.IPVS_CMD_GET_SERVICE, 1
    msg["attrs"] = list(attrs.items())
    msg.encode()
    back = ipvs.ipvsmsg(msg.data)
    back.decode()
    return back


def test_what_is_sent_for_a_service_is_read_back(tmp_path):
    c = cluster(tmp_path, policy_text(scheduler="sh", persistence=300))
    service = plan(c.policies[0], c.hosts, {})
    sent = service_request(service.vip, service.port, service).dump_nla()
    assert ("IPVS_SVC_ATTR_FLAGS", {"flags": 1, "mask": 0xFFFF}) in sent["attrs"]  # persistent
    assert read_service(message(IPVS_CMD_ATTR_SERVICE=sent)) == (
        (VIP, 80), KernelService("sh", 300))
    plain = dataclasses.replace(service, persistence=0)
    sent = service_request(plain.vip, plain.port, plain).dump_nla()
    assert read_service(message(IPVS_CMD_ATTR_SERVICE=sent)) == ((VIP, 80), KernelService("sh", 0))
    udp = {"attrs": [(k, 17 if k == "IPVS_SVC_ATTR_PROTOCOL" else v) for k, v in sent["attrs"]]}
    assert read_service(message(IPVS_CMD_ATTR_SERVICE=udp)) is None      # not ours to read
    mark = {"attrs": [("IPVS_SVC_ATTR_AF", 2), ("IPVS_SVC_ATTR_FWMARK", 7),
                      ("IPVS_SVC_ATTR_PROTOCOL", 6)]}
    assert read_service(message(IPVS_CMD_ATTR_SERVICE=mark)) is None     # a firewall-mark one


def test_a_destination_and_its_counters_are_read_back(tmp_path):
    c = cluster(tmp_path, policy_text(forward="nat", backend_port=8080, member_max_conn=9))
    service = plan(c.policies[0], c.hosts, {"node1": ("up", 0.5)})
    sent = dest_request(service.dests[0], service.fwd_method).dump_nla()
    sent["attrs"] += [("IPVS_DEST_ATTR_ACTIVE_CONNS", 4), ("IPVS_DEST_ATTR_INACT_CONNS", 2),
                      ("IPVS_DEST_ATTR_STATS64", {"attrs": [
                          ("IPVS_STATS_ATTR_CONNS", 120), ("IPVS_STATS_ATTR_INPKTS", 900),
                          ("IPVS_STATS_ATTR_OUTPKTS", 800), ("IPVS_STATS_ATTR_INBYTES", 2 ** 40),
                          ("IPVS_STATS_ATTR_OUTBYTES", 7)]})]
    assert read_dest(message(IPVS_CMD_ATTR_DEST=sent)) == ((N1, 8080), Counters(
        weight=2, fwd_method=0, u_thresh=9, active=4, inactive=2, conns=120, packets_in=900,
        packets_out=800, bytes_in=2 ** 40, bytes_out=7))
    assert read_dest(message()) is None


def test_the_nodes_put_the_vip_on_lo_for_dr_and_tun_only(tmp_path):
    from clusterkit_directroute import dr_vips
    engines = {"ipvs": clusterkit_ipvs.KIND}  # the node side needs no other engine (nor nft)
    for keys in ({}, {"forward": "dr"}, {"forward": "tun"}):  # dr: the ipvs engine's default
        c = cluster(tmp_path, policy_text(**keys))
        assert dr_vips(c, "node1", engines) == [VIP] and dr_vips(c, "node2", engines) == [VIP]
        assert dr_vips(c, "manager", engines) == []  # not a member
    assert dr_vips(cluster(tmp_path, policy_text(forward="nat")), "node1", engines) == []


# ------------------------------------------------------------------ the engine on a table

FLAGS = {3: "-g", 0: "-m", 2: "-i"}


class Table:
    """An IPVS table in memory, with :class:`~clusterkit_ipvs.kernel.Kernel`'s methods."""

    def __init__(self):
        self.known: dict[tuple[str, int], KernelService] = {}
        self.refuse: set[int] = set()  # ports whose service the "kernel" refuses
        self.table: dict[tuple[str, int], dict[tuple[str, int], Counters]] = {}
        self.closed = False

    def services(self):
        return dict(self.known)

    def add_service(self, s):
        assert (s.vip, s.port) not in self.known
        if s.port in self.refuse:
            raise IpvsError("IPVS: (22, 'Invalid argument')")
        self.known[(s.vip, s.port)] = KernelService(s.scheduler, s.persistence)
        self.table[(s.vip, s.port)] = {}

    def edit_service(self, s):
        self.known[(s.vip, s.port)] = KernelService(s.scheduler, s.persistence)

    def delete_service(self, vip, port):
        del self.known[(vip, port)], self.table[(vip, port)]

    def dests(self, vip, port):
        return dict(self.table[(vip, port)])

    def add_dest(self, s, d):
        self.table[(s.vip, s.port)][(d.address, d.port)] = Counters(
            d.weight, s.fwd_method, d.u_thresh, 0, 0, 0, 0, 0, 0, 0)

    def edit_dest(self, s, d):
        old = self.table[(s.vip, s.port)][(d.address, d.port)]
        self.table[(s.vip, s.port)][(d.address, d.port)] = dataclasses.replace(
            old, weight=d.weight, fwd_method=s.fwd_method, u_thresh=d.u_thresh)

    def delete_dest(self, vip, port, address, dport):
        del self.table[(vip, port)][(address, dport)]

    def activity(self, vip, port, address, active):
        dests = self.table[(vip, port)]
        dests[(address, port)] = dataclasses.replace(dests[(address, port)], active=active,
                                                     conns=active + 10, bytes_in=1000)

    def close(self):
        self.closed = True

    def lines(self) -> list[str]:
        out = []
        for (vip, port), s in self.known.items():
            out.append(f"-A -t {vip}:{port} -s {s.scheduler}" + (f" -p {s.persistence}" if s.persistence else ""))
            for (addr, dport), c in self.table[(vip, port)].items():
                out.append(f"-a -t {vip}:{port} -r {addr}:{dport} {FLAGS[c.fwd_method]} -w {c.weight}"
                           + (f" -x {c.u_thresh}" if c.u_thresh else ""))
        return out


def engine_on(tmp_path, *policies, poll=0.05):
    c = cluster(tmp_path, *policies)
    table = Table()
    return IpvsEngine(kernel=table, poll=poll), table, c


def test_the_engine_programs_what_is_rendered_and_follows_member_states(tmp_path):
    async def scenario():
        engine, table, c = engine_on(tmp_path, policy_text(scheduler="wlc", persistence=120))
        await engine.apply(c)
        assert table.lines() == render(engine.rules())
        assert table.lines() == [f"-A -t {VIP}:80 -s wlc -p 120",
                                 f"-a -t {VIP}:80 -r {N1}:80 -g -w 3",
                                 f"-a -t {VIP}:80 -r {N2}:80 -g -w 1"]
        await engine.set_member_state(f"{VIP}:80", "node2", "drain")   # stays, weight 0
        assert table.lines()[2] == f"-a -t {VIP}:80 -r {N2}:80 -g -w 0"
        await engine.set_member_state(f"{VIP}:80", "node2", "up", 0.34)  # slow start steps
        assert table.lines()[2] == f"-a -t {VIP}:80 -r {N2}:80 -g -w 1"
        await engine.set_member_state(f"{VIP}:80", "node1", "up", 0.34)
        assert table.lines()[1] == f"-a -t {VIP}:80 -r {N1}:80 -g -w 1"
        await engine.set_member_state(f"{VIP}:80", "node1", "up", 1.0)
        table.activity(VIP, 80, N1, active=2)
        await engine.set_member_state(f"{VIP}:80", "node1", "down")    # weight 0 while busy
        assert table.lines()[1] == f"-a -t {VIP}:80 -r {N1}:80 -g -w 0"
        member = engine.stats()[f"{VIP}:80"]["members"]["node1"]
        assert member["leaving"] and member["active"] == 2 and member["total"] == 12
        assert member["bytes_in"] == 1000 and member["state"] == "down"
        await asyncio.sleep(0.3)
        assert len(table.lines()) == 3                                  # still busy: kept
        table.activity(VIP, 80, N1, active=0)
        await wait_async(lambda: len(table.lines()) == 2)               # idle: removed
        assert table.lines() == render(engine.rules())
        await engine.set_member_state(f"{VIP}:80", "node1", "up")
        assert table.lines()[2] == f"-a -t {VIP}:80 -r {N1}:80 -g -w 3"
        await engine.close(1)
        assert table.lines() == [] and table.closed
    asyncio.run(scenario())


def test_a_reload_changes_services_in_place_and_leaves_the_operators_alone(tmp_path):
    async def scenario():
        engine, table, c = engine_on(tmp_path, policy_text())
        table.known[("10.0.0.1", 25)] = KernelService("rr", 0)  # the operator's own
        table.table[("10.0.0.1", 25)] = {}
        await engine.apply(c)
        c2 = cluster(tmp_path, policy_text(scheduler="lc", persistence=30).replace(
            "node1 = 3, node2 = 1", "node1 = 3"))
        table.activity(VIP, 80, N2, active=1)
        await engine.apply(c2)
        assert table.lines() == [f"-A -t 10.0.0.1:25 -s rr", f"-A -t {VIP}:80 -s lc -p 30",
                                 f"-a -t {VIP}:80 -r {N1}:80 -g -w 3",
                                 f"-a -t {VIP}:80 -r {N2}:80 -g -w 0"]  # out of it: leaves
        table.activity(VIP, 80, N2, active=0)
        await wait_async(lambda: len(table.lines()) == 3)
        await engine.apply(dataclasses.replace(c2, policies=()))
        assert table.lines() == ["-A -t 10.0.0.1:25 -s rr"]
        await engine.close(1)
        assert table.lines() == ["-A -t 10.0.0.1:25 -s rr"]
    asyncio.run(scenario())


def test_a_service_the_kernel_refuses_is_left_out_and_named(tmp_path):
    async def scenario():
        engine, table, c = engine_on(tmp_path, policy_text(80), policy_text(81))
        table.refuse.add(81)
        with pytest.raises(IpvsError, match=f"policy {VIP}:81: IPVS: .*Invalid argument"):
            await engine.apply(c)  # the first apply: the daemon stops with the reason
        await engine.apply(c)      # later: the others are carried, the refused one says why
        stats = engine.stats()
        assert stats[f"{VIP}:80"]["listening"] and "error" not in stats[f"{VIP}:80"]
        assert stats[f"{VIP}:81"] == {"engine": "ipvs", "listening": False,
                                      "error": f"policy {VIP}:81: IPVS: (22, 'Invalid argument')"}
        assert [line for line in table.lines() if line.startswith("-A")] == [f"-A -t {VIP}:80 -s wrr"]
        await engine.close(0.1)
    asyncio.run(scenario())


def test_close_quiesces_and_waits_for_connections_up_to_its_timeout(tmp_path):
    async def scenario():
        engine, table, c = engine_on(tmp_path, policy_text())
        await engine.apply(c)
        table.activity(VIP, 80, N1, active=1)
        closing = asyncio.ensure_future(engine.close(5))
        await wait_async(lambda: all(" -w 0" in line for line in table.lines()[1:]))
        await asyncio.sleep(0.2)
        assert not closing.done() and len(table.lines()) == 3
        table.activity(VIP, 80, N1, active=0)
        await asyncio.wait_for(closing, 5)
        assert table.lines() == []
    asyncio.run(scenario())


@pytest.mark.skipif(HAS_IPVS, reason="this kernel has IPVS")
def test_apply_on_a_kernel_without_ipvs_fails_loudly_then_reports(tmp_path, caplog):
    async def scenario():
        c = cluster(tmp_path, policy_text())
        engine = IpvsEngine(kernel=Kernel())
        with pytest.raises(IpvsError, match="the kernel has no IPVS \\(ip_vs module not loaded\\)"):
            await engine.apply(c)
        await engine.apply(c)  # a later apply keeps the daemon up and says why in status and log
        stats = engine.stats()[f"{VIP}:80"]
        assert stats["error"] == NO_IPVS and stats["listening"] is False
        assert NO_IPVS in caplog.text
        from clusterkit.cli.summary import summarize
        summary = summarize(get_plugin_manager(), {"policies": engine.stats()})
        assert f"{VIP}:80: {NO_IPVS}" in summary.problems           # clusterkit status says why
        await engine.close(0.1)
    asyncio.run(scenario())


async def wait_async(predicate, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def test_members_without_a_host_are_left_out_of_the_plan(tmp_path):
    c = cluster(tmp_path, policy_text())
    policy = dataclasses.replace(c.policies[0], members=(Member("ghost", 1),))
    assert render([plan(policy, c.hosts, {})]) == [f"-A -t {VIP}:80 -s wrr"]
