// The usan dashboard: one page, routed by the URL's `#` part.
//
// Every text is set with textContent through `h()`, never parsed as HTML,
// so asset names, notes and causes are shown as typed. Data comes from the
// API under /api/v1 with the login cookie; writes carry X-Usan-Request.

import { t, lang, setLang } from "/ui/i18n.js";
import { timeChart, bars } from "/ui/charts.js";

// ---- small helpers -------------------------------------------------------

/** An element with attributes (`on*` are listeners) and children (strings become text). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function fmtTime(ms) {
  if (ms === undefined || ms === null) return "–";
  return new Intl.DateTimeFormat(lang() === "ko" ? "ko-KR" : "en-GB", {
    dateStyle: "short",
    timeStyle: "medium",
  }).format(new Date(ms));
}

function fmtNum(v, digits = 3) {
  if (v === undefined || v === null || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  return Number(v.toPrecision(digits + 1)).toLocaleString(lang() === "ko" ? "ko-KR" : "en-GB");
}

const asset = (id) => `#/asset/${encodeURIComponent(id)}`;
const enc = encodeURIComponent;

// ---- API -----------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-Usan-Request"] = "1";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(`/api/v1${path}`, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    const details = (data.details || []).join("; ");
    throw new ApiError(response.status, details ? `${data.error}: ${details}` : data.error || response.statusText);
  }
  return data;
}

// ---- session, header, live alarm feed ------------------------------------

const session = { user: null, anonymousRead: true };
const ROLE_RANK = { viewer: 1, operator: 2, admin: 3 };
const canAct = () => session.user && ROLE_RANK[session.user.role] >= ROLE_RANK.operator;

async function loadSession() {
  try {
    const s = await api("/session");
    session.user = s.user;
    session.anonymousRead = s.anonymous_read;
  } catch (e) {
    // A stale cookie (token removed): read anonymously, or log in again.
    session.user = null;
    if (e.status === 401) await api("/session", { method: "DELETE" }).catch(() => {});
  }
}

function renderHeader() {
  document.title = t("app_title");
  document.documentElement.lang = lang();
  document.getElementById("nav-overview").textContent = t("nav_overview");
  document.getElementById("nav-alarms").textContent = t("nav_alarms");
  document.getElementById("lang-button").textContent = t("language");
  document.getElementById("who").textContent = session.user
    ? t("signed_in_as", { name: session.user.name, role: session.user.role })
    : t("anonymous");
  document.getElementById("login-button").textContent = session.user ? t("logout") : t("login");
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  document.getElementById("footer").textContent = t("time_zone", { zone });
}

function setOpenAlarms(n) {
  const badge = document.getElementById("open-alarms");
  badge.classList.toggle("hidden", !n);
  badge.textContent = `${t("open_alarms")}: ${n}`;
}

function toast(text, href) {
  const box = document.getElementById("toasts");
  const item = h("a", { class: "toast", href: href || "#/alarms", role: "status" }, text);
  box.append(item);
  while (box.children.length > 3) box.firstElementChild.remove();
  setTimeout(() => item.remove(), 6000);
}

/** Listeners of alarm events, for the page on show. */
const alarmListeners = new Set();
let feed = null;

function startFeed() {
  if (feed) feed.close();
  feed = null;
  if (!session.user && !session.anonymousRead) return;
  feed = new EventSource("/api/v1/stream");
  feed.addEventListener("alarm", (message) => {
    const event = JSON.parse(message.data);
    if (event.event === "alarm_raised") {
      toast(t("new_alarm", { asset: event.asset, detector: event.detector }), `#/alarms/${event.id}`);
    }
    for (const listener of alarmListeners) listener(event);
    refreshOpenCount();
  });
}

let countTimer = null;
function refreshOpenCount() {
  clearTimeout(countTimer);
  countTimer = setTimeout(async () => {
    try {
      setOpenAlarms((await api("/alarms/summary")).open);
    } catch {
      /* shown by the page */
    }
  }, 200);
}

// ---- router --------------------------------------------------------------

let cleanup = () => {};

