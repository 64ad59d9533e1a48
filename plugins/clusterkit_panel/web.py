"""The web page: one HTML shell, a script and a style sheet over the JSON API (no build step).

Served from the panel itself (the Content-Security-Policy allows nothing
else). The script logs in, shows the overview (refreshed every few seconds)
and, on the manager, sends the forms as JSON with the session's CSRF token.
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>clusterkit panel</title>
<link rel="stylesheet" href="/static/panel.css">
<script src="/static/chart.js" defer></script>
<script src="/static/panel.js" defer></script>
</head><body>
<header><h1>clusterkit</h1><span id="who"></span>
<button id="logout" hidden>Log out</button></header>
<main>
<section id="login" hidden>
<h2>Log in</h2>
<form id="login-form" method="post" action="/api/v1/login">
<label>User <input name="user" id="user" autocomplete="username" required></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password" required></label>
<button type="submit" id="login-button">Log in</button>
<p class="error" id="login-error"></p>
</form>
</section>
<section id="app" hidden>
<p id="banner"></p>
<div id="detail" hidden><p><a href="#">&larr; the whole cluster</a></p><h2 id="detail-title"></h2>
<table id="detail-table"></table></div>
<div id="graphs-block" hidden><h2 id="graphs-title">The last hour</h2><p id="graphs-note"></p>
<div id="graphs"></div></div>
<div id="cluster-tables">
<h2>Nodes</h2><table id="nodes"></table>
<h2>Policies</h2><table id="policies"></table>
<h2>Sync sets</h2><table id="syncsets"></table>
<div id="dns-block" hidden><h2>DNS</h2><table id="dns"></table></div>
<h2>Remote actions</h2><table id="jobs"></table>
</div>
<div id="forms" hidden>
<h2>Run an action on a node</h2>
<form id="action-form">
<label>Node <select name="node" id="action-node"></select></label>
<label>Action <select name="action" id="action-name"></select></label>
<button type="submit">Queue</button>
</form>
<h2>Add a node</h2>
<form id="node-form">
<label>Name <input name="name" required></label>
<label>IP <input name="ip" required></label>
<label>Transport <input name="transport" value="local" required></label>
<label>Root <input name="root" placeholder="(required with local)"></label>
<button type="submit">Add node</button>
</form>
<h2>Add a policy</h2>
<form id="policy-form">
<label>Public IP <input name="vip" required></label>
<label>Port <input name="port" type="number" min="1" max="65535" required></label>
<label>Service <input name="service" value="http" required></label>
<label>Members <input name="members" placeholder="node1=1,node2=1" required></label>
<label>Scheduler <select name="scheduler"><option>wrr</option><option>rr</option>
<option>lc</option><option>wlc</option><option>sh</option></select></label>
<label>Persistence (s) <input name="persistence" type="number" min="0"></label>
<label>Check <input name="check" placeholder="(the service's)"></label>
<button type="submit">Add policy</button>
</form>
<div id="dns-forms" hidden>
<h2>DNS zones</h2><table id="zones"></table>
<form id="zone-form">
<label>Zone <input name="zone" placeholder="example.com" required></label>
<label>Name servers <input name="ns" placeholder="ns1.example.com. (comma-separated)"></label>
<button type="submit">Add zone</button>
</form>
<form id="record-form">
<label>Zone <input name="zone" required></label>
<label>Name <input name="name" placeholder="www or @" required></label>
<label>Type <input name="type" value="A" required></label>
<label>Value <input name="value" required></label>
<label>TTL <input name="ttl" type="number" min="0"></label>
<button type="submit">Add record</button>
</form>
</div>
<h2>Add a sync set</h2>
<form id="sync-form">
<label>Name <input name="name" required></label>
<label>Path <input name="path" required></label>
<label>On change <input name="on_change"></label>
<button type="submit">Add sync set</button>
</form>
</div>
<p class="error" id="error"></p>
</section>
</main></body></html>
"""

