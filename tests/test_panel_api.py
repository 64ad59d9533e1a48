"""The panel's API over real HTTPS: every endpoint, sessions, CSRF, tokens, the read-only node panel."""

from __future__ import annotations

import http.client
import os
import stat

import pytest

from clusterkit_panel.api import ROUTES
from clusterkit_panel.routes import collect
from test_panel_fixtures import PASSWORD, PanelCluster, wait_for


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = PanelCluster(tmp_path_factory.mktemp("api"), "127.86.1",
                     panel='[panel.actions]\nsay = "echo said $CLUSTERKIT_HOST"\n')
    try:
        c.start("manager")
        c.add_user()
        c.join("node1")
        c.join("node2")
        c.start("node1")
        c.start("node2")
        wait_for(lambda: all(s.get("reachable") for s in c.panel("manager").node_status.values())
                 and len(c.panel("manager").node_status) == 2, what="the manager reaching both nodes")
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def admin(cluster):
    return cluster.login()


def test_openapi_describes_every_route(cluster):
    status, spec = cluster.client().get("/api/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    for route in collect(ROUTES, cluster.pm):  # the built-in routes and the plugins'
        assert route.method.lower() in spec["paths"][route.path], route.path
    assert spec["components"]["securitySchemes"]["clusterCertificate"]["type"] == "mutualTLS"


def test_healthz_and_the_page_are_public(cluster):
    client = cluster.client()
    assert client.get("/healthz") == (200, {"ok": True, "host": "manager", "role": "manager"})
    status, page = client.get("/", raw=True)
    assert status == 200 and b"/static/panel.js" in page
    assert "default-src 'self'" in client.last.headers["Content-Security-Policy"]
    assert client.last.headers["Strict-Transport-Security"]
    status, script = client.get("/static/panel.js", raw=True)
    assert status == 200 and b"X-CSRF-Token" in script
    assert client.get("/static/nothing.js")[0] == 404


def test_the_http_port_only_redirects_to_https(cluster):
    conn = http.client.HTTPConnection(cluster.ips["manager"], cluster.http_port, timeout=5)
    conn.request("GET", "/api/v1/nodes?x=1")
    resp = conn.getresponse()
    assert resp.status == 308
    assert resp.headers["Location"] == f"{cluster.url('manager')}/api/v1/nodes?x=1"
    conn.close()


def test_without_login_the_api_answers_401(cluster):
    client = cluster.client()
    for path in ("/api/v1/status", "/api/v1/overview", "/api/v1/nodes", "/metrics", "/api/v1/jobs"):
        status, body = client.get(path)
        assert status == 401, path
    assert client.post("/api/v1/nodes", {"name": "x", "ip": "127.86.1.50"})[0] == 401


def test_login_sets_a_secure_httponly_samesite_cookie(cluster):
    client = cluster.client()
    status, body = client.post("/api/v1/login", {"user": "admin", "password": PASSWORD})
    assert status == 200 and body["user"] == "admin" and body["csrf"]
    cookie = client.set_cookies[-1]
    for flag in ("Secure", "HttpOnly", "SameSite=Strict"):
        assert flag in cookie, cookie
    client.csrf = body["csrf"]
    assert client.get("/api/v1/session")[1]["user"] == "admin"
    assert client.post("/api/v1/logout")[0] == 200
    assert client.get("/api/v1/session")[0] == 401


def test_a_form_login_redirects_to_the_page(cluster):
    client = cluster.client()
    status, _ = client.request("POST", "/api/v1/login", "user=admin&password=" + PASSWORD.replace(" ", "+"),
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 303 and client.last.headers["Location"] == "/"
    assert client.get("/api/v1/session")[0] == 200


def test_wrong_passwords_are_refused_then_rate_limited_per_address(cluster):
    attacker = cluster.client(source="127.86.1.200")
    for _ in range(3):
        assert attacker.post("/api/v1/login", {"user": "admin", "password": "wrong"})[0] == 401
    status, body = attacker.post("/api/v1/login", {"user": "admin", "password": PASSWORD})
    assert status == 429, "even the right password waits once the address is over the limit"
    assert int(attacker.last.headers["Retry-After"]) >= 1
    assert attacker.post("/api/v1/login", {"user": "nobody", "password": "x"})[0] == 429
    other = cluster.client(source="127.86.1.201")
    assert other.post("/api/v1/login", {"user": "admin", "password": PASSWORD})[0] == 200


def test_a_session_needs_the_csrf_token_on_every_change(cluster, admin):
    body = {"name": "csrfnode", "ip": "127.86.1.60"}
    status, answer = admin.post("/api/v1/nodes", body, csrf=False)
    assert status == 403 and "CSRF" in answer["error"]
    status, answer = admin.post("/api/v1/nodes", body, headers={"X-CSRF-Token": "forged"}, csrf=False)
    assert status == 403
    assert admin.delete("/api/v1/nodes/node1", csrf=False)[0] == 403
    assert "csrfnode" not in cluster.config.read_text()


def test_api_tokens_work_without_a_session_and_can_be_revoked(cluster):
    accounts = cluster.panel("manager").accounts
    token = accounts.create_token("script1")
    client = cluster.client()
    client.headers["Authorization"] = f"Bearer {token}"
    assert client.get("/api/v1/nodes")[0] == 200
    assert client.get("/api/v1/session")[1]["user"] == "token:script1"
    status, body = client.post("/api/v1/sync-sets", {"name": "tok", "path": "/srv/tok"})
    assert status == 201, body
    assert client.delete("/api/v1/sync-sets/tok")[0] == 200
    accounts.revoke_token("script1")
    assert client.get("/api/v1/nodes")[0] == 401
    client.headers["Authorization"] = "Bearer ckp_not-a-token"
    assert client.get("/api/v1/nodes")[0] == 401


def test_secrets_on_disk_are_owner_only(cluster):
    panel = cluster.panel("manager")
    for path in (os.path.join(panel.accounts.dir, "users.json"), panel.paths.ca_key, panel.paths.key,
                 panel.store.path, cluster.panel("node1").paths.key):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    assert "scrypt$" in open(os.path.join(panel.accounts.dir, "users.json")).read()
    assert PASSWORD not in open(os.path.join(panel.accounts.dir, "users.json")).read()


def test_nodes_add_list_remove(cluster, admin):
    status, body = admin.post("/api/v1/nodes", {"name": "node3", "ip": "127.86.1.13", "transport": "local",
                                                "root": str(cluster.tmp / "node3")})
    assert status == 201, body
    names = [h["name"] for h in admin.get("/api/v1/nodes")[1]]
    assert names == ["manager", "node1", "node2", "node3"]
    assert "node3" in cluster.hosts["manager"].cluster.hosts, "the manager reloaded the definition"
    ssh = {"transport": "ssh"}
    assert admin.post("/api/v1/nodes", {"name": "node3", "ip": "127.86.1.14", **ssh})[0] == 409
    status, body = admin.post("/api/v1/nodes", {"name": "node4", "ip": "127.86.1.13", **ssh})
    assert status == 400 and any("already the ip of 'node3'" in p for p in body["problems"])
    assert admin.post("/api/v1/nodes", {"name": "node4", "ip": "127.86.1.14", "colour": "red",
                                        **ssh})[0] == 400
    assert admin.post("/api/v1/nodes", {"name": "node4", **ssh})[0] == 400
    assert admin.post("/api/v1/nodes", {"name": "node4", "ip": ["x"], **ssh})[0] == 400
    status, body = admin.delete("/api/v1/nodes/node3")
    assert status == 200 and body["removed"] == "node3"
    assert admin.delete("/api/v1/nodes/node3")[0] == 404
    assert "node3" not in cluster.config.read_text()


def test_policies_add_list_replace_remove(cluster, admin):
    policy = {"vip": "127.86.1.100", "port": 8080, "service": "http",
              "members": {"node1": 1, "node2": 2}, "scheduler": "wrr", "check": {"kind": "tcp", "inter": 1}}
    status, body = admin.post("/api/v1/policies", policy)
    assert status == 201, body
    rows = admin.get("/api/v1/policies")[1]
    assert rows[0]["key"] == "127.86.1.100:8080" and rows[0]["members"] == {"node1": 1, "node2": 2}
    assert admin.post("/api/v1/policies", policy)[0] == 409
    status, _ = admin.post("/api/v1/policies", {**policy, "members": {"node1": 3}, "replace": True})
    assert status == 201
    assert admin.get("/api/v1/policies")[1][0]["members"] == {"node1": 3}
    overview = admin.get("/api/v1/overview")[1]
    assert overview["policies"][0]["live"]["members"]["node1"]["weight"] == 3
    status, body = admin.post("/api/v1/policies", {**policy, "port": 8081, "vip": "10.9.9.9",
                                                   "members": {"ghost": 1}})
    assert status == 400
    assert any("not one of the manager's public_ips" in p for p in body["problems"])
    assert any("unknown member 'ghost'" in p for p in body["problems"])
    status, body = admin.delete("/api/v1/nodes/node1")
    assert status == 409 and "member of 127.86.1.100:8080" in body["error"]
    assert admin.delete("/api/v1/policies/127.86.1.100/8080")[0] == 200
    assert admin.delete("/api/v1/policies/127.86.1.100/8080")[0] == 404
    assert admin.delete("/api/v1/policies/127.86.1.100/http")[0] == 400
    assert admin.get("/api/v1/policies")[1] == []


def test_sync_sets_add_list_remove(cluster, admin):
    assert admin.post("/api/v1/sync-sets", {"name": "www", "path": "/srv/www",
                                            "exclude": ["*.tmp"]})[0] == 201
    rows = {s["name"]: s for s in admin.get("/api/v1/sync-sets")[1]}
    assert rows["www"]["exclude"] == ["*.tmp"] and rows["www"]["owner"] == "config"
    assert admin.post("/api/v1/sync-sets", {"name": "www", "path": "/srv/www"})[0] == 409
    status, body = admin.post("/api/v1/sync-sets", {"name": "rel", "path": "relative"})
    assert status == 400 and any("must be an absolute path" in p for p in body["problems"])
    assert admin.post("/api/v1/sync-sets", {"name": "x", "path": "/x", "exclude": "*.tmp"})[0] == 400
    assert admin.delete("/api/v1/sync-sets/www")[0] == 200
    assert admin.delete("/api/v1/sync-sets/www")[0] == 404


def test_drain_maintenance_enable_is_reported_unavailable_without_membership(cluster, admin):
    handlers = cluster.hosts["manager"].control.handlers
    saved = handlers.pop("operator", None)  # as on a manager without the membership plugin
    try:
        status, body = admin.post("/api/v1/nodes/node1/operator", {"action": "drain"})
        assert status == 501 and "not available" in body["error"]
    finally:
        if saved is not None:
            handlers["operator"] = saved
    assert admin.post("/api/v1/nodes/node1/operator", {"action": "explode"})[0] == 400
    assert admin.post("/api/v1/nodes/ghost/operator", {"action": "drain"})[0] == 404


def test_drain_calls_the_runtimes_operator_command(cluster, admin):
    """The panel calls whatever ``operator`` control command the runtime offers (the CLI's path)."""
    runtime = cluster.hosts["manager"]
    calls = []

    async def operator(node, action):
        calls.append((node, action))
        return {"node": node, "operator": action}

    saved = runtime.control.handlers.get("operator")
    runtime.control.handlers["operator"] = operator
    try:
        status, body = admin.post("/api/v1/nodes/node2/operator", {"action": "maintenance"})
    finally:
        if saved is None:
            runtime.control.handlers.pop("operator")
        else:
            runtime.control.handlers["operator"] = saved
    assert status == 200 and body == {"node": "node2", "operator": "maintenance"}
    assert calls == [("node2", "maintenance")]


def test_overview_status_and_metrics_on_the_manager(cluster, admin):
    overview = admin.get("/api/v1/overview")[1]
    assert overview["role"] == "manager"
    nodes = {n["name"]: n for n in overview["nodes"]}
    assert nodes["node1"]["panel"]["reachable"] is True and nodes["node2"]["panel"]["reachable"] is True
    status = admin.get("/api/v1/status")[1]
    assert status["host"] == "manager" and status["panel"]["nodes"]["node1"]["reachable"] is True
    code, text = admin.get("/metrics", raw=True)
    text = text.decode()
    assert code == 200 and admin.last.headers["Content-Type"].startswith("text/plain")
    assert 'clusterkit_host_info{cluster="test",host="manager",role="manager"} 1' in text
    assert 'clusterkit_node_panel_reachable{node="node1"} 1' in text
    assert "# TYPE clusterkit_panel_jobs gauge" in text


def test_metrics_render_policies_checks_replication_and_dns_from_status(cluster):
    """Sections other plugins put in the status become metric families."""
    from clusterkit import hookimpl
    from clusterkit_panel.metrics import render

    class Sections:
        @hookimpl(trylast=True)  # last, so these sections win over the real plugins' ones
        def clusterkit_status(self, runtime):
            return {
                "policies": {"127.86.1.100:80": {"service": "http", "active": 2, "total": 9, "refused": 1,
                                                 "members": {"node1": {"weight": 1, "active": 2, "total": 9,
                                                                       "bytes_in": 10, "bytes_out": 20,
                                                                       "connect_failures": 0}}}},
                "members": {"127.86.1.100:80": {
                    "node1": {"state": "up", "check": "http", "last": "ok", "latency_ms": 3.0}}},
                "sync": {"sets": {"www": {}, "shared": {}},
                         "nodes": {"node1": {"lag": 0.25, "pending": 4, "runs": 7, "state": "idle",
                                             "failing_sets": {"shared": {"failures": 3}}}}},
                "dns": {"queries": {"NOERROR": 5, "NXDOMAIN": 2}, "zones": {"example.": {"serial": 7}}},
            }

    pm = cluster.pm
    plugin = Sections()
    pm.register(plugin, name="test-sections")
    try:
        text = cluster.loop.run(_render(render, cluster.panel("manager")))
    finally:
        pm.unregister(plugin)
    for line in ('clusterkit_policy_connections_total{policy="127.86.1.100:80",service="http"} 9',
                 'clusterkit_member_bytes_out_total{policy="127.86.1.100:80",node="node1"} 20',
                 'clusterkit_member_state{policy="127.86.1.100:80",node="node1",state="up"} 1',
                 'clusterkit_member_state{policy="127.86.1.100:80",node="node1",state="down"} 0',
                 'clusterkit_check_up{policy="127.86.1.100:80",node="node1",check="http"} 1',
                 'clusterkit_replication_lag_seconds{node="node1"} 0.25',
                 'clusterkit_replication_unreachable{node="node1"} 0',
                 'clusterkit_replication_set_failures{node="node1",set="shared"} 3',
                 'clusterkit_replication_set_failures{node="node1",set="www"} 0',
                 'clusterkit_dns_queries_total{rcode="NXDOMAIN"} 2',
                 'clusterkit_dns_zone_serial{zone="example."} 7'):
        assert line in text, line
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(families) == len(set(families)), "each family once, its samples together"


async def _render(render, panel):
    return render(panel)


def test_a_node_panel_is_read_only(cluster):
    cluster.add_user("operator2", host="node1")
    node = cluster.login("node1", "operator2")
    overview = node.get("/api/v1/overview")[1]
    assert overview["role"] == "node" and overview["read_only"] is True
    assert overview["host"] == "node1"
    assert "error" not in overview["manager_view"], overview["manager_view"]
    assert [h["name"] for h in overview["definition"]["hosts"]] == ["manager", "node1", "node2"]
    assert node.get("/api/v1/status")[1]["host"] == "node1"
    assert node.get("/api/v1/nodes")[0] == 200
    refusals = [
        ("POST", "/api/v1/nodes", {"name": "x", "ip": "127.86.1.70"}),
        ("DELETE", "/api/v1/nodes/node2", None),
        ("POST", "/api/v1/nodes/node2/operator", {"action": "drain"}),
        ("POST", "/api/v1/nodes/node2/actions/say", {}),
        ("POST", "/api/v1/policies", {"vip": "127.86.1.100", "port": 81, "service": "http",
                                      "members": {"node1": 1}}),
        ("DELETE", "/api/v1/policies/127.86.1.100/81", None),
        ("POST", "/api/v1/sync-sets", {"name": "n", "path": "/n"}),
        ("DELETE", "/api/v1/sync-sets/n", None),
        ("POST", "/api/v1/join", {"node": "node2", "token": "t", "csr": "c"}),
    ]
    before = cluster.config.read_text()
    for method, path, body in refusals:
        status, answer = node.request(method, path, body)
        assert status == 403, (method, path, status, answer)
        assert "node" in answer["error"]
    assert cluster.config.read_text() == before


def test_operators_added_on_the_manager_can_log_in_on_nodes_once_replicated(cluster):
    """panelsync makes the panel's data dir a sync set: the replication plugin ships it."""
    if cluster.pm.get_plugin("sync") is None:
        pytest.skip("no replication plugin installed: nothing ships the panel's data dir")
    cluster.add_user("carol", "carol's password")
    client = cluster.client("node2")

    def logged_in():
        return client.post("/api/v1/login", {"user": "carol", "password": "carol's password"})[0] == 200

    wait_for(logged_in, timeout=30, what="users.json replicated to node2")
    users = os.path.join(cluster.panel("node2").accounts.dir, "users.json")
    assert stat.S_IMODE(os.stat(users).st_mode) == 0o600, "the copy stays owner-only"


def test_removing_an_operator_ends_their_sessions(cluster):
    cluster.add_user("temp")
    client = cluster.login(user="temp")
    assert client.get("/api/v1/session")[0] == 200
    cluster.panel("manager").accounts.remove_user("temp")
    assert client.get("/api/v1/session")[0] == 401


def test_dns_convergence_compares_every_hosts_soa_serials():
    from clusterkit_panel.views import dns_convergence

    manager = {"dns": {"zones": {"example.": {"serial": 5}, "other.": {"serial": 9}}}}
    polled = {"node1": {"status": {"dns": {"zones": {"example.": {"serial": 5}, "other.": {"serial": 9}}}}},
              "node2": {"status": {"dns": {"zones": {"example.": {"serial": 4}, "other.": {"serial": 9}}}}}}
    result = dns_convergence(manager, polled, ["node1", "node2"])
    assert result["zones"]["example."] == {"serial": 5, "nodes": {"node1": 5, "node2": 4},
                                           "converged": False}
    assert result["zones"]["other."]["converged"] is True and result["converged"] is False
    assert dns_convergence({}, {"node1": {}}, ["node1"]) is None, "no DNS anywhere: nothing to show"


def test_a_form_post_carries_the_csrf_token_as_a_field(cluster):
    client = cluster.login()
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, _ = client.request("POST", "/api/v1/logout", "csrf_token=forged", headers=form, csrf=False)
    assert status == 403
    status, _ = client.request("POST", "/api/v1/logout", f"csrf_token={client.csrf}", headers=form,
                               csrf=False)
    assert status == 200 and client.get("/api/v1/session")[0] == 401


def test_metrics_can_be_made_public(cluster):
    manager = cluster.hosts["manager"]
    text = cluster.config.read_text()
    cluster.config.write_text(text.replace("[panel]\n", "[panel]\nmetrics_public = true\n"))
    try:
        assert cluster.loop.run(manager.reload())["changed"] is True
        status, body = cluster.client().get("/metrics", raw=True)
        assert status == 200 and b"clusterkit_host_info" in body
        assert cluster.client().get("/api/v1/status")[0] == 401, "only /metrics became public"
    finally:
        cluster.config.write_text(text)
        cluster.loop.run(manager.reload())
    assert cluster.client().get("/metrics")[0] == 401


def test_overview_and_metrics_show_the_engines_counters_and_replication(cluster, admin):
    import socket

    from test_panel_fixtures import free_ports

    if cluster.hosts["manager"].engine is None:
        pytest.skip("no load-balancing engine installed")
    (port,) = free_ports(["127.86.1.100"], 1)
    key = f"127.86.1.100:{port}"
    assert admin.post("/api/v1/policies", {"vip": "127.86.1.100", "port": port, "service": "http",
                                           "members": {"node1": 1}})[0] == 201
    try:
        try:
            with socket.create_connection(("127.86.1.100", port), timeout=5) as s:
                s.recv(1)
        except OSError:
            pass  # no backend listens on node1: the engine resets the connection

        def counted():
            rows = {p["key"]: p for p in admin.get("/api/v1/overview")[1]["policies"]}
            return (rows[key]["live"]["total"] or 0) >= 1

        wait_for(counted, what="the engine's counters in the overview")
        text = admin.get("/metrics", raw=True)[1].decode()
        assert f'clusterkit_policy_connections_total{{policy="{key}",service="http"}} 1' in text
    finally:
        admin.delete(f"/api/v1/policies/127.86.1.100/{port}")
    if cluster.pm.get_plugin("sync") is not None:
        nodes = {n["name"]: n for n in admin.get("/api/v1/overview")[1]["nodes"]}
        assert nodes["node1"]["replication"]["state"]
        assert 'clusterkit_replication_lag_seconds{node="node1"}' in admin.get("/metrics", raw=True)[1].decode()


def test_drain_and_enable_through_the_membership_plugin(cluster, admin):
    if "operator" not in cluster.hosts["manager"].control.handlers:
        pytest.skip("no membership plugin: test_drain_maintenance_enable_is_reported_unavailable covers it")
    from test_panel_fixtures import free_ports

    (port,) = free_ports(["127.86.1.100"], 1)
    assert admin.post("/api/v1/policies", {"vip": "127.86.1.100", "port": port, "service": "http",
                                           "members": {"node1": 1, "node2": 1}})[0] == 201
    try:
        status, body = admin.post("/api/v1/nodes/node1/operator", {"action": "drain"})
        assert status == 200 and body["node"] == "node1", body
        assert f"127.86.1.100:{port}" in body["policies"]

        def drained():
            nodes = {n["name"]: n for n in admin.get("/api/v1/overview")[1]["nodes"]}
            return nodes["node1"]["operator"] == "drain" and nodes["node2"]["operator"] is None

        wait_for(drained, what="node1 drained in the overview")
        assert admin.post("/api/v1/nodes/node1/operator", {"action": "enable"})[0] == 200
    finally:
        admin.delete(f"/api/v1/policies/127.86.1.100/{port}")


ZONE = """$ORIGIN panel.test.
$TTL 300
@   IN SOA ns1 hostmaster {serial} 3600 600 86400 300
@   IN NS  ns1
ns1 IN A   127.86.1.100
www IN A   127.86.1.100
"""


def test_the_overview_shows_dns_convergence_across_hosts(cluster, admin):
    if cluster.pm.get_plugin("dns") is None or cluster.pm.get_plugin("sync") is None:
        pytest.skip("needs the DNS and replication plugins")
    zones = cluster.hosts["manager"].local_path(cluster.hosts["manager"].cluster.sections["dns"].zones_dir)
    os.makedirs(zones, exist_ok=True)
    with open(os.path.join(zones, "panel.test.zone"), "w") as f:
        f.write(ZONE.format(serial=7))

    def converged():
        dns = admin.get("/api/v1/overview")[1]["dns"] or {}
        zone = dns.get("zones", {}).get("panel.test.")
        return zone if zone and zone["converged"] else None

    zone = wait_for(converged, timeout=30, what="every host serving serial 7")
    assert zone["serial"] == 7 and zone["nodes"] == {"node1": 7, "node2": 7}
    text = admin.get("/metrics", raw=True)[1].decode()
    assert 'clusterkit_dns_zone_serial{zone="panel.test."} 7' in text


def test_dns_zones_and_records_through_the_api(cluster, admin):
    if cluster.pm.get_plugin("dns") is None:
        pytest.skip("no DNS plugin installed")
    status, body = admin.post("/api/v1/dns/zones", {"zone": "shop.test", "ns": ["ns1.shop.test."]})
    assert status == 201, body
    assert "shop.test" in [z["zone"] for z in admin.get("/api/v1/dns/zones")[1]]
    status, body = admin.post("/api/v1/dns/zones/shop.test/records",
                              {"name": "www", "type": "A", "value": "127.86.1.100", "ttl": 60})
    assert status == 201, body
    records = admin.get("/api/v1/dns/zones/shop.test/records")[1]
    assert any(r["name"] == "www" and r["type"] == "A" and r["value"] == "127.86.1.100" for r in records)
    status, body = admin.post("/api/v1/dns/zones/shop.test/records",
                              {"name": "www", "type": "A", "value": "not-an-address"})
    assert status == 400 and body["error"]
    assert admin.post("/api/v1/dns/zones/shop.test/records", {"name": "www"})[0] == 400
    status, body = admin.delete("/api/v1/dns/zones/shop.test/records?name=www&type=A")
    assert status == 200, body
    assert admin.delete("/api/v1/dns/zones/shop.test/records")[0] == 400
    assert admin.delete("/api/v1/dns/zones/shop.test")[0] == 200
    assert admin.get("/api/v1/dns/zones/shop.test/records")[0] in (400, 404)
    cluster.add_user("dnsop", host="node1")
    node = cluster.login("node1", "dnsop")
    assert node.post("/api/v1/dns/zones", {"zone": "x.test"})[0] == 403
    assert node.get("/api/v1/dns/zones")[0] == 403