async function route() {
  cleanup();
  cleanup = () => {};
  alarmListeners.clear();
  renderHeader();
  const view = document.getElementById("view");
  view.replaceChildren();
  const [path, queryText] = location.hash.replace(/^#/, "").split("?");
  const query = new URLSearchParams(queryText || "");
  const parts = (path || "/").split("/").filter(Boolean).map(decodeURIComponent);
  const page = h("div", { class: "page" });
  view.append(page);
  if (!session.user && !session.anonymousRead && parts[0] !== "login") {
    location.hash = "#/login";
    return;
  }
  let stop;
  try {
    if (parts.length === 0) stop = await overviewPage(page);
    else if (parts[0] === "login") stop = loginPage(page);
    else if (parts[0] === "alarms" && parts.length === 1) stop = await alarmsPage(page, query);
    else if (parts[0] === "alarms") stop = await alarmPage(page, parts[1]);
    else if (parts[0] === "asset" && parts[2] === "spc") stop = await controlChartPage(page, parts[1], parts[3], query);
    else if (parts[0] === "asset") stop = await assetPage(page, parts[1]);
    else page.append(h("p", {}, t("not_found")));
  } catch (e) {
    if (e.status === 401) {
      location.hash = "#/login";
      return;
    }
    page.append(h("p", { class: "error" }, t("error", { why: e.message })));
  }
  if (typeof stop === "function") cleanup = stop;
}

// ---- plant overview ------------------------------------------------------

async function overviewPage(page) {
  const data = await api("/overview");
  const filter = h("input", { type: "search", placeholder: t("filter_assets"), "aria-label": t("filter_assets") });
  const summary = h("div", { class: "summary" });
  const tree = h("div", { class: "tree", "data-testid": "plant-tree" });
  page.append(h("div", { class: "toolbar" }, summary, filter), tree);

  const tiles = new Map();
  const bySite = new Map();
  for (const a of data.assets) {
    if (!bySite.has(a.site)) bySite.set(a.site, new Map());
    const lines = bySite.get(a.site);
    if (!lines.has(a.line)) lines.set(a.line, []);
    lines.get(a.line).push(a);
  }
  const fragment = document.createDocumentFragment();
  for (const [site, lines] of bySite) {
    const siteBox = h("section", { class: "site" }, h("h2", {}, `${t("site")}: ${site || "–"}`));
    for (const [line, assets] of lines) {
      const grid = h("div", { class: "tiles" });
      for (const a of assets) {
        const tile = h(
          "a",
          { class: "tile", href: asset(a.id), "data-asset": a.id, title: a.id },
          h("span", { class: "tile-id" }, a.id),
          h("span", { class: "tile-state" }),
          h("span", { class: "tile-rul" }),
          h("span", { class: "tile-alarms" }),
        );
        tiles.set(a.id, tile);
        grid.append(tile);
      }
      siteBox.append(h("section", { class: "line" }, h("h3", {}, `${t("line")}: ${line || "–"}`), grid));
    }
    fragment.append(siteBox);
  }
  tree.append(fragment);

  const paint = (snapshot) => {
    const counts = { anomalous: 0, normal: 0, learning: 0, idle: 0 };
    for (const a of snapshot.assets) {
      counts[a.health] = (counts[a.health] || 0) + 1;
      const tile = tiles.get(a.id);
      if (!tile) continue;
      tile.className = `tile health-${a.health}${a.open_alarms ? " alarmed" : ""}`;
      tile.children[1].textContent = t(`health_${a.health}`);
      tile.children[2].textContent = a.rul === null ? "" : t("rul_cycles", { value: fmtNum(a.rul, 2) });
      tile.children[3].textContent = a.open_alarms ? `⚠ ${a.open_alarms}` : "";
    }
    summary.replaceChildren(
      h("span", { class: "count" }, `${t("assets")}: ${snapshot.assets.length}`),
      ...["anomalous", "learning", "normal", "idle"].map((k) =>
        h("span", { class: `count health-${k}` }, `${t(`health_${k}`)}: ${counts[k] || 0}`),
      ),
      h("span", { class: "count", "data-testid": "open-alarm-count" }, `${t("open_alarms")}: ${snapshot.open_alarms}`),
    );
    setOpenAlarms(snapshot.open_alarms);
  };
  paint(data);
  performance.mark("usan:overview-ready");

  filter.addEventListener("input", () => {
    const needle = filter.value.trim().toLowerCase();
    for (const [id, tile] of tiles) tile.hidden = needle !== "" && !id.toLowerCase().includes(needle);
  });
  let busy = false;
  const refresh = async () => {
    if (busy) return;
    busy = true;
    try {
      paint(await api("/overview"));
    } catch {
      /* keep the last picture; the next poll retries */
    } finally {
      busy = false;
    }
  };
  const timer = setInterval(refresh, 2000);
  alarmListeners.add(() => refresh());
  return () => clearInterval(timer);
}

// ---- asset page ----------------------------------------------------------

const RANGES = [
  ["all", 0],
  ["6h", 6 * 3600e3],
  ["24h", 24 * 3600e3],
  ["7d", 7 * 24 * 3600e3],
  ["30d", 30 * 24 * 3600e3],
];

async function assetPage(page, id) {
  const [view, alarms] = await Promise.all([
    api(`/assets/${enc(id)}`),
    api(`/alarms?asset=${enc(id)}&state=all&limit=200`),
  ]);
  const signals = view.signals.map((s) => s.name);
  const scoreNames = view.detectors.map((d) => `@score/${d.name}`);

  const healthPill = h("span", { class: `pill health-${view.health}`, "data-testid": "asset-health" });
  const detectorBody = h("tbody");
  const rulBox = h("div");
  const whyBox = h("div", { class: "why" });
  const rangeSelect = h(
    "select",
    { "aria-label": t("range") },
    RANGES.map(([name]) => h("option", { value: name }, name === "all" ? t("range_all") : name)),
  );
  const liveState = h("span", { class: "live-state" });
  const scoreBox = h("div", { class: "chart-wide" });
  const signalGrid = h("div", { class: "chart-grid" });
  const alarmList = h("div");
  const maintenanceBox = h("div", { "data-testid": "maintenance" });
  const findingList = h("div", { class: "findings" });
  const findingWhy = h("div", { class: "why", "data-testid": "finding-why" });

  page.append(
    h(
      "div",
      { class: "title" },
      h("h1", {}, view.id),
      h("span", { class: "muted" }, `${view.site || "–"} › ${view.line || "–"}`),
      healthPill,
    ),
    h(
      "div",
      { class: "cards" },
      h(
        "section",
        { class: "card" },
        h("h2", {}, t("detectors")),
        h(
          "table",
          {},
          h("thead", {}, h("tr", {}, h("th", {}, t("detector")), h("th", {}, t("status")), h("th", {}, t("score")), h("th", {}, t("threshold")))),
          detectorBody,
        ),
      ),
      h("section", { class: "card" }, h("h2", {}, t("remaining_life")), rulBox),
      h("section", { class: "card" }, h("h2", {}, t("why")), whyBox),
    ),
    h(
      "div",
      { class: "toolbar" },
      h("label", {}, `${t("range")} `, rangeSelect),
      liveState,
      h("span", { class: "muted" }, t("chart_help")),
    ),
    h("section", {}, h("h2", {}, t("scores")), scoreBox),
    h("section", {}, h("h2", {}, t("signals")), signalGrid),
    h(
      "section",
      {},
      h("h2", {}, t("findings")),
      h("div", { class: "cards" }, h("div", { class: "card" }, findingList), h("div", { class: "card" }, findingWhy)),
    ),
    h("section", {}, h("h2", {}, t("alarms_of_asset")), alarmList),
    h("section", {}, h("h2", {}, t("maintenance")), maintenanceBox),
  );

  // Findings: pick one to see the signals behind it (per statistic for T²/SPE).
  let chosen = null;
  const explain = (f) => {
    chosen = f ? `${f.detector}@${f.ts}` : null;
    for (const row of findingList.querySelectorAll("tr[data-finding]")) row.classList.toggle("chosen", row.dataset.finding === chosen);
    if (!f) {
      findingWhy.replaceChildren(h("p", { class: "muted" }, t("no_explanation")));
      return;
    }
    findingWhy.replaceChildren(
      h("h3", {}, t("finding_at", { detector: f.detector, time: fmtTime(f.ts), score: fmtNum(f.score), threshold: fmtNum(f.threshold) })),
      bars(f.contributions.map((c) => [c.signal, c.value])),
      ...(f.statistics || []).map((st) =>
        h(
          "div",
          { class: "statistic" },
          h("h3", {}, `${st.name}: ${fmtNum(st.value)} / ${t("limits")} ${fmtNum(st.limit)}`),
          st.contributions.length ? bars(st.contributions.map((c) => [c.signal, c.value])) : null,
        ),
      ),
    );
  };
  const loadFindings = async () => {
    const list = await api(`/findings?asset=${enc(id)}&limit=20`).catch(() => null);
    if (!list) return;
    findingList.replaceChildren(
      list.length
        ? h(
            "table",
            { "data-testid": "findings" },
            h("thead", {}, h("tr", {}, h("th", {}, t("time")), h("th", {}, t("detector")), h("th", {}, t("score")), h("th", {}, t("threshold")))),
            h(
              "tbody",
              {},
              list.map((f) =>
                h(
                  "tr",
                  { "data-finding": `${f.detector}@${f.ts}`, class: "clickable", onclick: () => explain(f) },
                  h("td", {}, fmtTime(f.ts)),
                  h("td", {}, f.detector),
                  h("td", { class: f.anomalous ? "num bad" : "num" }, fmtNum(f.score)),
                  h("td", { class: "num" }, fmtNum(f.threshold)),
                ),
              ),
            ),
          )
        : h("p", { class: "muted" }, t("no_findings")),
    );
    if (!chosen) explain(list[0]);
    else explain(list.find((f) => `${f.detector}@${f.ts}` === chosen));
  };
  await loadFindings();

  // A package's name and provenance under its detector's name; the rest on hover.
  const modelLine = (m) =>
    h(
      "div",
      {
        class: "muted small",
        title: [
          m.package,
          m.producer,
          ...Object.entries(m.versions || {}).map(([k, v]) => `${k} ${v}`),
          m.training_data_sha256 ? `sha256 ${m.training_data_sha256}` : "",
          m.trained_at || "",
        ]
          .filter(Boolean)
          .join("\n"),
      },
      t("model_line", { name: m.name, exporter: m.exporter || m.producer || "?", goldens: m.golden_rows }),
    );

  const paintLive = (live) => {
    healthPill.className = `pill health-${live.health}`;
    healthPill.textContent = t(`health_${live.health}`);
    detectorBody.replaceChildren(
      ...live.detectors.map((d) =>
        h(
          "tr",
          {},
          h("td", {}, d.name, d.model ? modelLine(d.model) : ""),
          h(
            "td",
            {},
            d.status === "learning"
              ? t("learning_progress", { done: d.baseline_frames, needed: d.baseline_needed })
              : d.status === "monitoring"
                ? t("monitoring")
                : d.status,
          ),
          h("td", { class: d.anomalous ? "bad num" : "num" }, fmtNum(d.score)),
          h("td", { class: "num" }, fmtNum(d.threshold)),
        ),
      ),
    );
    const rul = live.rul[0];
    rulBox.replaceChildren(
      rul && rul.rul !== null && rul.rul !== undefined
        ? h(
            "div",
            {},
            h("p", { class: `big${rul.alarming ? " bad" : ""}` }, fmtNum(rul.rul, 2)),
            h(
              "p",
              {},
              t("rul_interval", {
                rul: fmtNum(rul.rul, 2),
                lower: fmtNum(rul.lower, 2),
                upper: fmtNum(rul.upper, 2),
                coverage: Math.round(rul.coverage * 100),
              }),
            ),
            rul.horizon
              ? h("p", {}, t("rul_probability", { horizon: rul.horizon, p: fmtNum((rul.probability_within_horizon || 0) * 100, 2) }))
              : null,
          )
        : h("p", { class: "muted" }, t("no_rul")),
    );
    const explained = live.detectors.find((d) => d.top_signals && d.top_signals.length);
    whyBox.replaceChildren(
      explained ? bars(explained.top_signals.map((c) => [c.signal, c.value])) : h("p", { class: "muted" }, t("no_explanation")),
    );
  };
  paintLive(view);

  // History: signals and scores on one axis.
  const markers = alarms.map((a) => ({ at: a.raised_at, label: `#${a.id}` }));
  let range = 0;
  let table = null;
  let charts = [];
  const group = { charts: [], zoomed: false, onZoom: () => {} };
  const column = (name) => table.values[table.columns.indexOf(name)] || [];
  const pushAll = () => {
    let k = 0;
    if (scoreNames.length) charts[k++].update([table.ts, ...scoreNames.map(column)]);
    for (const name of signals) charts[k++].update([table.ts, column(name)]);
  };
  // Zoomed in, the charts fetch the visible span again at full detail;
  // back out, the whole range again.
  let detailTimer = null;
  let detailAsked = 0;
  const refetch = async (from, to) => {
    const asked = ++detailAsked;
    const span =
      from !== undefined
        ? `&from=${Math.floor(from)}&to=${Math.ceil(to)}`
        : range && view.last_ts
          ? `&from=${view.last_ts - range}`
          : "";
    const data = await api(`/assets/${enc(id)}/series?max_points=800${span}`).catch(() => null);
    if (!data || asked !== detailAsked || !charts.length) return;
    table = { ts: data.ts, columns: data.columns, values: data.values };
    pushAll();
  };
  group.onZoom = () => {
    paintLiveState();
    clearTimeout(detailTimer);
    detailTimer = setTimeout(() => {
      const x = charts.length ? charts[0].u.scales.x : null;
      if (group.zoomed && x && x.min !== null) refetch(x.min, x.max);
      else if (!group.zoomed) refetch();
    }, 300);
  };
  const paintLiveState = () => {
    liveState.textContent = group.zoomed ? t("paused") : `● ${t("live")}`;
    liveState.className = group.zoomed ? "live-state paused" : "live-state";
  };

  const load = async () => {
    const last = view.last_ts;
    const from = range && last ? `&from=${last - range}` : "";
    const data = await api(`/assets/${enc(id)}/series?max_points=800${from}`);
    table = { ts: data.ts, columns: data.columns, values: data.values };
    for (const c of charts) c.destroy();
    group.charts = [];
    group.zoomed = false;
    charts = [];
    scoreBox.replaceChildren();
    signalGrid.replaceChildren();
    const thresholds = view.detectors.map((d) => d.threshold).filter((v) => v !== null && v !== undefined);
    if (scoreNames.length) {
      charts.push(
        timeChart(scoreBox, {
          group,
          height: 220,
          series: view.detectors.map((d) => d.name),
          data: [table.ts, ...scoreNames.map(column)],
          thresholds,
          markers,
        }),
      );
    }
    for (const [i, name] of signals.entries()) {
      const unit = view.signals[i].unit;
      const cell = h(
        "div",
        { class: "chart-cell", "data-signal": name },
        h(
          "div",
          { class: "chart-head" },
          h("span", {}, unit ? `${name} [${unit}]` : name),
          h("a", { href: `${asset(id)}/spc/${enc(name)}` }, t("control_chart")),
        ),
      );
      signalGrid.append(cell);
      const spec = view.signals[i];
      charts.push(
        timeChart(cell, {
          group,
          height: 150,
          series: [name],
          data: [table.ts, column(name)],
          thresholds: [spec.lower_spec, spec.upper_spec].filter((v) => v !== null && v !== undefined),
          markers,
        }),
      );
    }
    paintLiveState();
    performance.mark("usan:asset-ready");
  };
  await load();
  rangeSelect.addEventListener("change", () => {
    range = RANGES.find(([name]) => name === rangeSelect.value)[1];
    load();
  });

  // Declared maintenance: no alarm for this asset while it lasts.
  const loadMaintenance = async () => {
    const windows = (await api("/maintenance").catch(() => [])).filter((w) => w.asset === id || w.asset === null);
    const message = h("p", { class: "message", role: "status" });
    const rows = windows.map((w) =>
      h(
        "li",
        {},
        `${fmtTime(w.starts)} – ${fmtTime(w.ends)} `,
        h("strong", {}, w.by),
        ` ${w.asset === null ? t("whole_plant") : ""} `,
        h("span", { class: "note" }, w.note),
        canAct()
          ? h(
              "button",
              {
                type: "button",
                "data-testid": "maintenance-end",
                onclick: async () => {
                  await api(`/maintenance/${w.id}/end`, { method: "POST", body: {} }).catch((e) => {
                    message.textContent = t("action_failed", { why: e.message });
                  });
                  loadMaintenance();
                },
              },
              t("end_now"),
            )
          : null,
      ),
    );
    const duration = h("select", { name: "duration", "aria-label": t("duration") }, ["30m", "1h", "2h", "4h", "8h", "24h"].map((d) => h("option", { value: d, selected: d === "2h" }, d)));
    const note = h("input", { name: "note", placeholder: t("maintenance_note"), "aria-label": t("maintenance_note"), required: true, autocomplete: "off" });
    maintenanceBox.replaceChildren(
      windows.length ? h("ul", { class: "windows" }, rows) : h("p", { class: "muted" }, t("no_maintenance")),
      canAct()
        ? h(
            "form",
            {
              class: "action",
              onsubmit: async (e) => {
                e.preventDefault();
                try {
                  await api("/maintenance", { method: "POST", body: { asset: id, duration: duration.value, note: note.value } });
                  loadMaintenance();
                } catch (err) {
                  message.textContent = t("action_failed", { why: err.message });
                }
              },
            },
            duration,
            note,
            h("button", { type: "submit", "data-testid": "maintenance-declare" }, t("declare_maintenance")),
          )
        : null,
      message,
    );
  };
  await loadMaintenance();

  const paintAlarms = (list) => {
    alarmList.replaceChildren(alarmTable(list));
  };
  paintAlarms(alarms);

  // Live: new frames extend the charts; the state refreshes each second.
  const stream = new EventSource(`/api/v1/stream?asset=${enc(id)}`);
  stream.addEventListener("frames", (message) => {
    if (!table) return;
    const rows = JSON.parse(message.data);
    const signalAt = signals.map((s) => table.columns.indexOf(s));
    const scoreAt = scoreNames.map((s) => table.columns.indexOf(s));
    for (const row of rows) {
      if (table.ts.length && row.ts <= table.ts[table.ts.length - 1]) continue;
      table.ts.push(row.ts);
      signalAt.forEach((c, i) => c >= 0 && table.values[c].push(row.values[i]));
      scoreAt.forEach((c, i) => c >= 0 && table.values[c].push(row.scores[i]));
    }
    // Keep a moving window: the range, or at most 5,000 points.
    const newest = table.ts[table.ts.length - 1];
    let drop = Math.max(0, table.ts.length - 5000);
    while (range && drop < table.ts.length && table.ts[drop] < newest - range) drop += 1;
    if (drop) {
      table.ts.splice(0, drop);
      for (const column of table.values) column.splice(0, drop);
    }
    pushAll();
  });
  let lives = 0;
  stream.addEventListener("live", (message) => {
    const live = JSON.parse(message.data);
    view.last_ts = live.last_ts;
    paintLive(live);
    if (++lives % 5 === 0) loadFindings();
  });
  let alarmTimer = null;
  alarmListeners.add((event) => {
    if (event.asset !== id) return;
    clearTimeout(alarmTimer);
    alarmTimer = setTimeout(async () => {
      const list = await api(`/alarms?asset=${enc(id)}&state=all&limit=200`).catch(() => null);
      if (!list) return;
      markers.splice(0, markers.length, ...list.map((a) => ({ at: a.raised_at, label: `#${a.id}` })));
      paintAlarms(list);
      for (const c of charts) c.redraw();
    }, 300);
  });
  return () => {
    stream.close();
    clearTimeout(alarmTimer);
    clearTimeout(detailTimer);
    for (const c of charts) c.destroy();
  };
}

// ---- alarms --------------------------------------------------------------

function stateText(a) {
  return t(`state_${a.state}`);
}

function alarmTable(list) {
  if (!list.length) return h("p", { class: "muted" }, t("no_alarms"));
  return h(
    "table",
    { class: "alarms", "data-testid": "alarm-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["#", t("asset"), t("detector"), t("state"), t("raised_at"), t("last_seen"), t("peak"), t("assigned_to")].map((c) =>
          h("th", {}, c),
        ),
      ),
    ),
    h(
      "tbody",
      {},
      list.map((a) =>
        h(
          "tr",
          { class: `state-${a.state}`, "data-alarm": a.id },
          h("td", {}, h("a", { href: `#/alarms/${a.id}` }, String(a.id))),
          h("td", {}, h("a", { href: asset(a.asset) }, a.asset)),
          h("td", {}, a.detector),
          h("td", { "data-testid": "alarm-row-state" }, stateText(a), a.active ? " ●" : ""),
          h("td", {}, fmtTime(a.raised_at)),
          h("td", {}, fmtTime(a.last_seen_at)),
          h("td", { class: "num" }, `${fmtNum(a.peak_score)} / ${fmtNum(a.threshold)}`),
          h("td", {}, a.assigned ? a.assigned.to : ""),
        ),
      ),
    ),
  );
}

