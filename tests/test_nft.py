"""The nft engine without a kernel: what it registers and refuses, the bucket table's
movement and shares, and the transaction text it hands ``nft -f``."""

from __future__ import annotations

import dataclasses
import ipaddress
from collections import Counter

import pytest

import clusterkit_nft
from clusterkit.definition.tables import ConfigError
from clusterkit.plugins import get_plugin_manager
from clusterkit_nft.buckets import fill
from clusterkit_nft.carry import check_policy, passive_range, requirements
from clusterkit_nft.engine import NftEngine, nft_objects, objects
from clusterkit_nft.ruleset import Member, PolicyPlan, ct_mark, removal, render
from proxy_support import cluster_text, line_of, make_cluster, plugin_manager

NET = "127.86.1"


def policy_text(**keys) -> str:
    keys = {"engine": "nft", "service": "http", **keys}
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in keys.items())
    return (f'[[policy]]\nvip = "{NET}.100"\nport = 80\nmembers = {{ node1 = 1, node2 = 1 }}\n'
            f'{extra}')


def test_the_engine_is_registered_through_its_entry_point():
    kind = get_plugin_manager().registry.engines["nft"]
    assert kind.schedulers == ("rr", "wrr", "sh") and kind.proxy_protocols == ("",)
    assert kind.handlers is False and kind.persistence is True


@pytest.mark.parametrize("keys, message", [
    ({"scheduler": "lc"}, "engine 'nft' has no scheduler 'lc'"),
    ({"scheduler": "wlc"}, "engine 'nft' has no scheduler 'wlc'"),
    ({"proxy_protocol": "v2"}, "engine 'nft' cannot send PROXY protocol v2"),
])
def test_what_the_kernel_cannot_do_is_refused_by_the_definition(tmp_path, keys, message):
    with pytest.raises(ConfigError) as err:
        make_cluster(tmp_path, NET, 2, policy_text(**keys), plugin_manager(clusterkit_nft))
    assert message in str(err.value)


def refused(tmp_path, text: str, pm=None) -> tuple[str, list[str]]:
    """The definition's refusal, and its lines (for the line numbers it names)."""
    with pytest.raises(ConfigError) as err:
        make_cluster(tmp_path, NET, 2, text, pm or plugin_manager(clusterkit_nft))
    return str(err.value), cluster_text(NET, 2, text, str(tmp_path / "state")).splitlines()


@pytest.mark.parametrize("keys, where, message", [
    ({"backend_port": 8080}, "backend_port",
     "direct routing cannot change the port: the members must serve 80, the VIP's port, not "
     'backend_port 8080 (forward = "nat", the nft engine\'s NAT mode, can)'),
    ({"max_conn": 10}, "max_conn", "the nft engine keeps no connection state: "
                                   "max_conn/member_max_conn cannot be enforced"),
    ({"fallback": "node1"}, "fallback", "the nft engine has no fallback: a fallback needs a proxy"),
])
def test_what_the_nft_engine_cannot_carry_is_refused_at_its_key_and_line(tmp_path, keys, where,
                                                                          message):
    text, lines = refused(tmp_path, policy_text(**keys))
    assert (f"cluster.toml:{line_of(lines, where + ' =')}: policy[0].{where}: {message} "
            "(engines that can carry this policy: native)") in text


def test_nat_mode_carries_another_backend_port_and_proxies_have_no_forward(tmp_path):
    pm = plugin_manager(clusterkit_nft)
    cluster = make_cluster(tmp_path, NET, 2, policy_text(forward="nat", backend_port=8080), pm)
    assert cluster.policies[0].forward == "nat"
    text, lines = refused(tmp_path, policy_text(engine="native", forward="dr"))
    assert (f"cluster.toml:{line_of(lines, 'forward =')}: policy[0].forward: engine 'native' is a "
            "proxy: it has no forward = 'dr' (engines that can carry this policy: nft)") in text
    text, _ = refused(tmp_path, policy_text(forward="tun"))
    assert "engine 'nft' forwards by dr, nat only: it has no forward = 'tun' (engines that can " \
           "carry this policy: none)" in text
    text, _ = refused(tmp_path, policy_text(forward="masquerade"))
    assert "policy[0].forward: unknown forward 'masquerade' (known: dr, nat, tun)" in text


