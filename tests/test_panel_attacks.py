"""Attacks a security review ran against a live panel, each reproduced and now failing safely.

A real manager on 127.86.8.x, real HTTPS and raw-socket clients; each test
names the attack it replays and asserts what the attacker gets now.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import threading

import pytest

from clusterkit.control import ControlError, request
from clusterkit_panel.listener import HANDSHAKE_TIMEOUT, HEAD_TIMEOUT
from clusterkit_panel.responses import MAX_BODY, MAX_DEPTH
from test_panel_fixtures import PASSWORD, PanelCluster, wait_for

ATTEMPTS = 5
PER_ADDRESS = 40
WAIT = HANDSHAKE_TIMEOUT + HEAD_TIMEOUT + 10  # a client's read timeout: well past every deadline


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with PanelCluster.manager_only(tmp_path_factory.mktemp("attacks"), "127.86.8",
                                   attempts=ATTEMPTS,
                                   panel=f"connections_per_address = {PER_ADDRESS}\n") as c:
        yield c


@pytest.fixture(scope="module")
def admin(cluster):
    return cluster.login()


def _connect(cluster, source: str) -> http.client.HTTPSConnection:
    conn = http.client.HTTPSConnection(cluster.ips["manager"], cluster.https_port,
                                       context=cluster.ca_context(), timeout=WAIT,
                                       source_address=(source, 0))
    conn.connect()  # the TLS handshake, done before the race starts
    return conn


def _login_request(conn: http.client.HTTPSConnection, password: str) -> None:
    conn.request("POST", "/api/v1/login", json.dumps({"user": "admin", "password": password}),
                 {"Content-Type": "application/json"})


def _status(conn: http.client.HTTPSConnection) -> int:
    try:
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


# ----------------------------------------------------------------- 1. login limit


def test_parallel_wrong_passwords_reach_the_check_at_most_login_attempts_times(cluster):
    """40 parallel attempts from one address used to get 40 × 401 (none 429)."""
    conns = [_connect(cluster, "127.86.8.201") for _ in range(40)]
    start = threading.Barrier(len(conns))
    statuses: list[int] = []

    def attempt(conn):
        start.wait()
        _login_request(conn, "wrong password")
        statuses.append(_status(conn))

    threads = [threading.Thread(target=attempt, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert len(statuses) == 40
    assert statuses.count(401) <= ATTEMPTS, statuses
    assert statuses.count(429) == 40 - statuses.count(401), statuses


def test_the_right_password_sent_after_the_limit_among_parallel_wrong_ones_is_refused(cluster):
    """30 parallel wrong attempts with the right password last used to log in."""
    source = "127.86.8.202"
    wrong = [_connect(cluster, source) for _ in range(30)]
    right = _connect(cluster, source)
    for conn in wrong:  # all 30 on the wire while their password checks run...
        _login_request(conn, "wrong password")
    _login_request(right, PASSWORD)  # ...and the right one behind them
    statuses = [_status(conn) for conn in wrong]
    assert _status(right) == 429
    assert statuses.count(401) <= ATTEMPTS and statuses.count(429) == 30 - statuses.count(401)
    other = cluster.client(source="127.86.8.203")
    assert other.post("/api/v1/login", {"user": "admin", "password": PASSWORD})[0] == 200


def test_a_successful_login_does_not_count_against_its_address(cluster):
    client = cluster.client(source="127.86.8.204")
    for _ in range(ATTEMPTS + 2):
        assert client.post("/api/v1/login", {"user": "admin", "password": PASSWORD})[0] == 200


# ---------------------------------------------------------- 2. zone names as paths


@pytest.fixture
def zones(cluster):
    if cluster.pm.get_plugin("dns") is None:
        pytest.skip("no DNS plugin installed")
    manager = cluster.hosts["manager"]
    path = manager.local_path(manager.cluster.sections["dns"].zones_dir)
    os.makedirs(path, exist_ok=True)
    outside = cluster.tmp / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "victim.zone").write_text("precious\n")
    return path, outside


def _files(tmp) -> list[str]:
    return sorted(str(p) for p in tmp.rglob("*.zone"))


@pytest.mark.parametrize("zone", [
    "\\.\\.\\047\\.\\.\\047outside\\047pwned",  # unescapes to ../../outside/pwned
    "sub\\047dir.example",                      # used to answer 500
    "\\.\\..example", "nul\\000.example",
])
def test_creating_a_zone_whose_name_unescapes_to_a_path_is_refused(cluster, admin, zones, zone):
    before = _files(cluster.tmp)
    status, body = admin.post("/api/v1/dns/zones", {"zone": zone})
    assert status == 400, body
    assert "may hold only letters, digits, '-' and '_'" in body["error"]
    assert _files(cluster.tmp) == before


def test_deleting_or_editing_a_zone_outside_the_directory_is_refused(cluster, admin, zones):
    _, outside = zones
    relative = os.path.relpath(outside / "victim", zones[0])  # ../../outside/victim
    escaped = relative.replace(".", "\\.").replace("/", "\\047")
    quoted = escaped.replace("\\", "%5C")
    status, body = admin.delete(f"/api/v1/dns/zones/{quoted}")
    assert status == 400 and "may hold only" in body["error"], body
    status, body = admin.post(f"/api/v1/dns/zones/{quoted}/records",
                              {"name": "www", "type": "A", "value": "192.0.2.1"})
    assert status == 400 and "may hold only" in body["error"], body
    assert admin.delete(f"/api/v1/dns/zones/{quoted}/records?name=www&type=A")[0] == 400
    assert admin.get(f"/api/v1/dns/zones/{quoted}/records")[0] == 400
    assert (outside / "victim.zone").read_text() == "precious\n"


# ------------------------------------------------------------ 3. numbers and bodies


@pytest.mark.parametrize("raw, message", [
    ('{"vip": "127.86.8.100", "port": NaN, "service": "http", "members": {"node1": 1}}',
     "NaN is not a number JSON allows"),
    ('{"vip": "127.86.8.100", "port": 80, "service": "http", "members": {"node1": Infinity}}',
     "Infinity is not a number JSON allows"),
    ('{"vip": "127.86.8.100", "port": 80, "service": "http", "members": {"node1": 1},'
     ' "check": {"kind": "tcp", "inter": -Infinity}}', "-Infinity is not a number JSON allows"),
    ('{"vip": "127.86.8.100", "port": 80, "service": "http", "members": {"node1": 1},'
     ' "persistence": 1e400}', "out of range (numbers must be finite)"),
    ('{"vip": "127.86.8.100", "port": 99999999999999999999, "service": "http",'
     ' "members": {"node1": 1}}', "out of range (64-bit integers)"),
])
def test_non_finite_and_huge_numbers_are_refused_and_nothing_changes(cluster, admin, raw, message):
    before = cluster.config.read_text()
    status, body = admin.post("/api/v1/policies", raw)
    assert status == 400 and message in body["error"], body
    assert cluster.config.read_text() == before
    assert admin.get("/api/v1/policies")[1] == []


def test_finite_numbers_out_of_the_definitions_range_are_refused_by_its_check(cluster, admin):
    before = cluster.config.read_text()
    base = {"vip": "127.86.8.100", "port": 8080, "service": "http", "members": {"node1": 1}}
    for body in ({**base, "members": {"node1": 1e300}}, {**base, "port": 70000},
                 {**base, "check": {"kind": "tcp", "inter": 1e300}}, {**base, "persistence": -1}):
        status, answer = admin.post("/api/v1/policies", body)
        assert status == 400 and answer["problems"], (body, answer)
    assert cluster.config.read_text() == before


@pytest.mark.parametrize("body", [
    "[" * 60000,                                                 # used to be a 500, even here
    '{"user": "admin", "password": "x", "deep": ' + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "}",
])
def test_deeply_nested_json_gets_400_even_unauthenticated(cluster, body):
    status, answer = cluster.client(source="127.86.8.205").post("/api/v1/login", body)
    assert status == 400 and f"nests deeper than {MAX_DEPTH} levels" in answer["error"], answer


def test_a_body_over_the_limit_is_refused(cluster):
    status, answer = cluster.client(source="127.86.8.205").post(
        "/api/v1/login", json.dumps({"user": "admin", "password": "x" * MAX_BODY}))
    assert status == 413 and f"over {MAX_BODY} bytes" in answer["error"]


def test_error_messages_never_show_python_internals(cluster, admin):
    probes = [
        ("POST", "/api/v1/nodes/manager/operator", {"action": {"a": 1}}),
        ("POST", "/api/v1/policies", {"vip": "127.86.8.100", "port": 80, "service": {"a": 1},
                                      "members": {"node1": 1}}),
        ("POST", "/api/v1/policies", {"vip": 5, "port": "80", "service": True, "members": {"n": "x"}}),
        ("POST", "/api/v1/nodes", {"name": 5, "ip": [1], "transport": {"x": 1}}),
        ("POST", "/api/v1/login", {"user": ["admin"], "password": None}),
        ("POST", "/api/v1/sync-sets", {"name": "s", "path": "/s", "exclude": [1, {}]}),
        ("POST", "/api/v1/dns/zones", {"zone": {"a": 1}, "email": []}),
        ("POST", "/api/v1/dns/zones/x.test/records", {"name": "w", "type": "A", "value": "1.2.3.4",
                                                      "ttl": [1]}),
        ("POST", "/api/v1/nodes", "[1, 2]"),
        ("POST", "/api/v1/nodes", b"\xff\xfe{}"),
    ]
    for method, path, body in probes:
        status, answer = admin.request(method, path, body)
        text = json.dumps(answer)
        assert 400 <= status < 500, (path, status, answer)
        for internal in ("0x", "<class", "object at", "Traceback", "{'"):
            assert internal not in text, (path, answer)


# ------------------------------------------------------------------- 4. weak items


def test_adding_a_node_needs_its_transport_and_a_local_one_its_root(cluster, admin):
    before = cluster.config.read_text()
    status, body = admin.post("/api/v1/nodes", {"name": "node9", "ip": "127.86.8.19"})
    assert status == 400 and body["error"] == "field 'transport' is required"
    status, body = admin.post("/api/v1/nodes", {"name": "node9", "ip": "127.86.8.19",
                                                "transport": "local"})
    assert status == 400 and "field 'root' is required with transport 'local'" in body["error"]
    status, body = admin.post("/api/v1/nodes", {"name": "node9", "ip": "127.86.8.19",
                                                "transport": "local", "root": "relative/dir"})
    assert status == 400 and "absolute path" in body["error"]
    assert cluster.config.read_text() == before


def test_sync_now_with_a_string_for_nodes_is_refused_on_the_managers_control_socket(cluster):
    if cluster.pm.get_plugin("sync") is None:
        pytest.skip("no replication plugin installed")
    with pytest.raises(ControlError, match="argument 'nodes' must be a list of strings"):
        request(cluster.state("manager"), "sync_now", nodes="node1", timeout=10)
    with pytest.raises(ControlError, match="no node named n"):  # the old letter-by-letter reading
        request(cluster.state("manager"), "sync_now", nodes=["n"], timeout=10)


def test_the_http_redirect_ignores_the_host_header(cluster):
    for host in ("evil.example", "evil.example:2443", "127.86.8.1@evil.example", "[::1]"):
        with socket.create_connection((cluster.ips["manager"], cluster.http_port), timeout=WAIT) as s:
            s.sendall(f"GET /api/v1/nodes?x=1 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
                      .encode())
            head = b""
            while chunk := s.recv(4096):
                head += chunk
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 308"), lines[0]
        location = next(v for k, _, v in (line.partition(": ") for line in lines) if k == "Location")
        assert location == f"{cluster.url('manager')}/api/v1/nodes?x=1", (host, location)


def _closed_by_server(sock: socket.socket) -> bool:
    """Read until the server hangs up (True) or our own generous timeout passes (False)."""
    sock.settimeout(WAIT)
    try:
        while sock.recv(4096):
            pass
        return True
    except (ConnectionResetError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def test_slow_handshakes_and_slow_request_heads_are_closed(cluster):
    ip, port = cluster.ips["manager"], cluster.https_port
    silent = socket.create_connection((ip, port), timeout=WAIT)  # never starts its TLS handshake
    trickle = cluster.ca_context().wrap_socket(socket.create_connection((ip, port), timeout=WAIT),
                                               server_hostname=ip)
    trickle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # ...and never ends its head
    http_trickle = socket.create_connection((ip, cluster.http_port), timeout=WAIT)
    http_trickle.sendall(b"GET / HTTP/1.1\r\n")
    try:
        results = {}
        threads = [threading.Thread(target=lambda n=n, s=s: results.__setitem__(n, _closed_by_server(s)))
                   for n, s in (("silent", silent), ("trickle", trickle), ("http", http_trickle))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WAIT + 5)
        assert results == {"silent": True, "trickle": True, "http": True}
    finally:
        for s in (silent, trickle, http_trickle):
            s.close()
    assert cluster.client().get("/healthz")[0] == 200


def test_connections_past_the_per_address_cap_are_closed_at_once(cluster):
    ip, port = cluster.ips["manager"], cluster.https_port
    source = ("127.86.8.206", 0)
    refused = cluster.hosts["manager"].status()["panel"]["connections_refused"]
    held = []
    try:
        for _ in range(PER_ADDRESS):
            s = socket.create_connection((ip, port), timeout=WAIT, source_address=source)
            held.append(s)
        extra = socket.create_connection((ip, port), timeout=WAIT, source_address=source)
        with extra:
            extra.settimeout(HANDSHAKE_TIMEOUT / 2)  # far less than any deadline: closed at once
            try:
                assert extra.recv(1) == b""
            except ConnectionResetError:
                pass
        assert cluster.hosts["manager"].status()["panel"]["connections_refused"] == refused + 1
        other = cluster.client(source="127.86.8.207")  # another address is not affected
        assert other.get("/healthz")[0] == 200
    finally:
        for s in held:
            s.close()
    client = cluster.client(source="127.86.8.206")
    wait_for(lambda: client.get("/healthz")[0] == 200, what="the address served again")
