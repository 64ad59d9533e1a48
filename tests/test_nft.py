"""The nft engine without a kernel: what it registers and refuses, the bucket table's
movement and shares, and the transaction text it hands ``nft -f``."""

from __future__ import annotations

from collections import Counter

import pytest

import clusterkit_nft
from clusterkit.definition.tables import ConfigError
from clusterkit.plugins import get_plugin_manager
from clusterkit_nft.buckets import fill
from clusterkit_nft.engine import NftEngine
from clusterkit_nft.ruleset import Member, PolicyPlan, removal, render
from proxy_support import make_cluster, plugin_manager

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


@pytest.mark.parametrize("keys, message", [
    ({"backend_port": 8080}, "backend_port 8080 must be the policy's port 80"),
    ({"max_conn": 10}, "max_conn/member_max_conn cannot be enforced"),
    ({"fallback": "node1"}, "a fallback needs a proxy"),
])
def test_what_direct_routing_cannot_carry_is_named(tmp_path, keys, message):
    cluster = make_cluster(tmp_path, NET, 2, policy_text(**keys), plugin_manager(clusterkit_nft))
    assert message in clusterkit_nft.cannot_carry(cluster.policies[0])


def test_ipv6_vips_are_not_carried(tmp_path):
    cluster = make_cluster(tmp_path, NET, 2, policy_text(), plugin_manager(clusterkit_nft))
    import dataclasses
    policy = dataclasses.replace(cluster.policies[0], vip="fd00::100")
    assert "IPv4 VIPs only" in clusterkit_nft.cannot_carry(policy)


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


def test_the_table_is_swapped_in_one_transaction():
    text = render([plan()], {"eth0": "02:00:00:00:00:01"}, {"c0_0": (7, 700)})
    first, second, third = text.splitlines()[:3]
    assert (first, second, third) == ("table netdev clusterkit {}", "delete table netdev clusterkit",
                                      "table netdev clusterkit {")
    assert "flush" not in text
    assert "elements = { 0 : goto m0_0, 1 : goto m0_1, 3 : goto m0_1 }" in text  # 2 has no member
    assert "counter c0_0 {\n\t\tpackets 7 bytes 700\n\t}" in text  # counters carried on
    assert ('ether saddr set 02:00:00:00:00:01 ether daddr set 02:00:00:00:00:12 fwd to "eth0"'
            in text)
    assert 'type filter hook ingress device "eth0" priority 0' in text
    assert "ip daddr . tcp dport vmap { 10.1.1.100 . 80 : goto p0 }" in text
    assert "jhash ip saddr . tcp sport mod 4 " in text and "set f0" not in text
    assert removal() == "table netdev clusterkit {}\ndelete table netdev clusterkit\n"


def test_a_drain_keeps_old_flows_on_the_old_table():
    text = render([plan(old=["m0_0", "m0_0", None, "m0_1"], fresh=["10.9.9.9 . 4000 expires 30s"])],
                  {"eth0": "02:00:00:00:00:01"}, {})
    assert "tcp flags & (syn | ack) == syn update @f0 { ip saddr . tcp sport }" in text
    assert "elements = { 10.9.9.9 . 4000 expires 30s }" in text
    rules = text[text.index("chain p0"):].splitlines()
    assert rules[2].strip().endswith("meta mark vmap @n0") and "@f0 update" in rules[2]
    assert rules[3].strip().endswith("meta mark vmap @o0")


def test_sh_hashes_the_client_address_alone():
    text = render([plan(by_client=True, old=["m0_0"] * 4)], {"eth0": "02:00:00:00:00:01"}, {})
    assert "jhash ip saddr mod 4 " in text and "type ipv4_addr\n" in text


def test_a_set_member_state_before_any_apply_is_remembered():
    engine = NftEngine(prefix=("false",))
    assert engine.set_member_state("10.1.1.100:80", "node1", "drain") is None
    assert engine.states[("10.1.1.100:80", "node1")] == ("drain", 1.0)
    with pytest.raises(ValueError):
        engine.set_member_state("10.1.1.100:80", "node1", "sleepy")