def ftp_text(**keys) -> str:
    keys = {"engine": "nft", "service": "ftp", **keys}
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in keys.items())
    return (f'[[policy]]\nvip = "{NET}.100"\nport = 21\nmembers = {{ node1 = 1, node2 = 1 }}\n'
            f'{extra}')


PASSIVE = '{ passive_ports = "30000-30100" }'


@pytest.mark.parametrize("keys, where, message", [
    ({"persistence": 0, "options": PASSIVE}, "persistence",
     'FTP through direct routing needs persistence (or scheduler "sh"): the client address alone '
     "must pick the node, so that its data connections reach the node of its control connection"),
    ({}, "options.passive_ports",  # the ftp service's persistence (300 s) is there
     "FTP through direct routing needs the nodes' passive port range declared "
     '(options.passive_ports = "30000-30100", the range the FTP servers on the nodes use, with the '
     "VIP as the address they announce): the engine forwards it too"),
    ({"forward": "nat", "options": PASSIVE}, "forward",
     'FTP through the nft engine needs direct routing (forward = "dr"): NAT mode would need the '
     "PASV rewriting of a protocol handler"),
])
def test_ftp_on_nft_needs_direct_routing_persistence_and_the_passive_range(tmp_path, keys, where,
                                                                          message):
    import clusterkit_ftp

    text = ftp_text(**keys).replace(f'options = "{PASSIVE}"', f"options = {PASSIVE}")
    error, _ = refused(tmp_path, text, plugin_manager(clusterkit_nft, clusterkit_ftp))
    able = "none" if "forward" in keys else "native"  # a proxy has no forward
    assert f"policy[0].{where}: {message} (engines that can carry this policy: {able})" in error


def test_ftp_with_persistence_and_the_passive_range_is_carried_with_the_range(tmp_path):
    import clusterkit_ftp

    text = ftp_text(scheduler="sh").replace('scheduler = "sh"',
                                            f'scheduler = "sh"\noptions = {PASSIVE}')
    cluster = make_cluster(tmp_path, NET, 2, text, plugin_manager(clusterkit_nft, clusterkit_ftp))
    policy = cluster.policies[0]
    assert check_policy(policy, None, cluster.hosts) is None
    assert passive_range(policy) == (30000, 30100)
    assert "passive ports 30000-30100" in requirements(policy)


def test_ipv6_vips_are_not_carried(tmp_path):
    cluster = make_cluster(tmp_path, NET, 2, policy_text(), plugin_manager(clusterkit_nft))
    policy = dataclasses.replace(cluster.policies[0], vip="fd00::100")
    assert check_policy(policy, None, cluster.hosts) == ("vip", "the nft engine balances IPv4 "
                                                                "VIPs only")


def test_on_the_manager_a_dr_member_off_its_subnets_is_refused(tmp_path):
    text = policy_text().replace(NET, "10.86.1")
    cluster = make_cluster(tmp_path, "10.86.1", 2, text, plugin_manager(clusterkit_nft))
    policy, hosts = cluster.policies[0], cluster.hosts
    manager = hosts["manager"].ip
    here = [ipaddress.IPv4Interface("127.0.0.1/8"), ipaddress.IPv4Interface(f"{manager}/32"),
            ipaddress.IPv4Interface(f"{hosts['node1'].ip}/32")]  # lo's subnet does not count
    assert check_policy(policy, None, hosts, here) == ("members.node2", (
        f"node2 ({hosts['node2'].ip}) is not on a subnet of the manager's interfaces "
        f"({manager}/32, {hosts['node1'].ip}/32): direct routing needs the node on the "
        "manager's L2 segment (forward = \"nat\" for nodes behind a router)"))
    assert check_policy(policy, None, hosts, [ipaddress.IPv4Interface(f"{manager}/24")]) is None
    elsewhere = [ipaddress.IPv4Interface("192.0.2.1/24")]  # not the manager: nothing to check
    assert check_policy(policy, None, hosts, elsewhere) is None
    nat = dataclasses.replace(policy, forward="nat")
    assert check_policy(nat, None, hosts, here) is None


