"""clusterkit_panel_routes: a third-party plugin's routes in the real panel, and refused conflicts."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from clusterkit import hookimpl
from clusterkit.plugins import get_plugin_manager
from clusterkit_panel.api import ROUTES
from clusterkit_panel.routes import PanelError, Route, RouteError, answer, collect
from test_panel_fixtures import PanelCluster
from test_plugins import fake_install

HERE = Path(__file__).parent
PANEL = HERE.parent / "plugins" / "clusterkit_panel"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The panel with ck_notes installed as pip would (dist-info, entry point), on the path."""
    site = tmp_path_factory.mktemp("site")
    shutil.copytree(HERE / "plugins" / "clusterkit-notes" / "ck_notes", site / "ck_notes")
    fake_install(site, "clusterkit-notes", "0.1.0", {"notes": "ck_notes"})
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(site))
        extra = ('\n[notes]\ngreeting = "hi from notes"\nmax_length = 5\n'
                 '\n[[policy]]\nvip = "127.86.21.100"\nport = 7979\nservice = "finger"\n'
                 'members = { node1 = 1 }\n')
        with PanelCluster.manager_only(tmp_path_factory.mktemp("routes"), "127.86.21", extra=extra) as c:
            assert c.pm.get_plugin("notes") is not None
            yield c


def test_a_plugin_route_is_served_behind_the_panel_access_rules(cluster):
    assert cluster.client().get("/api/v1/notes/hosts/node1")[0] == 401
    admin = cluster.login()
    assert admin.get("/api/v1/notes/hosts/node1") == (
        200, {"host": "node1", "role": "node", "ip": "127.86.21.11", "answered_by": "manager",
              "greeting": "hi from notes"})
    status, body = admin.get("/api/v1/notes/hosts/ghost")
    assert (status, body) == (404, {"error": "no host named 'ghost'"})
    assert admin.last.headers["X-Content-Type-Options"] == "nosniff"


def test_a_plugin_route_that_changes_needs_the_csrf_token(cluster):
    admin = cluster.login()
    assert admin.post("/api/v1/notes", {"text": "hi"}, csrf=False)[0] == 403
    assert admin.post("/api/v1/notes", {"text": "hi"}) == (201, {"text": "hi", "by": "admin"})
    assert admin.post("/api/v1/notes", {"text": ""}) == (400, {"error": "field 'text' is required"})
    assert admin.post("/api/v1/notes", {"text": "longer"}) == (
        400, {"error": "field 'text' is longer than 5"})  # [notes] max_length, from the definition
    assert admin.post("/api/v1/notes", "[1,", headers={"Content-Type": "application/json"})[0] == 400


def test_the_plugin_service_and_section_are_the_definitions(cluster):
    """ck_notes adds a service kind and a declared section: the definition uses and checks them."""
    from clusterkit.config import build_cluster
    from clusterkit.definition.tables import ConfigError

    manager = cluster.hosts["manager"]
    assert [p.service for p in manager.cluster.policies] == ["finger"]
    assert manager.cluster.sections["notes"] == {"greeting": "hi from notes", "max_length": 5}
    assert manager.status()["policies"]["127.86.21.100:7979"]["listening"] is True
    text = cluster.config.read_text().replace("max_length = 5", "max_length = 0")
    with pytest.raises(ConfigError, match=r"cluster.toml:\d+: notes.max_length: 0 is out of range"):
        build_cluster(text, str(cluster.config), cluster.pm)


def test_plugin_routes_are_in_the_openapi_document(cluster):
    status, spec = cluster.client().get("/api/openapi.json")
    assert status == 200
    op = spec["paths"]["/api/v1/notes"]["post"]
    assert op["operationId"] == "note_add_post" and "manager only" in op["description"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["properties"] == {
        "text": {"type": "string"}}
    assert spec["paths"]["/api/v1/notes/hosts/{name}"]["get"]["parameters"][0]["name"] == "name"


def test_the_dns_plugin_routes_map_its_typed_errors(cluster):
    """ZoneNotFound is a 404, any other ZoneEditError a 400: by type, not by message text."""
    if cluster.pm.get_plugin("dns") is None:
        pytest.skip("no DNS plugin installed")
    admin = cluster.login()
    status, body = admin.delete("/api/v1/dns/zones/absent.test")
    assert status == 404 and body["error"].startswith("no zone absent.test.")
    assert admin.get("/api/v1/dns/zones/absent.test/records")[0] == 404
    assert admin.post("/api/v1/dns/zones", {"zone": "kept.test"})[0] == 201
    status, body = admin.post("/api/v1/dns/zones", {"zone": "kept.test"})
    assert status == 400 and "already exists" in body["error"]
    status, body = admin.post("/api/v1/dns/zones/kept.test/records",
                              {"name": "www", "type": "A", "value": "no zone here"})
    assert status == 400 and "no zone" in body["error"], body  # the text would say 404


def _pm_with(*plugins):
    pm = get_plugin_manager(load_entrypoints=False)
    for name, plugin in plugins:
        pm.register(plugin, name=name)
    return pm


async def _ok(panel, request):
    return answer({})


def _plugin(*routes):
    class Plugin:
        @hookimpl
        def clusterkit_panel_routes(self):
            return list(routes)

    return Plugin()


def test_a_route_already_served_is_refused_naming_both_owners():
    taken = _plugin(Route("GET", "/api/v1/nodes", _ok, "operator", "shadows the panel"))
    with pytest.raises(RouteError, match="plugin 'evil': GET /api/v1/nodes is already served "
                                         "by the panel"):
        collect(ROUTES, _pm_with(("evil", taken)))
    first = _plugin(Route("GET", "/api/v1/x", _ok, "operator", "x"))
    second = _plugin(Route("GET", "/api/v1/y", _ok, "operator", "y", name="_ok_get"))
    with pytest.raises(RouteError, match="operation '_ok_get' is already served by plugin"):
        collect(ROUTES, _pm_with(("one", first), ("two", second)))


@pytest.mark.parametrize("route, problem", [
    (Route("TRACE", "/api/v1/x", _ok, "operator", "x"), "the method must be one of"),
    (Route("GET", "api/v1/x", _ok, "operator", "x"), "the path must start with '/'"),
    (Route("GET", "/api/v1/x", _ok, "root", "x"), "auth must be one of"),
    (Route("GET", "/api/v1/x", _ok, "operator", "x", where="everywhere"), "where must be one of"),
    (Route("GET", "/api/v1/x", lambda panel, request: None, "operator", "x"), "async function"),
    ("GET /api/v1/x", "not a clusterkit_panel.routes.Route"),
])
def test_a_malformed_route_is_refused_naming_the_plugin(route, problem):
    with pytest.raises(RouteError, match=f"plugin 'bad'.*{problem}"):
        collect(ROUTES, _pm_with(("bad", _plugin(route))))


def test_a_panel_error_has_a_status_the_panel_answers_with():
    assert PanelError(404, "gone").status == 404
    with pytest.raises(ValueError, match="PanelError status 418"):
        PanelError(418, "teapot")


def test_the_panel_imports_no_other_plugin():
    """Other plugins reach the panel through its hook; the panel names none of them."""
    for path in PANEL.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                assert top in ("clusterkit", "clusterkit_panel") or not top.startswith("clusterkit_"), \
                    f"{path.name} imports {name}"
