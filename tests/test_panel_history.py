"""The panel's ring buffer of the manager's numbers: rates from counters, bounded, aging out."""

from __future__ import annotations

from clusterkit_panel.history import CHARTS, History


def report(total=0, bytes_in=0, lag=0.0, pending=0, answers=0, nodes=("web1",)):
    return {
        "host": "lb1",
        "policies": {"10.0.0.100:80": {"members": {
            n: {"total": total, "bytes_in": bytes_in, "bytes_out": 0} for n in nodes}}},
        "members": {"10.0.0.100:80": {"nodes": {n: {"latency_ms": 1.5} for n in nodes}}},
        "sync": {"nodes": {n: {"lag": lag, "pending": pending} for n in nodes}},
        "dns": {"queries": {"NOERROR": answers}},
    }


def test_counters_become_rates_and_gauges_stay():
    h = History(step=5, span=60)
    h.sample(report(total=100, bytes_in=1000, answers=10), now=1000.0)
    h.sample(report(total=150, bytes_in=6000, lag=2.5, pending=7, answers=60), now=1005.0)
    snap = h.snapshot()
    assert snap["t"] == [1000.0, 1005.0] and snap["step"] == 5
    assert set(snap["charts"]) == set(CHARTS)
    assert snap["charts"]["connections"]["series"]["web1 10.0.0.100:80"] == [None, 10.0]
    assert snap["charts"]["traffic"]["series"]["web1 10.0.0.100:80"] == [None, 1000.0]
    assert snap["charts"]["lag"]["series"]["web1"] == [0.0, 2.5]
    assert snap["charts"]["pending"]["series"]["web1"] == [0.0, 7.0]
    assert snap["charts"]["dns"]["series"]["lb1 NOERROR"] == [None, 10.0]
    assert snap["charts"]["latency"]["series"]["web1 10.0.0.100:80"] == [1.5, 1.5]
    assert h.snapshot(since=1000.0)["t"] == [1005.0]


def test_a_counter_reset_gives_no_negative_rate():
    h = History(step=1, span=60)
    h.sample(report(total=500), now=1.0)
    h.sample(report(total=3), now=2.0)  # the daemon restarted: counters start again
    h.sample(report(total=13), now=3.0)
    assert h.snapshot()["charts"]["connections"]["series"]["web1 10.0.0.100:80"] == [None, None, 10.0]


def test_memory_is_bounded_and_gone_series_age_out():
    h = History(step=1, span=10)
    h.sample(report(nodes=("web1", "web2")), now=0.0)
    for t in range(1, 50):
        h.sample(report(total=t, nodes=("web1",)), now=float(t))
    snap = h.snapshot()
    assert len(snap["t"]) == 10
    assert all(len(s) == 10 for c in snap["charts"].values() for s in c["series"].values())
    assert "web2" not in snap["charts"]["lag"]["series"], "a removed node ages out"


def test_a_new_series_is_aligned_with_the_time_axis():
    h = History(step=1, span=10)
    h.sample(report(nodes=("web1",)), now=0.0)
    h.sample(report(nodes=("web1", "web2")), now=1.0)
    assert h.snapshot()["charts"]["lag"]["series"]["web2"] == [None, 0.0]


def test_hostile_values_are_skipped():
    bad = report()
    bad["sync"]["nodes"]["web1"]["lag"] = float("nan")
    bad["policies"]["10.0.0.100:80"]["members"]["web1"]["total"] = "many"
    h = History(step=1, span=10)
    h.sample(bad, now=0.0)
    snap = h.snapshot()
    assert "web1" not in snap["charts"]["lag"]["series"]
    assert "web1 10.0.0.100:80" not in snap["charts"]["connections"]["series"]