def test_config_check_says_what_dr_and_nat_need(tmp_path):
    from typer.testing import CliRunner

    from clusterkit.cli import get_app

    config = tmp_path / "cluster.toml"
    config.write_text(cluster_text(NET, 2, policy_text() + policy_text(forward="nat").replace(
        "port = 80", "port = 81"), str(tmp_path / "state")))
    result = CliRunner().invoke(get_app(plugin_manager(clusterkit_nft)),
                                ["config", "check", "-c", str(config)])
    assert result.exit_code == 0, result.output
    assert (f"note: policy {NET}.100:80 (engine nft): direct routing: the members must be on the "
            "manager's L2 segment, serve the VIP's port, and run clusterkit's node daemon, which "
            "puts the VIP on their lo with arp_ignore=1/arp_announce=2") in result.output
    assert (f"note: policy {NET}.100:81 (engine nft): NAT: the nodes must route their replies to "
            "clients through the manager") in result.output


def test_weights_are_bucket_shares():
    shares = Counter(fill({"a": 3, "b": 1}))
    assert abs(shares["a"] / 4096 - 0.75) < 0.03, shares
    assert fill({"a": 0, "b": 0}) == [None] * 4096


def test_a_member_leaving_moves_its_buckets_only():
    before = fill({"a": 1, "b": 2, "c": 1})
    after = fill({"a": 1, "c": 1})
    moved = [i for i, (x, y) in enumerate(zip(before, after)) if x != y]
    assert moved and all(before[i] == "b" for i in moved)
    assert fill({"a": 1, "b": 2, "c": 1}) == before  # the same table every time (no seed state)
    grown = fill({"a": 1, "b": 2, "c": 1, "d": 1})  # a member joining takes buckets, moves no other
    assert all(y == "d" for x, y in zip(before, grown) if x != y)


def plan(**keys) -> PolicyPlan:
    members = [Member("m0_0", "node1", "02:00:00:00:00:11", "eth0"),
               Member("m0_1", "node2", "02:00:00:00:00:12", "eth0")]
    keys = {"by_client": False, "device": "eth0", "members": members,
            "new": ["m0_0", "m0_1", None, "m0_1"], **keys}
    return PolicyPlan(0, "10.1.1.100:80", "10.1.1.100", 80, **keys)


MACS = {"eth0": "02:00:00:00:00:01"}


def test_the_first_transaction_replaces_any_table_of_that_name():
    text, declared = render([plan()], MACS)
    first, second, third = text.splitlines()[:3]
    assert (first, second, third) == ("table netdev clusterkit {}", "delete table netdev clusterkit",
                                      "table netdev clusterkit {")
    assert "table ip clusterkit {}\ndelete table ip clusterkit\ntable ip clusterkit {\n}\n" in text
    assert "elements = { 0 : goto m0_0, 1 : goto m0_1, 3 : goto m0_1 }" in text  # 2 has no member
    assert "\tcounter c0_0 {\n\t}" in text and "counter name \"c0_0\"" in text
    assert ('ether saddr set 02:00:00:00:00:01 ether daddr set 02:00:00:00:00:12 fwd to "eth0"'
            in text)
    assert 'type filter hook ingress device "eth0" priority 0' in text
    assert "ip daddr . tcp dport vmap { 10.1.1.100 . 80 : goto p0 }" in text
    assert "jhash ip saddr . tcp sport mod 4 " in text and "set f0" not in text
    assert {"netdev map n0", "netdev chain m0_0", "netdev chain m0_1", "netdev counter c0_1",
            "netdev chain p0", "netdev chain in0"} <= set(declared)
    assert removal() == ("table netdev clusterkit {}\ndelete table netdev clusterkit\n"
                         "table ip clusterkit {}\ndelete table ip clusterkit\n")


