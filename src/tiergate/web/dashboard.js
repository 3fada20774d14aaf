// The tiergate dashboard: polls /dashboard/data.json every 2 s and draws the same figures as `tiergate report`.
"use strict";

const POLL_MS = 2000;
const COLOURS = { open: "#2f6f9f", closed: "#c15f3c" };
const SVG = "http://www.w3.org/2000/svg";

function money(v) {
  return "$" + v.toFixed(v !== 0 && Math.abs(v) < 1 ? 6 : 2);
}
function pct(v) {
  return v === null ? "-" : v.toFixed(1) + "%";
}
function ms(v) {
  return v === null ? "-" : Math.round(v) + " ms";
}

function setFigure(id, value, text) {
  const el = document.getElementById(id);
  el.textContent = text;
  el.dataset.value = value === null ? "" : String(value);
}

function fillTable(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(
    ...rows.map(([key, cells]) => {
      const tr = document.createElement("tr");
      tr.dataset.key = key;
      for (const cell of cells) {
        const td = document.createElement("td");
        td.textContent = cell;
        tr.appendChild(td);
      }
      return tr;
    }),
  );
}

function drawBars(id, bars) {
  // bars: [{label, value, colour}] drawn as stacked horizontal rows, scaled to the largest value.
  const svg = document.getElementById(id);
  const width = svg.clientWidth || 400;
  const top = Math.max(...bars.map((b) => b.value), 0);
  svg.setAttribute("height", String(bars.length * 24 + 4));
  svg.replaceChildren(
    ...bars.flatMap((b, i) => {
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("class", "bar");
      rect.setAttribute("x", "110");
      rect.setAttribute("y", String(i * 24 + 4));
      rect.setAttribute("width", String(top > 0 ? ((width - 120) * b.value) / top : 0));
      rect.setAttribute("fill", b.colour);
      const text = document.createElementNS(SVG, "text");
      text.setAttribute("x", "0");
      text.setAttribute("y", String(i * 24 + 17));
      text.textContent = b.label;
      return [text, rect];
    }),
  );
}

function render(s) {
  const failed = s.statuses.error + s.statuses.refused;
  setFigure("requests", s.requests, String(s.requests));
  setFigure("cost", s.cost_usd, money(s.cost_usd));
  setFigure("marginal", s.marginal_usd, money(s.marginal_usd));
  setFigure("all-closed", s.all_closed_usd, money(s.all_closed_usd));
  setFigure("saving", s.saving_usd, money(s.saving_usd));
  setFigure("saving-pct", s.saving_pct, pct(s.saving_pct));
  setFigure("failovers", s.failovers, String(s.failovers));
  setFigure("sovereign", s.sovereign, String(s.sovereign));
  setFigure("guarded", s.guarded, String(s.guarded));
  // the flags' hazard categories, most frequent first: "violent_crimes 3, jailbreak 1"
  document.getElementById("guard-categories").textContent = Object.entries(s.guard_categories || {})
    .map(([name, n]) => `${name} ${n}`)
    .join(", ");
  setFigure("errors", failed, String(failed));
  setFigure("estimated", s.estimated, String(s.estimated));
  fillTable(
    "tiers",
    s.tiers.map((t) => [
      t.tier,
      [t.tier, String(t.requests), pct(100 * t.share), money(t.cost_usd), money(t.counterfactual_usd),
        ms(t.p50_ms), ms(t.p95_ms)],
    ]),
  );
  fillTable("reasons", s.reasons.map((r) => [r.label, [r.label, String(r.requests), pct(100 * r.share)]]));
  fillTable(
    "backends",
    s.backends.map((b) => [
      b.backend,
      [b.backend, b.tier, String(b.requests), String(b.output_tokens), money(b.cost_usd), money(b.marginal_usd),
        b.utilisation === null ? "-" : pct(100 * b.utilisation)],
    ]),
  );
  fillTable("keys", s.keys.map((k) => [k.key, [k.key, String(k.requests), money(k.cost_usd)]]));
  if (s.router) renderRouter(s.router);
  drawBars("mix-chart", s.tiers.map((t) => ({ label: t.tier, value: t.requests, colour: COLOURS[t.tier] || "#888" })));
  drawBars("cost-chart", [
    { label: "tiergate", value: s.cost_usd, colour: "#5b8c3a" },
    { label: "marginal", value: s.marginal_usd, colour: "#9cc47f" },
    { label: "all-closed", value: s.all_closed_usd, colour: COLOURS.closed },
  ]);
  document.getElementById("updated").textContent = new Date().toLocaleTimeString();
  document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
}

function renderRouter(r) {
  // The router in service, the capacity-aware threshold and the shadow pairs (GET /admin/router has the same).
  const c = r.capacity;
  const num = (v, d) => (v === null || v === undefined ? "-" : Number(v).toFixed(d));
  const rows = [
    ["router", (r.current ? r.current.kind : r.kind) + (r.current && r.current.created ? " (" + r.current.created + ")" : "")],
    ["capacity-aware threshold", c.enabled ? "on" : "off"],
    ["open-tier occupancy", c.open_occupancy === null ? "-" : pct(100 * c.open_occupancy)],
    ["threshold: base -> in force", num(c.base_threshold, 3) + " -> " + num(c.threshold, 3)],
    ["threshold at the quality floor (" + num(c.quality_floor, 2) + ")", num(c.floor_threshold, 3)],
  ];
  if (r.shadow) {
    const counts = r.shadow.counts || {};
    rows.push(["shadow share (out of distribution)", num(r.shadow.share, 2) + " (" + num(r.shadow.ood_share, 2) + ")"]);
    rows.push(["shadow pairs judged / in flight", String(counts.judged || 0) + " / " + String(r.shadow.in_flight)]);
    rows.push(["learning spend today", money(r.shadow.spent_today_usd)]);
  }
  if (r.last_error) rows.push(["last reload error", r.last_error]);
  fillTable("router-state", rows.map(([k, v]) => [k, [k, v]]));
}

async function poll() {
  const since = document.getElementById("window").value;
  const key = sessionStorage.getItem("tiergate-key");
  const headers = key ? { Authorization: "Bearer " + key } : {};
  const error = document.getElementById("error");
  try {
    const resp = await fetch("/dashboard/data.json?since=" + encodeURIComponent(since), { headers });
    if (resp.status === 401) {
      document.getElementById("login").classList.add("shown");
      return;
    }
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    document.getElementById("login").classList.remove("shown");
    render(await resp.json());
    error.textContent = "";
  } catch (err) {
    error.textContent = "(" + err.message + ")";
  }
}

document.getElementById("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem("tiergate-key", document.getElementById("key").value);
  poll();
});
document.getElementById("window").addEventListener("change", poll);
poll();
setInterval(poll, POLL_MS);
