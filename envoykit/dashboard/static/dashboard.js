// The envoykit mesh page: polls /api/state, draws the graph (layout by dagre, SVG by hand) and the cards.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const $ = (sel) => document.querySelector(sel);
let layoutKey = "";  // node and edge ids of the drawn layout: a new set lays the graph out again
let selected = null;
let lastState = null;

function el(tag, attrs = {}, text = "") {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== "") e.textContent = text;
  return e;
}
function svg(tag, attrs = {}, text = "") {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== "") e.textContent = text;
  return e;
}
function rate(v) {
  if (v === undefined || v === null) return "–";
  if (v === 0) return "0";
  if (v < 0.1) return v.toFixed(2);
  if (v < 10) return v.toFixed(1);
  return Math.round(v).toString();
}
function count(v) { return v === undefined ? "0" : Math.round(v).toLocaleString("en"); }
function pct(v) { return v === null || v === undefined ? "–" : `${v.toFixed(v < 10 ? 1 : 0)}%`; }
function ms(v) { return v === null || v === undefined ? "–" : v < 10 ? v.toFixed(1) : Math.round(v).toString(); }
function ago(t) {
  if (!t) return "never";
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${(s / 3600).toFixed(1)} h ago`;
}

// ---- graph ----
const KIND_LABEL = { gateway: "gateway", service: "service", workload: "workload", external: "client" };

function edgeClass(e) {
  if (e.idle || !e.rps) return "idle";
  if (e.error_rate > 0.1) return "bad";
  if (e.error_rate > 0.01) return "warn";
  return "ok";
}
function edgeLines(e) {
  if (e.idle) return ["", ""];
  const first = `${rate(e.rps)} rps · ${pct(100 * (e.error_rate || 0))} 5xx`;
  const second = e.p50_ms === null || e.p50_ms === undefined ? "" : `p50 ${ms(e.p50_ms)} · p99 ${ms(e.p99_ms)} ms`;
  return [first, second];
}
function mtlsText(m) {
  return { mutual_tls: "mTLS ✓", mixed: "mixed mTLS", none: "plaintext" }[m] || "";
}

let layout = null;

function fillEdge(ge, e, lay) {
  const cls = edgeClass(e);
  ge.setAttribute("class", `edge ${cls}`);
  ge.setAttribute("data-rps", (e.rps || 0).toFixed(3));
  ge.setAttribute("data-mtls", e.mtls || "");
  ge.setAttribute("data-requests", String(Math.round(e.requests || 0)));
  const pts = lay.points;
  let d = `M${pts[0].x},${pts[0].y}`;
  for (let i = 1; i < pts.length - 1; i++) {
    const mid = { x: (pts[i].x + pts[i + 1].x) / 2, y: (pts[i].y + pts[i + 1].y) / 2 };
    d += ` Q${pts[i].x},${pts[i].y} ${mid.x},${mid.y}`;
  }
  d += ` L${pts[pts.length - 1].x},${pts[pts.length - 1].y}`;
  const width = e.idle ? 1.5 : Math.min(7, 1.5 + Math.log2(1 + (e.rps || 0)));
  const kids = [svg("path", { d, "stroke-width": width.toFixed(1), "marker-end": `url(#arrow-${cls})` })];
  const [l1, l2] = edgeLines(e);
  if (l1) {
    kids.push(svg("text", { x: lay.x, y: lay.y - 10, class: "rate" }, l1));
    if (l2) kids.push(svg("text", { x: lay.x, y: lay.y + 4, class: "latency" }, l2));
    const mt = mtlsText(e.mtls);
    if (mt) kids.push(svg("text", { x: lay.x, y: lay.y + 18, class: e.mtls === "none" ? "plain" : "mtls" }, mt));
  }
  kids.push(svg("title", {}, `${e.source} → ${e.target}\n${count(e.requests)} requests since start`));
  ge.replaceChildren(...kids);
}

function fillNode(gn, n) {
  const cls = ["node", n.kind];
  if (n.connected === false) cls.push("disconnected");
  if (n.id === selected) cls.push("selected");
  gn.setAttribute("class", cls.join(" "));
  gn.setAttribute("data-rps", (n.rps || 0).toFixed(3));
  let sub = n.detail || "";
  if (n.connected === false) sub = "not connected to xDS";
  else if (n.rps) sub = `${sub ? sub + " · " : ""}${rate(n.rps)} rps in`;
  gn.replaceChildren(
    svg("rect", { width: NODE_W, height: NODE_H, rx: n.kind === "service" ? NODE_H / 2 : 8 }),
    svg("text", { x: NODE_W / 2, y: 16, class: "kind" }, KIND_LABEL[n.kind] || n.kind),
    svg("text", { x: NODE_W / 2, y: 34, class: "name" }, n.label),
    svg("text", { x: NODE_W / 2, y: 50, class: "sub" }, sub),
  );
}

const NODE_W = 156, NODE_H = 58;

function drawGraph(graph) {
  const root = $("#graph");
  const key = JSON.stringify([graph.nodes.map((n) => n.id).sort(), graph.edges.map((e) => `${e.id}${e.idle ? ":idle" : ""}`).sort()]);
  if (key !== layoutKey) {
    const g = new dagre.graphlib.Graph();
    g.setGraph({ rankdir: "LR", nodesep: 22, ranksep: 30, edgesep: 14, marginx: 12, marginy: 12 });
    g.setDefaultEdgeLabel(() => ({}));
    for (const n of graph.nodes) g.setNode(n.id, { width: NODE_W, height: NODE_H });
    // labels sit beside their edge ("l": above it, left to right), not across the line
    for (const e of graph.edges) g.setEdge(e.source, e.target, { width: e.idle ? 30 : 140, height: e.idle ? 4 : 44, labelpos: "l", labeloffset: 4 });
    dagre.layout(g);
    layout = g;
    const box = g.graph();
    const w = Math.max(box.width, 300), h = Math.max(box.height, 160);
    root.setAttribute("viewBox", `0 0 ${w} ${h}`);
    root.style.height = `${Math.min(620, Math.max(240, (h / w) * root.clientWidth))}px`;
    const defs = svg("defs");
    for (const c of ["ok", "warn", "bad", "idle"]) {
      const m = svg("marker", { id: `arrow-${c}`, viewBox: "0 0 10 10", refX: "9", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
      m.append(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: getComputedStyle(document.documentElement).getPropertyValue(`--${c}`).trim() }));
      defs.append(m);
    }
    const edges = svg("g", { class: "edges" });
    for (const e of graph.edges) edges.append(svg("g", { "data-id": e.id, "data-source": e.source, "data-target": e.target }));
    const nodes = svg("g", { class: "nodes" });
    for (const n of graph.nodes) {
      const lay = g.node(n.id);
      const gn = svg("g", { "data-id": n.id, "data-kind": n.kind, transform: `translate(${lay.x - NODE_W / 2},${lay.y - NODE_H / 2})`, tabindex: "0" });
      gn.addEventListener("click", () => openDetail(nodeById(n.id)));
      gn.addEventListener("keydown", (ev) => { if (ev.key === "Enter") openDetail(nodeById(n.id)); });
      nodes.append(gn);
    }
    root.replaceChildren(defs, edges, nodes);
    layoutKey = key;
  }
  for (const e of graph.edges) fillEdge(root.querySelector(`g.edges > g[data-id="${CSS.escape(e.id)}"]`), e, layout.edge(e.source, e.target));
  for (const n of graph.nodes) fillNode(root.querySelector(`g.nodes > g[data-id="${CSS.escape(n.id)}"]`), n);
}

function nodeById(id) {
  return lastState.graph.nodes.find((n) => n.id === id);
}

// ---- cards ----
function drawControl(c) {
  const body = $("#control-body");
  body.replaceChildren();
  if (!c.reachable) {
    body.append(el("p", { class: "badtext" }, c.error || "unreachable"));
    return;
  }
  const all = c.connected >= c.expected;
  const dl = el("dl", { class: "kv" });
  const row = (k, v, cls = "") => { dl.append(el("dt", {}, k)); const dd = el("dd", cls ? { class: cls } : {}); if (v instanceof Node) dd.append(v); else dd.textContent = v; dl.append(dd); };
  row("Envoys", `${c.connected} of ${c.expected} connected`, all ? "good big" : "badtext big");
  if (c.missing.length) row("missing", c.missing.join(", "), "badtext");
  row("config version", `generation ${c.generation}, applied ${ago(c.applied_at)}`);
  row("last push", ago(c.last_push));
  row("NACKs", `${c.nacks.length}`, c.nacks.length ? "badtext" : "good");
  if (c.last_error) row("refused change", c.last_error, "badtext");
  body.append(dl);
  const ul = el("ul", { class: "nacks", id: "nacks" });
  for (const n of c.nacks) {
    const li = el("li", { class: "nack", "data-node": n.node, "data-type": n.type });
    li.append(el("b", {}, `${n.node} refused ${n.type} ${n.version}`), el("span", {}, ` · ${ago(n.at)}`));
    li.append(el("span", { class: "msg" }, n.message));
    ul.append(li);
  }
  body.append(ul);
}

function drawHealth(list) {
  const ul = $("#health");
  ul.replaceChildren();
  for (const h of list) {
    const li = el("li", { "data-name": h.name, "data-up": String(h.up) });
    li.append(el("span", { class: `dot ${h.up ? "up" : "down"}` }), el("span", {}, h.name), el("span", { class: "kind" }, h.kind || ""));
    if (!h.up && h.error) li.append(el("span", { class: "err" }, h.error));
    ul.append(li);
  }
}

function cell(total, rps, cls) {
  const td = el("td", { class: `num ${cls}${total > 0 ? " some" : ""}` }, count(total));
  if (rps) td.append(el("span", { class: "rate" }, `(${rate(rps)}/s)`));
  return td;
}

function emptyRow(cols, text) {
  const tr = el("tr");
  tr.append(el("td", { colspan: cols, class: "empty" }, text));
  return tr;
}

function drawAuthz(rows) {
  const tb = $("#authz tbody");
  tb.replaceChildren();
  if (!rows.length) { tb.append(emptyRow(4, "no decisions yet")); return; }
  for (const r of rows) {
    const tr = el("tr", { "data-rule": r.rule });
    tr.append(el("td", { class: "rule" }, r.rule), cell(r.allow || 0, r.allow_rps, "allow"), cell(r.deny || 0, r.deny_rps, "deny"), cell(r.dry_run_deny || 0, r.dry_run_deny_rps, "dry"));
    tb.append(tr);
  }
}

function drawRatelimit(rows) {
  const tb = $("#ratelimit tbody");
  tb.replaceChildren();
  if (!rows.length) { tb.append(emptyRow(6, "no rate-limit descriptors seen yet")); return; }
  for (const r of rows) {
    const tr = el("tr", { "data-key": r.key, "data-domain": r.domain });
    tr.append(el("td", {}, r.domain), el("td", { class: "rule" }, r.key), cell(r.hits, r.hits_rps, "hits"), cell(r.over_limit, r.over_limit_rps, "over"), cell(r.near_limit, r.near_limit_rps, "near"), cell(r.shadow_mode, r.shadow_mode_rps, "shadow"));
    tb.append(tr);
  }
}

function drawCanary(routes) {
  const box = $("#canary");
  box.replaceChildren();
  if (!routes.length) { box.append(el("p", { class: "empty" }, "no weighted routes in the mesh")); return; }
  for (const r of routes) {
    const div = el("div", { class: "canary-route", "data-route": `${r.virtual_service}/${r.route}` });
    div.append(el("h3", {}, `${r.virtual_service} · route ${r.route}`));
    for (const v of r.versions) {
      const row = el("div", { class: "canary-row", "data-version": v.version });
      const bars = el("div", { class: "bars" });
      bars.append(el("div", { class: "bar weight", style: `width:${v.weight || 0}%` }));
      const shown = v.observed_pct !== null ? v.observed_pct : v.observed_total_pct;
      bars.append(el("div", { class: "bar observed", style: `width:${shown || 0}%` }));
      const fig = el("span", { class: "fig" });
      fig.append("weight ", el("b", {}, `${v.weight ?? "–"}%`), " · observed ", el("b", { class: "observed" }, pct(shown)));
      fig.append(v.observed_pct !== null ? ` (${rate(v.rps)} rps)` : " (since start)");
      row.append(el("span", {}, `${v.service} ${v.version}`), bars, fig);
      div.append(row);
    }
    box.append(div);
  }
}

// ---- detail drawer ----
function routeRows(rds) {
  const rows = [];
  for (const [name, rc] of Object.entries(rds || {})) {
    for (const vh of rc.virtualHosts || []) {
      for (const r of vh.routes || []) {
        const m = r.match || {};
        const match = m.prefix !== undefined ? `prefix ${m.prefix}` : m.path !== undefined ? `path ${m.path}` : m.safeRegex ? `regex ${m.safeRegex.regex}` : m.pathSeparatedPrefix ? `prefix ${m.pathSeparatedPrefix}` : JSON.stringify(m);
        let to = "";
        if (r.route && r.route.cluster) to = r.route.cluster;
        else if (r.route && r.route.weightedClusters) to = r.route.weightedClusters.clusters.map((c) => `${c.name} (${c.weight})`).join(", ");
        else if (r.directResponse) to = `direct response ${r.directResponse.status}`;
        else if (r.redirect) to = "redirect";
        rows.push([name, (vh.domains || []).join(" "), r.name || "", match, to]);
      }
    }
  }
  return rows;
}
function clusterRows(cds, eds) {
  return Object.entries(cds || {}).map(([name, c]) => {
    const la = (eds || {})[name] || c.loadAssignment;
    const eps = la ? (la.endpoints || []).flatMap((l) => (l.lbEndpoints || []).map((e) => { const a = e.endpoint.address.socketAddress; return `${a.address}:${a.portValue}`; })) : [];
    const tls = c.transportSocket ? (c.transportSocket.name || "tls").replace("envoy.transport_sockets.", "") : "";
    return [name, c.type || (c.edsClusterConfig ? "EDS" : ""), c.lbPolicy || "ROUND_ROBIN", tls, eps.join(", ")];
  });
}
function table(head, rows, cls = "") {
  const t = el("table", cls ? { class: cls } : {});
  const tr = el("tr");
  for (const h of head) tr.append(el("th", {}, h));
  const thead = el("thead");
  thead.append(tr);
  t.append(thead);
  const tb = el("tbody");
  for (const r of rows) { const row = el("tr"); for (const c of r) row.append(el("td", {}, String(c))); tb.append(row); }
  t.append(tb);
  return t;
}

async function openDetail(n) {
  selected = n.id;
  document.querySelectorAll("g.node").forEach((g) => g.classList.toggle("selected", g.dataset.id === n.id));
  $("#detail").hidden = false;
  $("#detail").dataset.id = n.id;
  $("#detail-title").textContent = `${KIND_LABEL[n.kind] || n.kind} ${n.label}`;
  const body = $("#detail-body");
  body.replaceChildren(el("p", { class: "empty" }, "loading…"));
  let d;
  try {
    const r = await fetch(`/api/node/${encodeURIComponent(n.id)}`);
    d = await r.json();
    if (!r.ok) throw new Error(d.error || r.status);
  } catch (err) { body.replaceChildren(el("p", { class: "badtext" }, String(err))); return; }
  body.replaceChildren();
  body.append(el("h3", {}, "Configuration sent by the control plane"));
  if (!d.config.length) body.append(el("p", { class: "empty" }, "no Envoy of the mesh behind this node"));
  for (const c of d.config) {
    const sec = el("section", { class: "config", "data-node": c.node });
    sec.append(el("h4", {}, `Envoy ${c.node}`));
    if (c.error) { sec.append(el("p", { class: "badtext" }, c.error)); body.append(sec); continue; }
    const res = c.resources;
    sec.append(el("h4", {}, "routes (RDS)"), table(["route config", "domains", "route", "match", "to"], routeRows(res.RDS), "routes"));
    sec.append(el("h4", {}, "clusters (CDS, EDS)"), table(["cluster", "discovery", "lb", "transport", "endpoints"], clusterRows(res.CDS, res.EDS), "clusters"));
    sec.append(el("h4", {}, "listeners (LDS)"), table(["listener", "address"], Object.entries(res.LDS || {}).map(([k, l]) => [k, l.address && l.address.socketAddress ? `${l.address.socketAddress.address}:${l.address.socketAddress.portValue}` : ""])));
    const raw = el("details");
    raw.append(el("summary", {}, "raw resources (JSON)"), el("pre", {}, JSON.stringify(res, null, 1)));
    sec.append(raw);
    body.append(sec);
  }
  body.append(el("h3", {}, `Recent access-log lines (${d.access_log.length})`));
  if (!d.access_log_files.length) body.append(el("p", { class: "empty" }, "no access-log files given (--access-log)"));
  else if (!d.access_log.length) body.append(el("p", { class: "empty" }, `nothing about ${d.names.join(", ")} in ${d.access_log_files.join(", ")}`));
  else {
    // newest first; authz decision-log lines say the rule, access-log lines the response flags
    const rows = d.access_log.slice().reverse().map((l) => [
      shortTime(l["@timestamp"] || l.time || l.start_time || ""), l.method || "", l.path || "",
      l.response_code ?? l.status ?? "", l.rule ? `${l.result} by ${l.rule}` : l.response_flags || "",
      l.source_workload || shortPrincipal(l.principal || l.source_principal || ""),
      l.destination_workload || l.host || l.authority || "",
      ms(l.duration_ms ?? (l.duration_us !== undefined ? l.duration_us / 1000 : null)), l._file,
    ]);
    const t = table(["time", "method", "path", "status", "decision / flags", "from", "to", "ms", "file"], rows, "log");
    t.querySelectorAll("tbody tr").forEach((tr) => { const td = tr.children[3]; const c = String(td.textContent); if (c.startsWith("5")) td.className = "code5"; else if (c.startsWith("4")) td.className = "code4"; });
    const wrap = el("div", { class: "scroll-x" });
    wrap.append(t);
    body.append(wrap);
  }
}

// 2026-12-03T10:28:59.132Z → 10:28:59.132 (the page is about the last minutes)
function shortTime(t) {
  const m = /T(\d\d:\d\d:\d\d(\.\d+)?)/.exec(String(t));
  return m ? m[1] : String(t);
}
// spiffe://envoykit.local/ns/default/sa/frontend → sa/frontend (the full ID is the row's title)
function shortPrincipal(p) {
  const i = p.lastIndexOf("/sa/");
  return i >= 0 ? p.slice(i + 1) : p;
}

// ---- loop ----
async function refresh() {
  let s;
  try {
    const r = await fetch("/api/state", { cache: "no-store" });
    if (r.status === 503) { $("#meta").textContent = "waiting for the first poll…"; return; }
    s = await r.json();
  } catch (err) {
    $("#meta").textContent = `dashboard unreachable: ${err}`;
    return;
  }
  lastState = s;
  if (selected && !s.graph.nodes.some((n) => n.id === selected)) selected = null;
  $("#meta").textContent = `${s.source} · updated ${new Date(s.at * 1000).toLocaleTimeString()} · every ${s.interval_s}s`;
  $("#window").textContent = s.window_s ? `${Math.round(s.window_s)} s` : "–";
  const errs = $("#errors");
  errs.hidden = !s.errors.length;
  errs.textContent = s.errors.join("\n");
  drawGraph(s.graph);
  drawControl(s.control);
  drawHealth(s.health);
  drawCanary(s.canary);
  drawAuthz(s.authz);
  drawRatelimit(s.ratelimit);
  document.body.dataset.updated = String(s.at);
}

$("#detail-close").addEventListener("click", () => { $("#detail").hidden = true; selected = null; document.querySelectorAll("g.node.selected").forEach((g) => g.classList.remove("selected")); });
refresh();
setInterval(refresh, 2000);