def test_later_transactions_keep_counters_and_delete_only_what_is_gone():
    _, declared = render([plan(old=["m0_0"] * 4)], MACS)
    one = plan(members=[Member("m0_0", "node1", "02:00:00:00:00:11", "eth1")], new=["m0_0"] * 4,
               device="eth1")
    text, _ = render([one], {"eth1": "02:00:00:00:00:02"}, declared)
    lines = text[:text.index("table ip clusterkit {}")].splitlines()
    assert lines[:2] == ["table netdev clusterkit {}", "flush table netdev clusterkit"]
    assert "delete table" not in text
    flushes = [i for i, line in enumerate(lines) if line.startswith("flush map")]
    deletes = [line for line in lines if line.startswith("delete ")]
    assert sorted(lines[i] for i in flushes) == ["flush map netdev clusterkit n0",
                                                 "flush map netdev clusterkit o0"]
    assert deletes == ["delete map netdev clusterkit o0", "delete set netdev clusterkit f0",
                       "delete chain netdev clusterkit m0_1",
                       "delete chain netdev clusterkit in0",  # now on eth1: declared anew
                       "delete counter netdev clusterkit c0_1", "delete counter netdev clusterkit s0_1"]
    assert max(flushes) < lines.index(deletes[0])  # no map still points at a deleted chain
    assert "\tcounter c0_0 {\n\t}" in text  # declared again: an existing counter keeps its values


def test_a_drain_keeps_old_flows_on_the_old_table():
    text, _ = render([plan(old=["m0_0", "m0_0", None, "m0_1"])], MACS)
    assert "tcp flags & (syn | ack) == syn update @f0 { ip saddr . tcp sport }" in text
    assert "set f0 {\n\t\ttype ipv4_addr . inet_service\n\t\tsize 65536" in text
    rules = text[text.index("chain p0"):].splitlines()
    assert "ip saddr . tcp sport @f0 update @f0" in rules[2]  # a recorded new flow
    assert rules[2].strip().endswith("meta mark vmap @n0")
    assert rules[3].strip().endswith("meta mark vmap @o0")


def test_sh_hashes_the_client_address_alone():
    text, _ = render([plan(by_client=True, old=["m0_0"] * 4)], MACS)
    assert "jhash ip saddr mod 4 " in text and "type ipv4_addr\n" in text


def test_nat_dnats_new_connections_and_counts_each_members_packets_by_ct_mark():
    members = [Member("m1_0", "node1", address="10.2.2.11:8080"),
               Member("m1_1", "node2", address="10.2.2.12:8080")]
    nat = PolicyPlan(1, "10.1.1.100:81", "10.1.1.100", 81, by_client=True, device="",
                     members=members, new=["m1_0", "m1_1"], nat=True)
    text, declared = render([plan(), nat], MACS)
    dr, ip = text.split("table ip clusterkit {}\n")
    assert "p1" not in dr and "table netdev clusterkit {" in dr
    assert "type nat hook prerouting priority dstnat; policy accept;" in ip
    assert "ip daddr . tcp dport vmap { 10.1.1.100 . 81 : goto p1 }" in ip
    assert "jhash ip saddr mod 2 seed 0x636b meta mark vmap @n1" in ip
    marks = [ct_mark(m) for m in members]
    assert marks[0] != marks[1] and 0 not in marks
    assert f"meta mark set 0 ct mark set {marks[1]:#x} dnat to 10.2.2.12:8080" in ip  # after tcp
    assert ("chain forwarded {\n\t\ttype filter hook forward priority 0; policy accept;\n"
            "\t\tct direction original "
            f'counter name ct mark map {{ {marks[0]:#x} : "c1_0", {marks[1]:#x} : "c1_1" }}') in ip
    assert {"ip map n1", "ip chain pre", "ip chain forwarded", "ip counter c1_0"} <= set(declared)
    again, _ = render([nat], MACS, declared)  # DR gone, NAT kept: only the DR objects deleted
    assert "flush map ip clusterkit n1" in again and "delete map netdev clusterkit n0" in again
    assert "delete map ip" not in again and "delete counter ip" not in again


def test_dr_dispatches_ftp_passive_ports_to_the_same_chain():
    text, _ = render([plan(by_client=True, ports=(30000, 30100))], MACS)
    assert ("ip daddr . tcp dport vmap { 10.1.1.100 . 80 : goto p0, "
            "10.1.1.100 . 30000-30100 : goto p0 }") in text


