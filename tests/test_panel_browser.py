"""The web page in a real headless Chromium (Debian's), driven by Playwright.

Logs in, adds a node and a policy through the forms, runs an action on a
node and sees its output, sees a node go down,
and sees a node's panel without any form. Skips, saying why, where
Chromium or Playwright is missing.
"""

from __future__ import annotations

import shutil

import pytest

from test_panel_fixtures import PASSWORD, PanelCluster, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium; "
                             "contrib/apt-packages.txt lists it)")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                               "(pip install -e '.[test]')")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = PanelCluster(tmp_path_factory.mktemp("browser"), "127.86.6",
                     panel='[panel.actions]\nhello = "echo hello from $CLUSTERKIT_HOST"\n')
    try:
        c.start("manager")
        c.add_user()
        for node in ("node1", "node2"):
            c.join(node)
            c.start(node)
        c.add_user(host="node1")
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser):
    # the cluster CA is not in Chromium's store; TLS itself is covered by test_panel_mtls.py
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.set_default_timeout(15000)
    yield page
    context.close()


def login(page, url: str, password: str = PASSWORD) -> None:
    page.goto(url + "/")
    page.fill("#user", "admin")
    page.fill("#password", password)
    page.click("#login-button")


def test_login_add_a_node_and_a_policy_and_see_a_node_go_down(cluster, page):
    login(page, cluster.url("manager"), "wrong password")
    sync_api.expect(page.locator("#login-error")).to_contain_text("wrong user name or password")
    login(page, cluster.url("manager"))
    sync_api.expect(page.locator("#app")).to_be_visible()
    sync_api.expect(page.locator("#who")).to_contain_text("admin @ manager")
    nodes = page.locator("#nodes")
    sync_api.expect(nodes).to_contain_text("node2")

    form = page.locator("#node-form")
    form.locator("[name=name]").fill("node3")
    form.locator("[name=ip]").fill("127.86.6.13")
    form.locator("[name=root]").fill(str(cluster.tmp / "node3"))
    form.locator("button").click()
    sync_api.expect(nodes).to_contain_text("node3")
    assert "node3" in cluster.hosts["manager"].cluster.hosts

    form = page.locator("#policy-form")
    form.locator("[name=vip]").fill("127.86.6.100")
    form.locator("[name=port]").fill("8080")
    form.locator("[name=members]").fill("node1=2,node2=1")
    form.locator("button").click()
    policies = page.locator("#policies")
    sync_api.expect(policies).to_contain_text("127.86.6.100:8080")
    policy = cluster.hosts["manager"].cluster.policy("127.86.6.100", 8080)
    assert {m.node: m.weight for m in policy.members} == {"node1": 2, "node2": 1}

    form.locator("[name=vip]").fill("10.1.1.1")
    form.locator("[name=port]").fill("8081")
    form.locator("[name=members]").fill("node1=1")
    form.locator("button").click()
    sync_api.expect(page.locator("#error")).to_contain_text("not one of the manager's public_ips")

    page.select_option("#action-node", "node1")
    page.select_option("#action-name", "hello")
    page.locator("#action-form button").click()
    sync_api.expect(page.locator("#jobs")).to_contain_text("hello from node1")

    if cluster.pm.get_plugin("dns") is not None:
        form = page.locator("#zone-form")
        form.locator("[name=zone]").fill("browser.test")
        form.locator("button").click()
        sync_api.expect(page.locator("#zones")).to_contain_text("browser.test")
        form = page.locator("#record-form")
        form.locator("[name=zone]").fill("browser.test")
        form.locator("[name=name]").fill("www")
        form.locator("[name=value]").fill("127.86.6.100")
        form.locator("button").click()

        def added():
            zone = next(z for z in cluster.loop.run(_zones(cluster)) if z["zone"] == "browser.test")
            return zone["records"] >= 3  # SOA, NS, and the new A

        wait_for(added, what="the record added through the form")
        sync_api.expect(page.locator("#error")).to_have_text("")

    row = nodes.locator("tr", has_text="node2")
    sync_api.expect(row.locator(".state").first).to_have_text("up")
    cluster.stop("node2")
    sync_api.expect(row.locator(".state").first).to_have_text("down", timeout=20000)


def test_a_node_panel_has_no_forms(cluster, page):
    login(page, cluster.url("node1"))
    sync_api.expect(page.locator("#banner")).to_contain_text("read-only")
    assert page.locator("#forms").is_hidden()
    sync_api.expect(page.locator("#nodes")).to_contain_text("manager")
    if cluster.pm.get_plugin("sync") is not None:
        sync_api.expect(page.locator("#banner")).to_contain_text("replication (as the manager sees it)")


async def _zones(cluster):
    from clusterkit_dns.panelroutes import zone_store

    return zone_store(cluster.panel("manager").runtime.cluster).zones()


def test_graphs_draw_update_and_follow_a_node(cluster, page, tmp_path):
    import os

    login(page, cluster.url("manager"))
    sync_api.expect(page.locator("#graphs-block")).to_be_visible()
    lag = page.locator("#chart-lag canvas")
    sync_api.expect(lag).to_be_visible()
    points = "() => Chart.getChart(document.querySelector('#chart-lag canvas')).data.labels.length"
    first = page.evaluate(points)
    wait_for(lambda: page.evaluate(points) > first, what="the graphs to gain a point", timeout=20)
    drawn = page.evaluate("() => Chart.getChart(document.querySelector('#chart-lag canvas'))"
                          ".data.datasets.map((d) => d.label)")
    assert "node1" in drawn
    shots = os.environ.get("CLUSTERKIT_SCREENSHOT_DIR")  # docs/: set by whoever refreshes the picture
    page.screenshot(path=str(tmp_path / "panel.png"), full_page=True)
    if shots:
        page.screenshot(path=os.path.join(shots, "panel.png"), full_page=True)

    page.locator("#nodes a", has_text="node1").click()
    sync_api.expect(page.locator("#detail-title")).to_have_text("Node node1")
    assert page.locator("#cluster-tables").is_hidden()
    wait_for(lambda: page.evaluate("() => Chart.getChart(document.querySelector('#chart-lag canvas'))"
                                   ".data.datasets.map((d) => d.label)") == ["node1"],
             what="the node's own graphs")
    page.locator("#detail a").first.click()
    sync_api.expect(page.locator("#cluster-tables")).to_be_visible()
