"""The ``dns-not-converged`` and ``certificate-expiring`` rules, and where their facts come from.

The rules are judged on status reports shaped like the manager's; the
certificate expiry in those reports is checked end to end against the real
certificates of a running manager and node (mutual TLS polling).
"""

from __future__ import annotations

import time

import pytest

from clusterkit.config import build_cluster
from clusterkit.definition.tables import ConfigError
from clusterkit_alerts import rules
from clusterkit_alerts.settings import AlertSettings
from clusterkit_panel import pki
from sync_support import sync_cluster
from test_panel_fixtures import PanelCluster, wait_for

NOW = 1_800_000_000.0
DAY = 86400


def judged(report: dict, **settings) -> dict[str, rules.Condition]:
    return rules.conditions(report, AlertSettings(**settings), started=NOW - 3600, now=NOW)


def test_a_certificate_expiring_in_three_days_fires():
    report = {"host": "manager", "panel": {"cert_expires": NOW + 3 * DAY, "nodes": {
        "node1": {"reachable": True, "cert_expires": NOW + 300 * DAY},
        "node2": {"reachable": False, "cert_expires": NOW - DAY},  # as last seen
        "node3": {"reachable": False, "cert_expires": None}}}}
    found = {k: c for k, c in judged(report).items() if c.kind == "certificate-expiring"}
    assert set(found) == {"certificate-expiring:manager", "certificate-expiring:node2"}
    manager = found["certificate-expiring:manager"]
    assert (manager.kind, manager.node) == ("certificate-expiring", "manager")
    assert "expires in 3.0 days" in manager.text and "2027-01-18" in manager.text
    assert "expired on" in found["certificate-expiring:node2"].text
    assert not judged(report, cert_days=2).get("certificate-expiring:manager")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), True, "1800000000", -float("inf")])
def test_an_expiry_that_is_not_a_finite_number_is_ignored(bad):
    assert not judged({"host": "manager", "panel": {"cert_expires": bad}})


def test_dns_not_converged_fires_after_dns_converge_seconds():
    def report(since, converged=False):
        return {"dns_convergence": {"hosts": {
            "node1": {"converged": converged, "since": since, "state": "lagging 3 zones", "error": None},
            "node2": {"converged": False, "since": NOW - 10, "state": "not answering",
                      "error": "example.com.: no answer within 1s"}}}}

    found = judged(report(NOW - 121))
    assert set(found) == {"dns-not-converged:node1"}
    c = found["dns-not-converged:node1"]
    assert (c.kind, c.node) == ("dns-not-converged", "node1")
    assert c.text == "the DNS of node1 has not converged for 121s: lagging 3 zones"
    assert not judged(report(NOW - 60))
    assert not judged(report(NOW - 999, converged=True))
    found = judged(report(NOW - 60), dns_converge=5)
    assert "no answer within 1s" in found["dns-not-converged:node2"].text
    assert not judged(report(float("nan")))


def test_both_kinds_are_listed_for_alert_test():
    assert {"dns-not-converged", "certificate-expiring"} <= set(rules.KINDS)


@pytest.mark.parametrize("table, key", [
    ("dns_converge = 0", "alerts.dns_converge"),
    ("dns_converge = inf", "alerts.dns_converge"),
    ('cert_days = "14"', "alerts.cert_days"),
    ("cert_days = 99999", "alerts.cert_days"),
])
def test_bad_thresholds_are_named(tmp_path, pm, table, key):
    text = sync_cluster(tmp_path, nodes=1, prefix="127.91.21").read_text() + f"\n[alerts]\n{table}\n"
    with pytest.raises(ConfigError) as err:
        build_cluster(text, "cluster.toml", pm)
    assert key in str(err.value)


def test_thresholds_are_read(tmp_path, pm):
    text = sync_cluster(tmp_path, nodes=1, prefix="127.91.21").read_text()
    cluster = build_cluster(text + "\n[alerts]\ndns_converge = 30\ncert_days = 7\n", "cluster.toml", pm)
    assert (cluster.sections["alerts"].dns_converge, cluster.sections["alerts"].cert_days) == (30, 7)


def test_the_panel_status_carries_the_real_certificates_expiry(tmp_path):
    cluster = PanelCluster(tmp_path, "127.91.22")
    try:
        manager = cluster.start("manager")
        cluster.join("node1")
        cluster.start("node1")

        def expiry(name):
            cert = pki.load_cert(pki.Paths.of(cluster.state(name)).cert)
            return cert.not_valid_after_utc.timestamp()

        panel = cluster.loop.run(_status(manager))["panel"]
        assert panel["cert_expires"] == expiry("manager")
        assert panel["cert_expires"] > time.time() + 800 * DAY  # a fresh certificate: HOST_DAYS
        seen = wait_for(lambda: (cluster.loop.run(_status(manager))["panel"]["nodes"]
                                 .get("node1") or {}).get("cert_expires"), what="node1 polled")
        assert seen == expiry("node1")
        # node2 never joined: nothing known, nothing invented
        nodes = cluster.loop.run(_status(manager))["panel"]["nodes"]
        assert (nodes.get("node2") or {}).get("cert_expires") is None
    finally:
        cluster.close()


async def _status(runtime) -> dict:
    return runtime.status()