SCRIPT = r"""
"use strict";
let csrf = null, role = null;
const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) =>
  ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

async function api(method, path, body) {
  const headers = {"Accept": "application/json"};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (csrf && method !== "GET") headers["X-CSRF-Token"] = csrf;
  const r = await fetch(path, {method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body)});
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = new Error((data.error || r.statusText) + (data.problems ? ": " + data.problems.join("; ") : ""));
    e.status = r.status; throw e;
  }
  return data;
}

function table(el, columns, rows) {
  el.innerHTML = "<tr>" + columns.map((c) => "<th>" + esc(c[0]) + "</th>").join("") + "</tr>" +
    (rows.length ? rows.map((r) => "<tr>" + columns.map((c) => "<td>" + c[1](r) + "</td>").join("") + "</tr>").join("")
                 : '<tr><td colspan="' + columns.length + '">(none)</td></tr>');
}

function badge(state) {
  const s = state || "unknown";
  return '<span class="state ' + esc(s.split(",")[0]) + '">' + esc(s) + "</span>";
}

function button(label, attrs) {
  return "<button " + Object.entries(attrs).map(([k, v]) => k + '="' + esc(v) + '"').join(" ") + ">" + esc(label) + "</button>";
}

// ------------------------------------------------ detail pages and graphs
// #node/NAME and #policy/VIP:PORT show one node or policy: its facts and its own graphs.
let view = {kind: "cluster", name: ""};
const charts = {};
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf"];

function link(kind, name) {
  return '<a href="#' + kind + "/" + encodeURIComponent(name) + '">' + esc(name) + "</a>";
}

function parseView() {
  const [kind, ...rest] = location.hash.slice(1).split("/");
  const name = decodeURIComponent(rest.join("/"));
  view = (kind === "node" || kind === "policy") && name ? {kind, name} : {kind: "cluster", name: ""};
}

function inView(label) {  // series labels: "node policy", "node", or "host rcode"
  const parts = label.split(" ");
  if (view.kind === "node") return parts[0] === view.name;
  if (view.kind === "policy") return parts[1] === view.name;
  return true;
}

function renderDetail(o) {
  const detail = view.kind !== "cluster";
  $("detail").hidden = !detail; $("cluster-tables").hidden = detail;
  if (!detail) return;
  let rows = [];
  if (view.kind === "node") {
    const n = o.nodes.find((x) => x.name === view.name);
    $("detail-title").textContent = "Node " + view.name + (n ? "" : " (not in the cluster)");
    if (n) rows = [["ip", esc(n.ip)], ["transport", esc(n.transport)], ["health", badge(n.health)],
      ["operator", esc(n.operator || "-")],
      ["panel", badge(n.panel.reachable === true ? "up" : n.panel.reachable === false ? "down" : "unknown") +
                " " + esc(n.panel.error || "")],
      ["replication", n.replication ? esc(n.replication.state) + ", lag " + esc(n.replication.lag) + " s, " +
                      esc(n.replication.pending) + " pending" + (n.replication.last_error ? " — " + esc(n.replication.last_error) : "") : ""],
      ...Object.entries(n.checks || {}).map(([k, c]) => ["check " + k, badge(c.state) + " " + esc(c.output || "")])];
  } else {
    const p = o.policies.find((x) => x.key === view.name);
    $("detail-title").textContent = "Policy " + view.name + (p ? "" : " (not in the cluster)");
    if (p) rows = [["service", esc(p.service)], ["scheduler", esc(p.scheduler)],
      ["connections", p.live.active != null ? esc(p.live.active) + " active, " + esc(p.live.total) + " total" : ""],
      ...Object.entries(p.live.members).map(([n, m]) => ["member " + n, badge(m.state) + " weight " + esc(m.weight) +
        (m.active != null ? ", " + esc(m.active) + " active, " + esc(m.total) + " total" : "")])];
  }
  $("detail-table").innerHTML = rows.map((r) => "<tr><th>" + esc(r[0]) + "</th><td>" + r[1] + "</td></tr>").join("");
}

async function renderGraphs() {
  $("graphs-block").hidden = false;
  if (typeof Chart === "undefined") {
    $("graphs-note").textContent = "The graphs need Chart.js on the manager (apt-get install libjs-chart.js).";
    return;
  }
  const h = await api("GET", "/api/v1/history");
  $("graphs-note").textContent = "Every " + h.step + " s" + (view.kind === "cluster" ? "" : ", for " + view.kind + " " + view.name) + ".";
  const labels = h.t.map((t) => new Date(t * 1000).toLocaleTimeString());
  for (const [name, c] of Object.entries(h.charts)) {
    const series = Object.entries(c.series).filter(([label]) => inView(label));
    let box = $("chart-" + name);
    if (!box) {
      box = document.createElement("div"); box.id = "chart-" + name; box.className = "chart";
      box.innerHTML = "<h3>" + esc(c.title) + " (" + esc(c.unit) + ")</h3><div class=\"plot\"><canvas></canvas></div>";
      $("graphs").appendChild(box);
    }
    box.hidden = series.length === 0;
    const datasets = series.map(([label, values], i) => ({label, data: values, borderColor: COLORS[i % COLORS.length],
      backgroundColor: COLORS[i % COLORS.length], pointRadius: 0, borderWidth: 1.5}));
    const chart = charts[name];
    if (!chart) {
      charts[name] = new Chart(box.querySelector("canvas"), {type: "line", data: {labels, datasets},
        options: {animation: false, responsive: true, maintainAspectRatio: false,
                  scales: {y: {beginAtZero: true}, x: {ticks: {maxTicksLimit: 8}}},
                  plugins: {legend: {position: "bottom", labels: {boxWidth: 12}}}}});
    } else {
      chart.data.labels = labels; chart.data.datasets = datasets; chart.update("none");
    }
  }
}

function renderManager(o) {
  $("banner").textContent = "Cluster " + o.cluster + " — manager " + o.host;
  renderDetail(o);
  renderGraphs().catch((e) => { $("graphs-note").textContent = "graphs: " + e.message; });
  table($("nodes"), [
    ["node", (n) => link("node", n.name)], ["ip", (n) => esc(n.ip)],
    ["panel", (n) => badge(n.panel.reachable === true ? "up" : n.panel.reachable === false ? "down" : "unknown")],
    ["health", (n) => badge(n.health)], ["operator", (n) => esc(n.operator || "")],
    ["replication lag", (n) => n.replication ? esc(n.replication.lag) + " s (" + esc(n.replication.pending) + " pending)" : ""],
    ["queued", (n) => esc(n.queued_jobs)],
    ["", (n) => button("Drain", {"data-op": "drain", "data-node": n.name}) +
               button("Maintenance", {"data-op": "maintenance", "data-node": n.name}) +
               button("Enable", {"data-op": "enable", "data-node": n.name}) +
               button("Remove", {"data-remove-node": n.name})],
  ], o.nodes);
  table($("policies"), [
    ["policy", (p) => link("policy", p.key)], ["service", (p) => esc(p.service)], ["scheduler", (p) => esc(p.scheduler)],
    ["members", (p) => Object.entries(p.live.members).map(([n, m]) =>
        esc(n) + "=" + esc(m.weight) + " " + badge(m.state) + (m.active != null ? " " + esc(m.active) + "/" + esc(m.total) : "")).join("<br>")],
    ["connections", (p) => p.live.active != null ? esc(p.live.active) + " active, " + esc(p.live.total) + " total" : ""],
    ["", (p) => button("Remove", {"data-remove-policy": p.vip + "/" + p.port})],
  ], o.policies);
  renderSync(o.sync_sets, true);
  renderDns(o.dns);
  renderJobs(o.jobs);
  fillSelect($("action-node"), o.nodes.map((n) => n.name));
  fillSelect($("action-name"), o.actions);
  renderZones();
}

async function renderZones() {
  try {
    const zones = await api("GET", "/api/v1/dns/zones");
    $("dns-forms").hidden = false;
    table($("zones"), [["zone", (z) => esc(z.zone)], ["serial", (z) => esc(z.serial ?? "-")],
      ["records", (z) => esc(z.records ?? z.error)],
      ["", (z) => button("Remove", {"data-remove-zone": z.zone})]], zones);
  } catch (e) { $("dns-forms").hidden = true; }
}

function fillSelect(el, values) {
  const keep = el.value;
  const html = values.map((v) => "<option>" + esc(v) + "</option>").join("");
  if (el.innerHTML !== html) { el.innerHTML = html; if (values.includes(keep)) el.value = keep; }
}

function renderSync(sets, editable) {
  table($("syncsets"), [["name", (s) => esc(s.name)], ["path", (s) => esc(s.path)], ["owner", (s) => esc(s.owner)],
    ["", (s) => editable && s.owner === "config" ? button("Remove", {"data-remove-sync": s.name}) : ""]], sets);
}

function renderDns(dns) {
  $("dns-block").hidden = !dns;
  if (!dns) return;
  table($("dns"), [["zone", (z) => esc(z[0])], ["serial", (z) => esc(z[1].serial)],
    ["every host serves this serial", (z) => z[1].converged ? '<span class="state up">converged</span>'
                                                           : '<span class="state down">not converged</span>']],
    Object.entries(dns.zones));
}

function renderJobs(jobs) {
  table($("jobs"), [["#", (j) => esc(j.id)], ["node", (j) => esc(j.node)], ["action", (j) => esc(j.action)],
    ["state", (j) => badge(j.state)], ["exit", (j) => esc(j.exit_code)], ["output", (j) => "<pre>" + esc(j.output || j.error || "") + "</pre>"]], jobs);
}

function renderNode(o) {
  const view = o.manager_view || {};
  const rep = view.replication;
  $("banner").textContent = "Node " + o.host + " of cluster " + o.cluster + " — read-only panel" +
    (rep ? " — replication (as the manager sees it): " + rep.state + ", lag " + rep.lag + " s, " + rep.pending + " pending" : "");
  const checks = view.checks || {};
  table($("nodes"), [["host", (h) => esc(h.name)], ["role", (h) => esc(h.role)], ["ip", (h) => esc(h.ip)]],
        o.definition.hosts);
  table($("policies"), [["policy", (p) => esc(p.key)], ["service", (p) => esc(p.service)],
    ["this node (as the manager sees it)", (p) => checks[p.key] ? badge(checks[p.key].state) + " " + esc(checks[p.key].output || "") : ""]],
    o.definition.policies);
  renderSync(o.definition.sync_sets, false);
  renderDns(null);
  renderJobs((o.manager_view && o.manager_view.jobs) || []);
}

async function refresh() {
  try {
    const o = await api("GET", "/api/v1/overview");
    $("error").textContent = o.manager_view && o.manager_view.error ? o.manager_view.error : "";
    if (o.role === "manager") renderManager(o); else renderNode(o);
  } catch (e) {
    if (e.status === 401) return showLogin();
    $("error").textContent = e.message;
  }
}

function showLogin() {
  $("app").hidden = true; $("login").hidden = false; $("logout").hidden = true; $("who").textContent = "";
}

async function start() {
  try {
    const s = await api("GET", "/api/v1/session");
    csrf = s.csrf; role = s.role;
    $("who").textContent = s.user + " @ " + s.host + " (" + s.role + ")";
    $("login").hidden = true; $("app").hidden = false; $("logout").hidden = false;
    $("forms").hidden = role !== "manager";
    await refresh();
  } catch (e) { showLogin(); }
}

function formData(form) {
  const out = {};
  for (const [k, v] of new FormData(form).entries()) if (v !== "") out[k] = v;
  return out;
}

async function act(fn) {
  $("error").textContent = "";
  try { await fn(); await refresh(); } catch (e) { $("error").textContent = e.message; }
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api("POST", "/api/v1/login", formData(ev.target));
      $("password").value = ""; $("login-error").textContent = "";
      await start();
    } catch (e) { $("login-error").textContent = e.message; }
  });
  $("logout").addEventListener("click", () => act(async () => { await api("POST", "/api/v1/logout"); csrf = null; showLogin(); }));
  $("node-form").addEventListener("submit", (ev) => { ev.preventDefault();
    act(async () => { await api("POST", "/api/v1/nodes", formData(ev.target)); ev.target.reset(); }); });
  $("policy-form").addEventListener("submit", (ev) => { ev.preventDefault();
    const d = formData(ev.target);
    const body = {vip: d.vip, port: Number(d.port), service: d.service, scheduler: d.scheduler, members: {}};
    for (const item of (d.members || "").split(",")) {
      const [n, w] = item.split("="); if (n && n.trim()) body.members[n.trim()] = Number(w ?? 1);
    }
    if (d.persistence) body.persistence = Number(d.persistence);
    if (d.check) body.check = {kind: d.check};
    act(async () => { await api("POST", "/api/v1/policies", body); ev.target.reset(); }); });
  $("action-form").addEventListener("submit", (ev) => { ev.preventDefault();
    const d = formData(ev.target);
    act(() => api("POST", "/api/v1/nodes/" + encodeURIComponent(d.node) + "/actions/" + encodeURIComponent(d.action))); });
  $("zone-form").addEventListener("submit", (ev) => { ev.preventDefault();
    act(async () => { await api("POST", "/api/v1/dns/zones", formData(ev.target)); ev.target.reset(); }); });
  $("record-form").addEventListener("submit", (ev) => { ev.preventDefault();
    const d = formData(ev.target);
    const zone = d.zone; delete d.zone;
    act(async () => { await api("POST", "/api/v1/dns/zones/" + encodeURIComponent(zone) + "/records", d); }); });
  $("sync-form").addEventListener("submit", (ev) => { ev.preventDefault();
    act(async () => { await api("POST", "/api/v1/sync-sets", formData(ev.target)); ev.target.reset(); }); });
  document.body.addEventListener("click", (ev) => {
    const b = ev.target.closest("button"); if (!b) return;
    if (b.dataset.op) act(() => api("POST", "/api/v1/nodes/" + encodeURIComponent(b.dataset.node) + "/operator", {action: b.dataset.op}));
    if (b.dataset.removeNode && confirm("Remove node " + b.dataset.removeNode + "?"))
      act(() => api("DELETE", "/api/v1/nodes/" + encodeURIComponent(b.dataset.removeNode) + "?force=true"));
    if (b.dataset.removePolicy && confirm("Remove policy " + b.dataset.removePolicy + "?"))
      act(() => api("DELETE", "/api/v1/policies/" + b.dataset.removePolicy));
    if (b.dataset.removeZone && confirm("Remove zone " + b.dataset.removeZone + "?"))
      act(() => api("DELETE", "/api/v1/dns/zones/" + encodeURIComponent(b.dataset.removeZone)));
    if (b.dataset.removeSync && confirm("Remove sync set " + b.dataset.removeSync + "?"))
      act(() => api("DELETE", "/api/v1/sync-sets/" + encodeURIComponent(b.dataset.removeSync)));
  });
  window.addEventListener("hashchange", () => { parseView(); refresh(); });
  parseView();
  start();
  setInterval(() => { if (!$("app").hidden) refresh(); }, 3000);
});
"""

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #222; }
header { display: flex; gap: 1em; align-items: center; padding: .5em 1em; background: #234; color: #fff; }
header h1 { font-size: 1.2em; margin: 0; }
main { padding: 1em; }
table { border-collapse: collapse; margin-bottom: 1em; }
th, td { border-bottom: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
pre { margin: 0; max-width: 40em; white-space: pre-wrap; }
form { display: flex; flex-wrap: wrap; gap: .5em; align-items: end; margin-bottom: 1em; }
label { display: flex; flex-direction: column; font-size: .85em; }
.error { color: #b00; }
.state { padding: 0 .4em; border-radius: .3em; background: #ccc; }
.state.up, .state.done { background: #8d8; } .state.down, .state.failed { background: #e88; }
.chart { max-width: 60em; margin-bottom: 1em; } .chart h3 { font-size: 1em; margin: .3em 0; }
.plot { position: relative; height: 220px; }
#detail-table th { width: 10em; }
.state.drain, .state.maintenance, .state.queued, .state.running { background: #ec6; }
"""

STATIC = {"panel.js": (SCRIPT, "application/javascript"), "panel.css": (STYLE, "text/css")}
