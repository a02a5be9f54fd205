// The Hearth dashboard: one page per hash (#overview, ...), each polling its JSON while shown.
"use strict";

const POLL_MS = 3000;
const PAGES = ["overview", "energy", "market", "jobs", "ledger", "settings"];
const CSRF = document.querySelector('meta[name="csrf"]').content;
const charts = {};
let timer = null;
let settingsLoaded = false;
let inflight = Promise.resolve();  // the update being drawn, if any

const $ = (id) => document.getElementById(id);
const credits = (mc) => (mc / 1000).toFixed(3);
const short = (id) => (id && id.length > 16 ? id.slice(0, 8) + "…" + id.slice(-6) : id || "");
const when = (ms) => new Date(ms).toLocaleString();

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fillTable(id, rows) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    tr.append(...cells.map((c) => (c instanceof Node ? c : cell(String(c)))));
    return tr;
  }));
}

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin" });
  if (response.status === 401) { window.location = "/login"; throw new Error("logged out"); }
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function chart(id, title, seriesNames, data, opts = {}) {
  const el = $(id);
  if (charts[id] && charts[id].series.length === seriesNames.length + 1) {
    charts[id].setData(data);
    return;
  }
  if (charts[id]) charts[id].destroy();
  const colours = ["#c2410c", "#15803d", "#1d4ed8", "#7c3aed", "#0f766e"];
  charts[id] = new uPlot({
    title, width: 900, height: 260,
    series: [{}, ...seriesNames.map((label, i) => ({ label, stroke: colours[i % colours.length], width: 2, ...(opts.step ? { paths: uPlot.paths.stepped({ align: 1 }) } : {}) }))],
    axes: [{}, { size: 70 }],
  }, data, el);
}

const render = {
  async overview() {
    const d = await getJSON("/dashboard/api/overview");
    const r = d.reachability;
    $("reach-state").textContent = r.state;
    $("reach-state").className = "big " + (r.state === "online" ? "good" : "bad");
    $("reach-detail").textContent = `${r.peers_connected} peers connected` + (r.degraded.length ? ` · ${r.degraded.join("; ")}` : "");
    $("price-now").textContent = d.price.now_mc_per_tfuel;
    $("price-source").textContent = `energy: ${d.price.energy_source}` + (d.price.available_now ? "" : " · outside available hours");
    $("jobs-working").textContent = d.jobs.working;
    $("jobs-detail").textContent = `${d.jobs.cores_offered} cores offered · ${d.jobs.published_open} own jobs open`;
    const e = d.earnings;
    fillTable("earnings", ["today", "week", "month"].map((p) => [
      p === "today" ? "today" : `this ${p}`, credits(e[p].earned_mc), credits(e[p].energy_cost_mc),
      cell(credits(e[p].net_mc), e[p].net_mc >= 0 ? "good" : "bad"), e[p].jobs, credits(e[p].spent_mc),
    ]));
    $("earnings").dataset.earnedMonthMc = e.month.earned_mc;
    const xs = d.price.curve_mc_per_tfuel.map((_, h) => d.price.curve_start_ms / 1000 + h * 3600);
    chart("price-chart", "price, mc per 10^12 fuel", ["price"], [xs, d.price.curve_mc_per_tfuel], { step: true });
  },

  async energy() {
    let d = null;
    try {
      const response = await fetch("/api/energy", { credentials: "same-origin" });
      if (response.ok) d = await response.json();
    } catch (err) { d = null; }
    renderEnergy(d);
  },

  async market() {
    const d = await getJSON("/dashboard/api/market");
    fillTable("by-source", Object.entries(d.prices_by_source).map(([s, p]) => [s, p.hosts, p.min, p.median, p.max]));
    const rows = [{ ...d.self, peer_id: "this node", rtt_ms: null, self: true }, ...d.offers];
    fillTable("hosts", rows.map((o) => [o.self ? o.peer_id : short(o.peer_id), o.price_mc_per_tfuel, o.cores_offered,
      o.memory_mb_offered, o.energy_source, o.rtt_ms === null ? "–" : o.rtt_ms, o.available_now ? "yes" : "no"]));
  },

  async jobs() {
    const d = await getJSON("/dashboard/api/jobs");
    fillTable("published", d.published.map((j) => [short(j.job_id), j.state,
      j.replicas_detail.map((r) => `${short(r.worker)}: ${r.verdict || r.state}`).join(", "), j.fuel_used, credits(j.paid_mc)]));
    fillTable("worked", d.worked.map((t) => [short(t.job_id), t.state, t.fuel_used, t.price_mc_per_tfuel, credits(t.owed_mc)]));
  },

  async ledger() {
    const d = await getJSON("/dashboard/api/ledger");
    $("balance").textContent = credits(d.balance_mc);
    $("ledger-detail").textContent = `${d.head_seq + 1} entries · ${d.pending_pays} pending pays · ` + (d.writable ? "writable" : `not writable: ${d.unable_reason}`);
    $("verify").textContent = d.verify;
    $("verify").className = "big " + (d.verify.startsWith("FAILED") ? "bad" : "good");
    fillTable("entries", d.entries.map((e) => [e.seq, e.kind, when(e.created_ms),
      e.amount_mc === undefined ? "" : credits(e.amount_mc), short(e.counterparty)]));
    const c = d.balance_curve;
    chart("balance-chart", "balance, milli-credits", ["balance mc"], [c.map((p) => p[0] / 1000), c.map((p) => p[1])], { step: true });
  },

  async settings() {
    if (settingsLoaded) return;  // never overwrite what the host is typing
    const d = await getJSON("/dashboard/api/settings");
    for (const key of ["cores", "memory_mb", "tariff_per_kwh", "power_w", "source"]) $("set-" + key).value = d[key];
    $("set-availability_hours").value = d.availability_hours.join(", ");
    $("set-solar_surplus_hours").value = d.solar_surplus_hours.join(", ");
    $("set-tariff_hours").value = Object.entries(d.tariff_hours).map(([k, v]) => `${k}=${v}`).join(", ");
    $("cores-max").textContent = `this machine has ${d.cores_max}`;
    $("set-cores").max = d.cores_max;
    settingsLoaded = true;
  },
};