const ALARM_STATES = ["open", "raised", "acknowledged", "assigned", "cleared", "all"];

async function alarmsPage(page, query) {
  const state = ALARM_STATES.includes(query.get("state")) ? query.get("state") : "open";
  const assetFilter = query.get("asset");
  const select = h(
    "select",
    { "aria-label": t("state") },
    ALARM_STATES.map((s) => h("option", { value: s, selected: s === state }, t(`state_${s}`))),
  );
  select.addEventListener("change", () => {
    const q = new URLSearchParams({ state: select.value });
    if (assetFilter) q.set("asset", assetFilter);
    location.hash = `#/alarms?${q}`;
  });
  const box = h("div");
  page.append(
    h("div", { class: "title" }, h("h1", {}, t("nav_alarms")), assetFilter ? h("span", { class: "muted" }, assetFilter) : null),
    h("div", { class: "toolbar" }, h("label", {}, `${t("state")} `, select)),
    box,
  );
  const load = async () => {
    const q = new URLSearchParams({ state, limit: "500" });
    if (assetFilter) q.set("asset", assetFilter);
    box.replaceChildren(alarmTable(await api(`/alarms?${q}`)));
  };
  await load();
  let timer = null;
  alarmListeners.add(() => {
    clearTimeout(timer);
    timer = setTimeout(() => load().catch(() => {}), 300);
  });
  return () => clearTimeout(timer);
}