def test_only_direct_routing_puts_the_vip_on_the_nodes_lo(tmp_path):
    from clusterkit_directroute import dr_vips

    text = policy_text() + policy_text(forward="nat").replace("port = 80", "port = 81")
    pm = plugin_manager(clusterkit_nft)
    cluster = make_cluster(tmp_path, NET, 2, text, pm)
    assert dr_vips(cluster, "node1", pm.registry.engines) == [f"{NET}.100"]
    nat_only = dataclasses.replace(cluster, policies=cluster.policies[1:])
    assert dr_vips(nat_only, "node1", pm.registry.engines) == []


def test_a_set_member_state_before_any_apply_is_remembered():
    engine = NftEngine(prefix=("false",))
    assert engine.set_member_state("10.1.1.100:80", "node1", "drain") is None
    assert engine.states[("10.1.1.100:80", "node1")] == ("drain", 1.0)
    with pytest.raises(ValueError):
        engine.set_member_state("10.1.1.100:80", "node1", "sleepy")


FAKE = r'''#!/bin/sh
# stands for `ip`, `ping` and `nft`: answers from the files next to it
case "$3 $4" in
  "route get") cat "$(dirname "$0")/route.json" ;;
  "neigh show") cat "$(dirname "$0")/neigh.json" ;;
esac
'''


@pytest.mark.parametrize("route, neigh, why", [
    ('[{"dev": "eth0\\" fwd to \\"x"}]', "[]", "no route to 10.1.1.11"),
    ('[{"dev": "eth0"}]', '[{"lladdr": "02:00:00:00:00:11 } flush ruleset", "state": ["REACHABLE"]}]',
     "no MAC for 10.1.1.11 on eth0"),
    ('[{"dev": "eth0"}]', '[{"lladdr": "02:00:00:00:00:11", "state": ["FAILED"]}]',
     "no MAC for 10.1.1.11 on eth0"),
    ("not json", "[]", "no route to 10.1.1.11"),
    ('{"dev": "eth0"}', "[]", "no route to 10.1.1.11"),
    ('[{"dev": "eth0"}]', '{"lladdr": "02:00:00:00:00:11"}', "no MAC for 10.1.1.11 on eth0"),
])
def test_hostile_answers_of_ip_never_reach_the_table(tmp_path, route, neigh, why):
    fake = tmp_path / "fake"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    (tmp_path / "route.json").write_text(route)
    (tmp_path / "neigh.json").write_text(neigh)
    from support import LoopThread
    loop = LoopThread()
    try:
        assert loop.call(NftEngine(prefix=(str(fake),))._link("10.1.1.11")).startswith(why)
    finally:
        loop.close()


def test_nft_and_ip_answers_that_are_not_lists_of_objects_are_no_answer():
    assert objects('{"dev": "eth0"}') == [] and objects('[1, {"dev": "eth0"}]') == [{"dev": "eth0"}]
    assert nft_objects('{"nftables": {"counter": 1}}') == [] and nft_objects("[]") == []


def test_status_summary_names_members_the_manager_cannot_forward_to():
    from clusterkit.cli.summary import Summary

    report = {"policies": {
        "10.1.1.100:80": {"engine": "nft", "members": {
            "node1": {"state": "up", "mac": "02:00:00:00:00:11"},
            "node2": {"state": "up", "unresolved": "no MAC for 10.1.1.12 on eth0 (unresolved: "
                                                  "it did not answer ARP)"}}},
        "10.1.1.100:81": {"engine": "native", "members": {"node2": {"unresolved": "x"}}}}}
    summary = Summary(report)
    clusterkit_nft.clusterkit_status_summary(report=report, summary=summary)
    assert summary.problems == [
        "10.1.1.100:80: node2 gets no packets: no MAC for 10.1.1.12 on eth0 (unresolved: it did "
        "not answer ARP)"]


def test_status_summary_names_what_the_node_side_could_not_set_up():
    import clusterkit_directroute
    from clusterkit.cli.summary import Summary

    report = {"direct_routing": {"errors": ["cannot put 10.1.1.100 on lo: RTNETLINK answers: "
                                            "denied"]}}
    summary = Summary(report)
    clusterkit_directroute.clusterkit_status_summary(report=report, summary=summary)
    assert summary.problems == ["direct routing: cannot put 10.1.1.100 on lo: RTNETLINK answers: "
                                "denied"]