// Draws GET /api/energy's agreed shape: {source, state: {...}, history: [{t_ms, ...}]} or null.
function renderEnergy(d) {
  const none = !d || !d.source;
  $("energy-none").style.display = none ? "block" : "none";
  $("energy-live").style.display = none ? "none" : "block";
  if (none) return;
  const s = d.state || {};
  const fmt = (v, unit) => (v === null || v === undefined ? "–" : `${Math.round(v * 10) / 10} ${unit}`);
  const cards = [["Source", d.source], ["Battery", fmt(s.battery_pct, "%")], ["Solar", fmt(s.solar_w, "W")],
    ["Load", fmt(s.load_w, "W")], ["Grid", fmt(s.grid_w, "W")], ["Available", fmt(s.available_w, "W")],
    ["Power cap", fmt(s.power_cap_w, "W")], ["Cores offered", s.cores_offered], ["Paused", s.paused || "no"]];
  $("energy-cards").replaceChildren(...cards.map(([k, v]) => {
    const div = document.createElement("div");
    div.className = "card";
    div.innerHTML = "<h3></h3><p class='big'></p>";
    div.firstChild.textContent = k;
    div.lastChild.textContent = v;
    return div;
  }));
  const h = d.history || [];
  const col = (k) => h.map((p) => (p[k] === undefined ? null : p[k]));
  chart("energy-chart", "battery %, power W", ["battery %", "solar W", "available W", "power cap W", "cores"],
    [h.map((p) => p.t_ms / 1000), col("battery_pct"), col("solar_w"), col("available_w"), col("power_cap_w"), col("cores_offered")]);
}

function list(text) { return text.split(",").map((s) => s.trim()).filter((s) => s); }

function formSettings() {
  const tariffHours = {};
  for (const pair of list($("set-tariff_hours").value)) {
    const [k, v] = pair.split("=");
    tariffHours[k.trim()] = Number(v);
  }
  return {
    cores: Number($("set-cores").value), memory_mb: Number($("set-memory_mb").value),
    availability_hours: list($("set-availability_hours").value),
    solar_surplus_hours: list($("set-solar_surplus_hours").value).map(Number),
    tariff_per_kwh: Number($("set-tariff_per_kwh").value), tariff_hours: tariffHours,
    power_w: Number($("set-power_w").value), source: $("set-source").value,
  };
}

async function saveSettings(event) {
  event.preventDefault();
  const message = $("settings-message");
  message.className = "";
  message.textContent = "saving…";
  const response = await fetch("/dashboard/api/settings", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": CSRF },
    body: JSON.stringify(formSettings()),
  });
  const data = await response.json();
  message.className = response.ok ? "good" : "error";
  message.textContent = response.ok ? "Saved to config.toml and applied: the next ad carries it." : `Not saved: ${data.error}`;
}

async function tick(page) {
  try {
    await render[page]();
    $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loaded = (document.body.dataset.loaded || "") + ` ${page}`;
  } catch (err) {
    $("status").textContent = `update failed: ${err.message}`;
  }
}

function show() {
  const page = PAGES.includes(location.hash.slice(1)) ? location.hash.slice(1) : "overview";
  for (const p of PAGES) $("page-" + p).classList.toggle("active", p === page);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.hash === "#" + page);
  clearInterval(timer);
  settingsLoaded = false;
  inflight = tick(page);
  timer = setInterval(() => { inflight = tick(page); }, POLL_MS);
}

// For the browser test: draw a sample of /api/energy's agreed shape with updates stopped.
function stopUpdates() { clearInterval(timer); return inflight; }
window.hearthDashboard = { renderEnergy, stopUpdates };
async function logOut() {
  await fetch("/logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": CSRF } });
  window.location = "/login";
}

$("logout").addEventListener("click", logOut);
$("settings-form").addEventListener("submit", saveSettings);
window.addEventListener("hashchange", show);
show();