async function alarmPage(page, idText) {
  const id = Number(idText);
  let alarm = await api(`/alarms/${id}`);
  const box = h("div");
  page.append(box);
  const message = h("p", { class: "message", role: "status" });

  const act = async (action, body) => {
    message.textContent = "";
    try {
      alarm = await api(`/alarms/${id}/${action}`, { method: "POST", body });
      paint();
      message.textContent = t("action_done");
    } catch (e) {
      message.textContent = t("action_failed", { why: e.message });
      message.className = "message error";
    }
  };

  const form = (action, fields, label) => {
    const inputs = fields.map(([name, placeholder, required]) =>
      h("input", { name, placeholder, "aria-label": placeholder, required, autocomplete: "off" }),
    );
    const el = h(
      "form",
      {
        class: "action",
        "data-action": action,
        onsubmit: (e) => {
          e.preventDefault();
          const body = {};
          for (const input of inputs) if (input.value.trim()) body[input.name] = input.value.trim();
          act(action, body);
        },
      },
      inputs,
      h("button", { type: "submit", "data-testid": `alarm-${action}` }, label),
    );
    return el;
  };

  const paint = () => {
    const open = alarm.state !== "cleared";
    const actions = [];
    if (open && canAct()) {
      if (alarm.state === "raised") actions.push(form("acknowledge", [["note", t("note")]], t("acknowledge")));
      actions.push(form("assign", [["to", t("assign_to"), true], ["note", t("note")]], t("assign")));
      actions.push(form("comment", [["note", t("note"), true]], t("comment")));
      actions.push(form("clear", [["cause", t("close_cause"), true], ["note", t("note")]], t("close")));
    } else if (canAct()) {
      actions.push(form("comment", [["note", t("note"), true]], t("comment")));
    }
    box.replaceChildren(
      h(
        "div",
        { class: "title" },
        h("h1", {}, t("alarm", { id: alarm.id })),
        h("span", { class: `pill state-${alarm.state}`, "data-testid": "alarm-state" }, stateText(alarm)),
        h("span", { class: "muted" }, alarm.active ? t("active") : t("inactive")),
      ),
      h("p", {}, h("a", { href: asset(alarm.asset) }, t("alarm_on", { asset: alarm.asset, detector: alarm.detector }))),
      h(
        "div",
        { class: "cards" },
        h(
          "section",
          { class: "card" },
          h(
            "dl",
            {},
            h("dt", {}, t("raised_at")),
            h("dd", {}, fmtTime(alarm.raised_at)),
            h("dt", {}, t("last_seen")),
            h("dd", {}, fmtTime(alarm.last_seen_at)),
            h("dt", {}, t("peak")),
            h("dd", {}, `${fmtNum(alarm.peak_score)} / ${fmtNum(alarm.threshold)}`),
            h("dt", {}, t("assigned_to")),
            h("dd", { "data-testid": "alarm-assigned" }, alarm.assigned ? alarm.assigned.to : "–"),
            h("dt", {}, t("cause")),
            h("dd", { "data-testid": "alarm-cause" }, alarm.cause || "–"),
          ),
        ),
        h(
          "section",
          { class: "card" },
          h("h2", {}, t("top_signals")),
          alarm.top_signals.length ? bars(alarm.top_signals.map((c) => [c.signal, c.value])) : h("p", { class: "muted" }, "–"),
        ),
      ),
      h(
        "section",
        {},
        h("h2", {}, t("history")),
        h(
          "ol",
          { class: "history", "data-testid": "alarm-history" },
          alarm.notes.map((n) =>
            h(
              "li",
              {},
              h("time", {}, fmtTime(n.at)),
              " ",
              h("strong", {}, n.by),
              " ",
              t(`action_${n.action}`),
              n.text ? h("span", { class: "note" }, n.text) : null,
            ),
          ),
        ),
      ),
      h(
        "section",
        { class: "actions" },
        canAct() ? actions : h("p", { class: "muted" }, t("act_needs_operator")),
        message,
      ),
    );
  };
  paint();
  alarmListeners.add(async (event) => {
    if (event.id !== id) return;
    alarm = await api(`/alarms/${id}`).catch(() => alarm);
    paint();
  });
}

