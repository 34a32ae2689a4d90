// driftshare dashboard: renders the embedded snapshot at once, then every pushed one.
"use strict";
(() => {
  const $ = (sel) => document.querySelector(sel);
  const SVG = "http://www.w3.org/2000/svg";
  const ENTITIES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  // Market names come from chain accounts: escape everything that goes through innerHTML.
  const esc = (value) => String(value).replace(/[&<>"']/g, (c) => ENTITIES[c]);
  const COLUMNS = [
    { key: "symbol", label: "Market", cls: "sym text", fmt: (r) => r.symbol },
    { key: "status", label: "Status", cls: "text", fmt: (r) => r.status.replace(/_/g, " "), html: (r) => `<span class="badge ${badgeClass(r.status)}">${esc(r.status.replace(/_/g, " "))}</span>` },
    { key: "rate_hourly", label: "Hourly", cls: "num", fmt: (r) => pct(r.rate_hourly == null ? null : r.rate_hourly * 100, 4), sign: (r) => r.rate_hourly },
    { key: "rate_8h", label: "8h", cls: "num", fmt: (r) => pct(r.rate_8h, 4), sign: (r) => r.rate_8h },
    { key: "rate_annual", label: "APR", cls: "num", fmt: (r) => pct(r.rate_annual, 2), sign: (r) => r.rate_annual },
    { key: "predicted_rate_hourly", label: "Predicted 1h", cls: "num", fmt: (r) => pct(r.predicted_rate_hourly == null ? null : r.predicted_rate_hourly * 100, 4), sign: (r) => r.predicted_rate_hourly },
    { key: "spark", label: "Trend", cls: "spark", sortable: false },
    { key: "mark_price", label: "Mark", cls: "num", fmt: (r) => price(r.mark_price) },
    { key: "oracle_price", label: "Oracle", cls: "num", fmt: (r) => price(r.oracle_price) },
    { key: "open_interest_usd", label: "OI (USD)", cls: "num", fmt: (r) => usd(r.open_interest_usd) },
    { key: "next_funding_ts", label: "Next funding", cls: "num", fmt: (r) => countdown(r.next_funding_ts) },
    { key: "data_age_s", label: "Data age", cls: "num", fmt: (r) => age(r) },
  ];

  let snap = JSON.parse($("#initial").textContent);
  let offset = snap.server_time - Date.now() / 1000;
  let receivedAt = Date.now() / 1000;
  let sortKey = "market_index";
  let sortDir = 1;
  let filter = "";
  const rows = new Map();

  const now = () => Date.now() / 1000 + offset;
  const badgeClass = (s) => (s === "active" ? "active" : /paused|reduce_only|initialized/.test(s) ? "paused" : "closed");
  function pct(v, digits) { return v == null ? "–" : `${v >= 0 ? "+" : ""}${v.toFixed(digits)}%`; }
  function price(v) {
    if (v == null) return "–";
    if (v >= 1000) return v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    if (v >= 1) return v.toFixed(4);
    return v.toPrecision(5);
  }
  function usd(v) {
    if (v == null) return "–";
    const units = [[1e9, "B"], [1e6, "M"], [1e3, "K"]];
    for (const [n, u] of units) if (Math.abs(v) >= n) return `$${(v / n).toFixed(2)}${u}`;
    return `$${v.toFixed(0)}`;
  }
  function duration(s) {
    s = Math.max(0, Math.floor(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    const two = (n) => String(n).padStart(2, "0");
    return h ? `${h}:${two(m)}:${two(sec)}` : `${m}:${two(sec)}`;
  }
  // Past its time, a funding update waits for the next crank: 0:00 until it lands, never "due".
  function countdown(ts) { return ts == null ? "–" : duration(ts - now()); }
  function age(r) { const a = r.data_age_s + (Date.now() / 1000 - receivedAt); return a < 60 ? `${a.toFixed(1)}s` : duration(a); }
  function secs(v) { return v == null ? "–" : v < 10 ? `${v.toFixed(2)} s` : duration(v); }

  function sparkline(values) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 110 22");
    svg.setAttribute("preserveAspectRatio", "none");
    if (values.length < 2) return svg;
    const lo = Math.min(0, ...values), hi = Math.max(0, ...values), span = hi - lo || 1;
    const y = (v) => 20 - ((v - lo) / span) * 18;
    const zero = document.createElementNS(SVG, "line");
    zero.setAttribute("x1", "0"); zero.setAttribute("x2", "110");
    zero.setAttribute("y1", y(0)); zero.setAttribute("y2", y(0));
    zero.setAttribute("stroke", "#33446a"); zero.setAttribute("stroke-dasharray", "2 2");
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", values.map((v, i) => `${(i / (values.length - 1)) * 110},${y(v).toFixed(2)}`).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", values[values.length - 1] >= 0 ? "#38d39f" : "#ff6b81");
    line.setAttribute("stroke-width", "1.5");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(zero, line);
    return svg;
  }

  function chart(el, values, { max, fmt }) {
    const pts = values.map((v, i) => [i, v]).filter(([, v]) => v != null);
    const top = max ?? Math.max(1, ...pts.map(([, v]) => v));
    const n = Math.max(values.length - 1, 1);
    const xy = pts.map(([i, v]) => `${((i / n) * 300).toFixed(1)},${(78 - (v / top) * 60).toFixed(1)}`);
    const last = pts.length ? pts[pts.length - 1][1] : null;
    el.innerHTML = `<svg viewBox="0 0 300 80" preserveAspectRatio="none">
      <line x1="0" x2="300" y1="18" y2="18" stroke="#22304d" stroke-dasharray="3 3"/>
      <line x1="0" x2="300" y1="78" y2="78" stroke="#22304d"/>
      ${xy.length > 1 ? `<polygon points="0,78 ${xy.join(" ")} ${xy[xy.length - 1].split(",")[0]},78" fill="rgba(124,156,255,.16)"/>
      <polyline points="${xy.join(" ")}" fill="none" stroke="#7c9cff" stroke-width="2" vector-effect="non-scaling-stroke"/>` : ""}
      </svg><span class="now">${fmt(last)}</span><span class="axis top">${fmt(top)}</span><span class="axis bottom">0</span>`;
  }

  function renderPanel(m) {
    const tiles = [
      ["References", m.references],
      ["Subscription", m.subscription_mode ?? "–"],
      ["RPC req/s", m.rpc_requests_per_s == null ? "–" : m.rpc_requests_per_s.toFixed(2)],
      ["RPC requests", m.rpc_requests],
      ["429s", m.rate_limited],
      ["Retries", m.retries],
      ["Cache hit ratio, last s", m.cache_hit_ratio == null ? "–" : `${(m.cache_hit_ratio * 100).toFixed(1)}%`],
      ["Markets", `${m.markets}${m.stale_markets ? ` (${m.stale_markets} stale)` : ""}`],
      ["Client ready in", secs(m.time_to_ready_s)],
      ["First data in", secs(m.time_to_first_data_s)],
      ["Uptime", duration(m.uptime_s + (Date.now() / 1000 - receivedAt))],
      ["Slot", m.data_slot ?? "–"],
    ];
    $("#kpis").innerHTML = tiles.map(([k, v]) => `<div class="kpi"><span>${k}</span><b>${esc(v)}</b></div>`).join("");
    const health = $("#health");
    health.textContent = m.health;
    health.className = `badge ${m.health}`;
    health.title = m.last_error || "";
  }

  function renderEngines(engines) {
    $("#engines-card").hidden = engines.length === 0;
    $("#engines tbody").innerHTML = engines.map((e) => {
      const s = e.last_signal;
      const signal = s ? `${esc(s.action.replace(/_/g, " "))} · <b>${esc(s.market)}</b> · <span class="muted">${esc(s.detail)}</span>` : '<span class="muted">waiting</span>';
      return `<tr><td class="text">${esc(e.name)}</td><td class="num">${e.interval_s}s</td><td class="num">${e.ticks}</td><td class="num ${e.errors ? "neg" : ""}">${e.errors}</td><td class="text">${signal}</td></tr>`;
    }).join("");
  }

  function renderFleet(f) {
    $("#fleet-card").hidden = !f || f.members.length === 0;
    if (!f) return;
    $("#fleet-role").textContent = f.role;
    $("#fleet-epoch").textContent = `epoch ${f.epoch ?? "–"}`;
    $("#fleet tbody").innerHTML = f.members.map((m) =>
      `<tr><td class="text">${esc(m.id)}${m.id === f.member ? " (this process)" : ""}</td><td class="text">${esc(m.role)}</td><td class="text">${esc(m.host)}</td><td class="num">${m.pid}</td><td class="num">${m.references}</td><td class="num">${m.last_seen_age_s.toFixed(1)}s</td></tr>`,
    ).join("");
  }

  const short = (key) => `${key.slice(0, 4)}…${key.slice(-4)}`;
  const ORDER_BADGE = { confirmed: "active", failed: "closed", unknown: "paused" };
  function dollars(v) { return v == null ? "–" : `$${v.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`; }
  function signed(v, digits) { return v == null ? "–" : `${v >= 0 ? "+" : ""}${v.toFixed(digits)}`; }
  function signClass(v) { return v == null || v === 0 ? "" : v > 0 ? "pos" : "neg"; }

  function positionLine(p) {
    return `<tr class="sub${p.stale ? " stale" : ""}" data-position="${esc(p.symbol)}"><td class="text">↳ <b>${esc(p.symbol)}</b> <span class="${signClass(p.size)}">${esc(signed(p.size, 4))}</span></td>`
      // A closed position stays listed while its PnL is unsettled.
      + (p.size === 0 ? '<td class="num" colspan="4">closed, PnL unsettled</td>'
        : `<td class="num" colspan="2">entry ${esc(price(p.entry_price))}</td><td class="num" colspan="2">liq. ${esc(price(p.liquidation_price))}</td>`)
      + `<td class="num ${signClass(p.unrealized_pnl)}" data-col="pnl">${esc(signed(p.unrealized_pnl, 2))}</td><td class="num">${p.data_age_s.toFixed(1)}s</td></tr>`;
  }

  function orderLine(o) {
    const kind = `${o.direction} ${o.order_type.toLowerCase()}${o.reduce_only ? " reduce-only" : ""}`;
    return `<tr class="sub" data-order="${o.order_id}"><td class="text">↳ order #${o.order_id} <span class="muted">${esc(kind)}</span> <b>${esc(o.symbol)}</b></td>`
      + `<td class="num" colspan="2">${esc(o.filled)} / ${esc(o.size)}</td><td class="num" colspan="2">${o.price ? `@ ${esc(price(o.price))}` : "market"}</td><td class="num" colspan="2">uid ${o.user_order_id}</td></tr>`;
  }

  function renderAccounts(accounts) {
    $("#accounts-card").hidden = accounts.length === 0;
    $("#accounts tbody").innerHTML = accounts.map((a) => {
      const who = `<span title="${esc(a.authority)} · user ${esc(a.user_account)}">${esc(short(a.authority))}</span> / ${a.sub_account_id}`;
      const head = `<tr data-account="${esc(a.authority)}/${a.sub_account_id}" class="${a.stale ? "stale" : ""}"><td class="text sym">${who}</td>`
        + `<td class="num" data-col="equity">${esc(dollars(a.collateral))}</td><td class="num" data-col="free_collateral">${esc(dollars(a.free_collateral))}</td>`
        + `<td class="num" data-col="leverage">${a.leverage == null ? "–" : `${a.leverage.toFixed(2)}×`}</td>`
        + `<td class="num">${a.margin_ratio == null ? "–" : `${(a.margin_ratio * 100).toFixed(1)}%`}</td>`
        + `<td class="num ${signClass(a.unrealized_pnl)}">${esc(signed(a.unrealized_pnl, 2))}</td>`
        + `<td class="num">${a.data_age_s == null ? "–" : `${a.data_age_s.toFixed(1)}s`}</td></tr>`;
      return head + a.positions.map(positionLine).join("") + a.open_orders.map(orderLine).join("");
    }).join("");
  }

  function renderOrders(orders) {
    $("#orders-card").hidden = orders.length === 0;
    $("#orders-count").textContent = `newest first, last ${orders.length}`;
    $("#orders tbody").innerHTML = orders.map((o) => {
      const who = o.authority == null ? "–" : `${esc(short(o.authority))}${o.sub_account_id == null ? "" : ` / ${o.sub_account_id}`}`;
      const sig = o.signature ? `<span title="${esc(o.signature)}">${esc(short(o.signature))}</span>` : "–";
      return `<tr data-status="${esc(o.status)}"><td class="text">${esc(new Date(o.time * 1000).toLocaleTimeString())}</td><td class="text">${who}</td>`
        + `<td class="text">${esc(o.kind.replace(/_/g, " "))}</td><td class="text">${esc(o.market ?? "–")}</td>`
        + `<td class="text"><span class="badge ${ORDER_BADGE[o.status] ?? ""}">${esc(o.status)}</span></td><td class="num">${o.slot ?? "–"}</td>`
        + `<td class="text mono">${sig}</td><td class="text ${o.error ? "neg" : "muted"}">${esc(o.error ?? "")}</td></tr>`;
    }).join("");
  }

  function buildHead() {
    const tr = $("#markets-head");
    for (const col of COLUMNS) {
      const th = document.createElement("th");
      th.textContent = col.label;
      th.dataset.key = col.key;
      if (col.cls.includes("text")) th.classList.add("text");
      if (col.sortable !== false) {
        th.classList.add("sortable");
        th.addEventListener("click", () => {
          sortDir = sortKey === col.key ? -sortDir : col.cls.includes("text") ? 1 : -1;
          sortKey = col.key;
          renderTable();
        });
      }
      tr.append(th);
    }
  }

  function rowFor(r) {
    let entry = rows.get(r.market_index);
    if (!entry) {
      const tr = document.createElement("tr");
      tr.dataset.symbol = r.symbol;
      const cells = {};
      for (const col of COLUMNS) {
        const td = document.createElement("td");
        td.className = col.cls;
        td.dataset.col = col.key;
        td.addEventListener("animationend", () => td.classList.remove("up", "down"));
        tr.append(td);
        cells[col.key] = td;
      }
      entry = { tr, cells, values: {} };
      rows.set(r.market_index, entry);
    }
    return entry;
  }

  function updateRow(entry, r) {
    entry.row = r;
    entry.tr.classList.toggle("stale", r.stale);
    entry.tr.title = r.stale ? `stale: no change for ${r.data_age_s.toFixed(0)} s` : "";
    for (const col of COLUMNS) {
      const td = entry.cells[col.key];
      if (col.key === "spark") {
        const key = r.spark.join(",");
        if (entry.values.spark !== key) { td.replaceChildren(sparkline(r.spark)); entry.values.spark = key; }
        continue;
      }
      const text = col.fmt(r);
      if (td.textContent !== text) {
        const before = entry.values[col.key];
        const value = r[col.key];
        if (col.html) td.innerHTML = col.html(r); else td.textContent = text;
        if (typeof value === "number" && typeof before === "number" && value !== before && col.key !== "data_age_s" && col.key !== "next_funding_ts") {
          td.classList.remove("up", "down");
          void td.offsetWidth;
          td.classList.add(value > before ? "up" : "down");
        }
      }
      entry.values[col.key] = r[col.key];
      if (col.sign) {
        const s = col.sign(r);
        td.classList.toggle("pos", s != null && s > 0);
        td.classList.toggle("neg", s != null && s < 0);
      }
    }
  }

  function compare(a, b) {
    const x = a.row[sortKey], y = b.row[sortKey];
    if (x == null && y == null) return a.row.market_index - b.row.market_index;
    if (x == null) return 1;
    if (y == null) return -1;
    const c = typeof x === "string" ? x.localeCompare(y) : x - y;
    return c * sortDir || a.row.market_index - b.row.market_index;
  }

  function renderTable() {
    const tbody = $("#markets tbody");
    const seen = new Set();
    for (const r of snap.markets) { updateRow(rowFor(r), r); seen.add(r.market_index); }
    for (const [index, entry] of rows) if (!seen.has(index)) { entry.tr.remove(); rows.delete(index); }
    const needle = filter.trim().toLowerCase();
    const shown = [...rows.values()]
      .filter((e) => !needle || e.row.symbol.toLowerCase().includes(needle) || e.row.status.includes(needle))
      .sort(compare);
    const current = [...tbody.children];
    if (shown.length !== current.length || shown.some((e, i) => e.tr !== current[i])) {
      tbody.replaceChildren(...shown.map((e) => e.tr));
    }
    if (!snap.markets.length) {
      tbody.innerHTML = `<tr class="empty"><td colspan="${COLUMNS.length}">Waiting for market data (${esc(snap.ready_reason)})…</td></tr>`;
    }
    $("#count").textContent = `${shown.length} of ${rows.size} markets`;
    for (const th of document.querySelectorAll("#markets-head th")) {
      if (th.dataset.key === sortKey) th.setAttribute("aria-sort", sortDir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
  }

  function render() {
    renderPanel(snap.manager);
    // The active endpoint changes on a fail-over; the page was rendered with the first.
    const m = snap.manager;
    $(".rpc").textContent =
      m.rpc_endpoints > 1 ? `${snap.rpc_url} (1 of ${m.rpc_endpoints}, ${m.endpoint_switches} switches)` : snap.rpc_url;
    chart($("#chart-rps"), snap.history.rpc_requests_per_s, { fmt: (v) => (v == null ? "–" : v.toFixed(1)) });
    chart($("#chart-hits"), snap.history.cache_hit_ratio, { max: 1, fmt: (v) => (v == null ? "–" : `${(v * 100).toFixed(0)}%`) });
    renderEngines(snap.engines);
    renderFleet(snap.fleet);
    renderAccounts(snap.accounts ?? []);
    renderOrders(snap.orders ?? []);
    renderTable();
  }

  function tick() {
    for (const entry of rows.values()) {
      entry.cells.next_funding_ts.textContent = countdown(entry.row.next_funding_ts);
      entry.cells.data_age_s.textContent = age(entry.row);
    }
  }

  function connect() {
    const conn = $("#conn");
    const label = conn.querySelector("span");
    const source = new EventSource("/api/events");
    source.addEventListener("open", () => { conn.className = "conn on"; label.textContent = "live"; });
    source.addEventListener("error", () => { conn.className = "conn off"; label.textContent = "reconnecting"; });
    source.addEventListener("snapshot", (event) => {
      snap = JSON.parse(event.data);
      receivedAt = Date.now() / 1000;
      offset = snap.server_time - receivedAt;
      render();
    });
  }

  buildHead();
  $("#filter").addEventListener("input", (event) => { filter = event.target.value; renderTable(); });
  render();
  setInterval(tick, 1000);
  connect();
})();
