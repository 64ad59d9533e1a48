"""The mutual-TLS control channel and joining: what is accepted, and every refusal."""

from __future__ import annotations

import json
import os
import socket
import ssl

import pytest

from clusterkit_panel import pki
from clusterkit_panel.join import JoinError, make_token
from clusterkit_panel.store import Store
from test_panel_fixtures import PanelCluster, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = PanelCluster(tmp_path_factory.mktemp("mtls"), "127.86.2", attempts=100)
    try:
        c.start("manager")
        c.add_user()
        c.join("node1")
        c.start("node1")
        yield c
    finally:
        c.close()


def listening(ip: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((ip, port)) == 0


def test_the_manager_calls_a_node_with_its_certificate(cluster):
    client = cluster.client("node1", cluster.host_context("manager"))
    status, body = client.get("/control/v1/status")
    assert status == 200 and body["host"] == "node1"


def test_no_client_certificate_is_refused(cluster):
    client = cluster.client("node1")  # trusts the CA, presents nothing
    status, body = client.get("/control/v1/status")
    assert status == 403 and "certificate is required" in body["error"]
    status, body = cluster.client("manager").post("/control/v1/hello", {})
    assert status == 403


def test_a_foreign_ca_is_refused_in_the_handshake(cluster, tmp_path):
    other = str(tmp_path / "other")
    pki.create_ca(other, "impostor")
    pki.issue_own(other, "manager", cluster.ips["manager"])  # same name, wrong CA
    ctx = ssl.create_default_context(cafile=pki.Paths.of(cluster.state("manager")).ca_cert)
    ctx.load_cert_chain(pki.Paths.of(other).cert, pki.Paths.of(other).key)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        cluster.client("node1", ctx).get("/control/v1/status")


def test_a_server_of_a_foreign_ca_is_not_trusted_by_hosts(cluster, tmp_path):
    other = str(tmp_path / "other2")
    pki.create_ca(other, "impostor")
    ctx = ssl.create_default_context(cafile=pki.Paths.of(other).ca_cert)
    with pytest.raises(ssl.SSLCertVerificationError):
        cluster.client("manager", ctx).get("/healthz")


def test_only_the_manager_may_call_a_node(cluster):
    cluster.join("node2")
    cluster.start("node2")
    client = cluster.client("node1", cluster.host_context("node2"))
    status, body = client.get("/control/v1/status")
    assert status == 403 and "only the manager" in body["error"]


def test_nodes_say_hello_and_see_the_managers_view(cluster):
    client = cluster.client("manager", cluster.host_context("node1"))
    assert client.post("/control/v1/hello", {})[0] == 200
    status, view = client.get("/control/v1/view")
    assert status == 200 and view["node"] == "node1"
    assert client.get("/control/v1/status")[0] == 403, "the manager serves no node endpoint"


def test_the_summary_shows_each_nodes_definition_as_the_node_reports_it(cluster):
    """The manager's summary gains a DEFINITION column from what each node last answered."""
    from clusterkit.cli.summary import render, summarize

    manager = cluster.hosts["manager"]

    def seen():
        nodes = cluster.loop.run(_status(manager))["panel"].get("nodes", {})
        return nodes.get("node1", {}).get("definition")

    state = wait_for(seen, what="node1's definition state in the manager's status")
    own = cluster.loop.run(_status(cluster.hosts["node1"]))["definition"]["state"]
    assert state == own  # in one process the node shares the manager's file: said so
    text = render(summarize(cluster.pm, cluster.loop.run(_status(manager))))
    header = next(line for line in text.splitlines() if line.startswith("NODE "))
    row = next(line for line in text.splitlines() if line.startswith("node1 "))
    assert "DEFINITION" in header
    assert row[header.index("DEFINITION"):].startswith(own.split(":")[0])


async def _status(runtime):
    return runtime.status()


def test_a_revoked_manager_certificate_is_refused_by_nodes(cluster):
    """The revocation list is written on the manager and replicated, as a revocation is: written
    on the node alone, a full sync from the manager (a node joining) would undo it."""
    serial = pki.serial_hex(pki.load_cert(pki.Paths.of(cluster.state("manager")).cert))
    accounts = cluster.panel("manager").accounts

    def status():
        return cluster.client("node1", cluster.host_context("manager")).get("/control/v1/status")

    accounts.write_revoked([serial])
    try:
        code, body = wait_for(lambda: (r := status())[0] == 403 and r, what="the revocation on node1")
        assert "revoked" in body["error"]
    finally:
        accounts.write_revoked([])
        wait_for(lambda: status()[0] == 200, what="node1 trusting the manager again")


def test_a_removed_nodes_certificate_is_refused_even_after_the_name_returns(cluster):
    old_context = cluster.host_context("node2")
    old_serial = pki.serial_hex(pki.load_cert(pki.Paths.of(cluster.state("node2")).cert))
    admin = cluster.login()
    status, body = admin.delete("/api/v1/nodes/node2")
    assert status == 200 and old_serial in body["revoked"]
    status, body = cluster.client("manager", old_context).post("/control/v1/hello", {})
    assert status == 403 and "revoked" in body["error"]
    revoked = json.load(open(os.path.join(cluster.panel("manager").accounts.dir, "revoked.json")))
    assert old_serial in revoked["serials"]
    assert admin.post("/api/v1/nodes", {"name": "node2", "ip": cluster.ips["node2"],
                                        "transport": "local", "root": str(cluster.tmp / "node2")})[0] == 201
    status, body = cluster.client("manager", old_context).post("/control/v1/hello", {})
    assert status == 403 and "revoked" in body["error"]
    cluster.join("node2")  # a fresh token, a fresh certificate
    assert cluster.client("manager", cluster.host_context("node2")).post("/control/v1/hello", {})[0] == 200


def test_a_join_token_is_one_time(cluster):
    token = cluster.join_token("node2")
    cluster.join("node2", token)
    with pytest.raises(JoinError, match="used already"):
        cluster.join("node2", token)


def test_an_expired_join_token_is_refused(cluster):
    token = cluster.join_token("node2", ttl=-1)
    with pytest.raises(JoinError, match="expired"):
        cluster.join("node2", token)


def test_a_token_for_another_node_or_an_unknown_token_is_refused(cluster):
    with pytest.raises(JoinError, match="is for node 'node1'"):
        cluster.join("node2", cluster.join_token("node1"))
    ca = pki.load_cert(pki.Paths.of(cluster.state("manager")).ca_cert)
    with pytest.raises(JoinError, match="unknown join token"):
        cluster.join("node2", make_token(pki.fingerprint(ca), pki.random_token()))


def test_a_token_pinning_another_ca_is_refused_before_sending_anything(cluster):
    secret = pki.random_token()
    store = Store(cluster.state("manager"))
    store.add_join_token(secret, "node2", 600)
    store.close()
    with pytest.raises(JoinError, match="does not match the token"):
        cluster.join("node2", make_token("0" * 64, secret))
    cluster.join("node2", make_token(pki.fingerprint(pki.load_cert(
        pki.Paths.of(cluster.state("manager")).ca_cert)), secret))  # still unspent


def test_a_name_outside_the_definition_cannot_join(cluster):
    with pytest.raises(JoinError, match="no node named 'node9'"):
        cluster.join("node9", cluster.join_token("node9"))
    with pytest.raises(JoinError, match="not a clusterkit join token"):
        cluster.join("node2", "garbage")


def test_the_certificate_names_come_from_the_definition_not_the_request(cluster):
    """A CSR asking for another name or address gets the definition's CN and SAN."""
    key, csr = pki.make_csr("manager")
    cert = pki.sign_host(cluster.state("manager"), csr, "node1", cluster.ips["node1"])
    cn = cert.subject.get_attributes_for_oid(pki.NameOID.COMMON_NAME)[0].value
    assert cn == "node1"


def test_a_node_without_a_certificate_starts_https_once_it_joins(cluster, tmp_path):
    # node2's certificate files are removed: its panel waits for a join
    cluster.stop("node2")
    paths = pki.Paths.of(cluster.state("node2"))
    for path in (paths.cert, paths.key):
        os.unlink(path)
    cluster.start("node2")
    port = cluster.https_port
    assert not listening(cluster.ips["node2"], port)
    assert cluster.hosts["node2"].status()["panel"]["joined"] is False
    cluster.join("node2")
    wait_for(lambda: listening(cluster.ips["node2"], port), what="node2's HTTPS after the join")
    status, body = cluster.client("node2", cluster.host_context("manager")).get("/control/v1/status")
    assert status == 200 and body["panel"]["joined"] is True
    assert oct(os.stat(paths.key).st_mode & 0o777) == "0o600"