// ---- control chart -------------------------------------------------------

async function controlChartPage(page, id, signal, query) {
  const rules = query.get("rules") === "we" ? "we" : "nelson";
  const kind = ["imr", "ewma", "cusum"].includes(query.get("chart")) ? query.get("chart") : "imr";
  const points = Number(query.get("points")) || 500;
  const baseline = Number(query.get("baseline")) || 0;
  const q = new URLSearchParams({ rules, chart: kind, points: String(points) });
  if (baseline) q.set("baseline", String(baseline));
  const data = await api(`/assets/${enc(id)}/spc/${enc(signal)}?${q}`);

  const go = (change) => {
    const next = new URLSearchParams({ rules, chart: kind, points: String(points), ...change });
    if (baseline && !("baseline" in change)) next.set("baseline", String(baseline));
    location.hash = `${asset(id)}/spc/${enc(signal)}?${next}`;
  };
  const select = (label, value, options, key) =>
    h(
      "label",
      {},
      `${label} `,
      h(
        "select",
        { onchange: (e) => go({ [key]: e.target.value }) },
        options.map(([v, text]) => h("option", { value: v, selected: String(v) === String(value) }, text)),
      ),
    );

  page.append(
    h("div", { class: "title" }, h("h1", {}, t("spc_title", { signal, asset: id })), h("a", { href: asset(id) }, id)),
    h(
      "div",
      { class: "toolbar" },
      select(t("chart_kind"), kind, [["imr", "I–MR"], ["ewma", "EWMA"], ["cusum", "CUSUM"]], "chart"),
      select(t("rules"), rules, [["nelson", "Nelson"], ["we", "Western Electric"]], "rules"),
      select(t("points"), points, [100, 250, 500, 1000, 5000].map((n) => [n, String(n)]), "points"),
      select(t("baseline"), baseline || "", [["", t("range_all")], ...[25, 50, 100, 200].map((n) => [n, String(n)])], "baseline"),
      h("span", { class: "muted" }, t("chart_help")),
    ),
  );
  const charts = [];
  const group = { charts: [], zoomed: false, onZoom: () => {} };
  const violationsList = [];
  for (const series of data.chart.series) {
    const box = h("div", { class: "chart-wide", "data-testid": `spc-${series.name}` });
    page.append(h("h2", {}, series.name.toUpperCase()), box);
    const n = series.points.length;
    const offset = data.ts.length - n;
    const x = series.points.map((_, i) => data.ts[i + offset]);
    const broken = new Set(series.violations.map((v) => v.index));
    charts.push(
      timeChart(box, {
        group,
        height: 240,
        series: [series.name, t("centre"), "UCL", "LCL", "✕"],
        styles: ["value", "centre", "limit", "limit", "violation"],
        data: [
          x,
          series.points.map((p) => p.value),
          series.points.map((p) => p.centre),
          series.points.map((p) => p.upper),
          series.points.map((p) => p.lower),
          series.points.map((p, i) => (broken.has(i) ? p.value : null)),
        ],
      }),
    );
    for (const v of series.violations) violationsList.push([series.name, v, x[v.index]]);
  }
  const ruleText = new Map(data.rules.map((r) => [r.rule, r.description]));
  page.append(
    h("h2", {}, t("violations")),
    violationsList.length
      ? h(
          "ul",
          { class: "violations", "data-testid": "spc-violations" },
          violationsList.slice(0, 200).map(([name, v, at]) =>
            h("li", {}, `${name}: ${v.rule} — ${ruleText.get(v.rule) || ""} — `, t("at_point", { n: v.index + 1, time: fmtTime(at) })),
          ),
        )
      : h("p", { class: "muted" }, t("no_violations")),
    h("h2", {}, t("capability")),
    capabilityTable(data.capability),
  );
  return () => charts.forEach((c) => c.destroy());
}

