"""The schedulers and persistence, without sockets (clusterkit.proxy.pool)."""

from collections import Counter

import pytest

from clusterkit.proxy.pool import PENALTY, RealServer, Pool


def pool(scheduler, weights, persistence=0):
    p = Pool(scheduler, persistence)
    p.set_members([RealServer(f"n{i}", ("127.0.0.1", 1), w) for i, w in enumerate(weights, 1)])
    return p


def picks(p, count, ip=None, now=0.0):
    return Counter(p.pick(ip, now).node for _ in range(count))


def test_wrr_is_exact_over_a_cycle_and_smooth():
    p = pool("wrr", [5, 1, 1])
    seq = [p.pick(None, 0).node for _ in range(7)]
    assert Counter(seq) == {"n1": 5, "n2": 1, "n3": 1}
    assert seq[0] == "n1" and "n1n1n1" not in "".join(seq)  # never a burst of five


def test_rr_ignores_weights_but_skips_weight_zero():
    assert picks(pool("rr", [5, 1, 0]), 100) == {"n1": 50, "n2": 50}


def test_lc_prefers_fewest_active():
    p = pool("lc", [1, 1, 1])
    p.members["n1"].active = 3
    p.members["n2"].active = 1
    p.members["n3"].active = 2
    assert p.pick(None, 0).node == "n2"


def test_wlc_divides_by_weight():
    p = pool("wlc", [4, 1])
    p.members["n1"].active = 3   # 4/4 = 1.0 per unit of weight with the next one
    p.members["n2"].active = 1   # 2/1 = 2.0
    assert p.pick(None, 0).node == "n1"
    p.members["n1"].active = 8   # 9/4 > 2/1
    assert p.pick(None, 0).node == "n2"


def test_sh_is_stable_and_only_moves_the_removed_members_clients():
    p = pool("sh", [1, 1, 1])
    ips = [f"10.0.{i // 250}.{i % 250}" for i in range(900)]
    before = {ip: p.pick(ip, 0).node for ip in ips}
    assert before == {ip: p.pick(ip, 0).node for ip in ips}
    assert all(250 < n < 350 for n in Counter(before.values()).values())
    p.members["n3"].state = "down"
    after = {ip: p.pick(ip, 0).node for ip in ips}
    assert all(after[ip] == node for ip, node in before.items() if node != "n3")


def test_persistence_pins_and_expires():
    p = pool("rr", [1, 1], persistence=10)
    first = p.pick("192.0.2.1", now=0).node
    assert {p.pick("192.0.2.1", now=t).node for t in (1, 5, 14)} == {first}  # refreshed each time
    p.expire_pins(now=30)
    assert p.pins == {}


def test_persistence_gives_way_when_the_member_cannot_take_it():
    p = pool("rr", [1, 1], persistence=60)
    first = p.pick("192.0.2.1", 0)
    first.state = "drain"
    second = p.pick("192.0.2.1", 1)
    assert second is not first
    first.state = "up"
    assert p.pick("192.0.2.1", 2) is second  # the new pin holds


@pytest.mark.parametrize("state", ["down", "drain", "maintenance"])
def test_states_other_than_up_take_nothing_new(state):
    p = pool("wrr", [1, 1])
    p.members["n1"].state = state
    assert picks(p, 10) == {"n2": 10}
    p.members["n2"].state = state
    assert p.pick(None, 0) is None


def test_slow_start_factor_scales_the_weight():
    p = pool("wrr", [1, 1])
    p.members["n1"].factor = 0.25
    assert picks(p, 100) == {"n1": 20, "n2": 80}


def test_member_limit_and_exclusion():
    p = pool("rr", [1, 1])
    p.members["n1"].max_conn = 2
    p.members["n1"].active = 2
    assert picks(p, 5) == {"n2": 5}
    assert p.pick(None, 0, exclude=(p.members["n2"],)) is None


def test_a_failed_member_is_passed_over_while_another_can_take_it():
    p = pool("rr", [1, 1])
    p.members["n1"].penalty_until = PENALTY
    assert picks(p, 4, now=1.0) == {"n2": 4}
    p.members["n2"].state = "down"
    assert p.pick(None, 1.0).node == "n1"  # better a suspect member than none
    assert picks(p, 1, now=PENALTY + 1) == {"n1": 1}


@pytest.mark.parametrize("scheduler", ["rr", "wrr", "lc", "wlc", "sh"])
def test_a_zero_slow_start_factor_is_a_last_resort_not_an_error(scheduler):
    p = pool(scheduler, [1, 1])
    p.members["n1"].factor = 0.0
    got = picks(p, 20, ip="192.0.2.7")
    assert sum(got.values()) == 20
    if scheduler in ("wrr", "wlc", "sh"):
        assert got == {"n2": 20}