function capabilityTable(cap) {
  if (!cap) return h("p", { class: "muted" }, t("no_spec"));
  if (cap.error) return h("p", { class: "error" }, cap.error);
  const rows = [
    ["Cp", cap.cp],
    ["Cpk", cap.cpk],
    ["Pp", cap.pp],
    ["Ppk", cap.ppk],
    ["Cpm", cap.cpm],
  ].filter(([, v]) => v);
  return h(
    "div",
    {},
    h(
      "table",
      { class: "capability", "data-testid": "capability" },
      h("thead", {}, h("tr", {}, h("th", {}, t("index")), h("th", {}, t("estimate")), h("th", {}, t("interval_95")))),
      h(
        "tbody",
        {},
        rows.map(([name, v]) =>
          h("tr", {}, h("td", {}, name), h("td", { class: "num" }, fmtNum(v.value)), h("td", { class: "num" }, `${fmtNum(v.lower)} – ${fmtNum(v.upper)}`)),
        ),
        h("tr", {}, h("td", {}, t("ppm_within")), h("td", { class: "num" }, fmtNum(cap.ppm_within)), h("td")),
        h("tr", {}, h("td", {}, t("ppm_overall")), h("td", { class: "num" }, fmtNum(cap.ppm_overall)), h("td")),
        h("tr", {}, h("td", {}, t("ppm_observed")), h("td", { class: "num" }, fmtNum(cap.ppm_observed)), h("td")),
        h("tr", {}, h("td", {}, t("normality")), h("td", { class: "num" }, fmtNum(cap.normality.p_value)), h("td")),
      ),
    ),
    cap.warnings.length ? h("ul", { class: "warnings" }, cap.warnings.map((w) => h("li", {}, w))) : null,
  );
}

// ---- login ---------------------------------------------------------------

function loginPage(page) {
  const input = h("input", { type: "password", name: "token", "aria-label": t("token"), placeholder: t("token"), autocomplete: "off" });
  const message = h("p", { class: "message", role: "status" });
  page.append(
    h(
      "form",
      {
        class: "login",
        onsubmit: async (e) => {
          e.preventDefault();
          try {
            await api("/session", { method: "POST", body: { token: input.value } });
            await loadSession();
            startFeed();
            location.hash = "#/";
          } catch (err) {
            message.textContent = t("login_failed", { why: err.message });
            message.className = "message error";
          }
        },
      },
      h("h1", {}, t("login_title")),
      session.anonymousRead ? null : h("p", {}, t("login_needed")),
      h("p", { class: "muted" }, t("login_help")),
      input,
      h("button", { type: "submit", "data-testid": "login-submit" }, t("login")),
      message,
    ),
  );
  input.focus();
}

// ---- start ---------------------------------------------------------------

async function start() {
  document.getElementById("lang-button").addEventListener("click", () => {
    setLang(lang() === "ko" ? "en" : "ko");
    route();
  });
  document.getElementById("login-button").addEventListener("click", async () => {
    if (session.user) {
      await api("/session", { method: "DELETE" }).catch(() => {});
      session.user = null;
      startFeed();
      route();
    } else {
      location.hash = "#/login";
    }
  });
  await loadSession();
  if (session.user || session.anonymousRead) {
    startFeed();
    refreshOpenCount();
  }
  window.addEventListener("hashchange", route);
  await route();
}

start();
