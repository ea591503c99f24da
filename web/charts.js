// Charts on uPlot (embedded from npm, pinned): time series with limit
// lines and alarm markers, zoom (drag, wheel) and pan (shift+drag) kept in
// step across a page's charts, and contribution bars.

import { lang } from "/ui/i18n.js";

const COLOURS = ["#2563eb", "#d97706", "#059669", "#7c3aed", "#db2777", "#0891b2", "#65a30d", "#dc2626"];

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Horizontal bars of `[label, value]`, largest first, scaled to the largest. */
export function bars(items) {
  const box = el("div", "bars");
  box.dataset.testid = "contribution-bars";
  const max = Math.max(...items.map(([, v]) => Math.abs(v)), 1e-12);
  for (const [label, value] of items) {
    const row = el("div", "bar-row");
    const fill = el("span", "bar-fill");
    fill.style.width = `${Math.max(1, (100 * Math.abs(value)) / max)}%`;
    const track = el("span", "bar-track");
    track.append(fill);
    row.append(el("span", "bar-label", label), track, el("span", "bar-value", Number(value).toPrecision(3)));
    box.append(row);
  }
  return box;
}

function seriesStyle(style, i) {
  switch (style) {
    case "centre":
      return { stroke: "#16a34a", width: 1, dash: [6, 4], points: { show: false } };
    case "limit":
      return { stroke: "#dc2626", width: 1, dash: [4, 4], points: { show: false } };
    case "violation":
      return { stroke: "#dc2626", width: 0, paths: () => null, points: { show: true, size: 9, fill: "#dc2626", stroke: "#7f1d1d" } };
    default:
      return { stroke: COLOURS[i % COLOURS.length], width: 1.25, spanGaps: false, points: { show: false } };
  }
}

/** Wheel zoom and shift+drag pan on the x axis, shared by the group. */
function zoomPanPlugin(group) {
  return {
    hooks: {
      ready: (u) => {
        const over = u.over;
        over.addEventListener(
          "wheel",
          (e) => {
            e.preventDefault();
            const { min, max } = u.scales.x;
            if (min === null || max === null) return;
            const at = u.posToVal(e.offsetX, "x");
            const factor = e.deltaY < 0 ? 0.8 : 1.25;
            setX(group, at - (at - min) * factor, at + (max - at) * factor);
          },
          { passive: false },
        );
        over.addEventListener("mousedown", (e) => {
          if (!e.shiftKey) return;
          e.preventDefault();
          e.stopPropagation();
          const start = e.clientX;
          const { min, max } = u.scales.x;
          const perPixel = (max - min) / over.clientWidth;
          const move = (m) => setX(group, min - (m.clientX - start) * perPixel, max - (m.clientX - start) * perPixel);
          const up = () => {
            window.removeEventListener("mousemove", move);
            window.removeEventListener("mouseup", up);
          };
          window.addEventListener("mousemove", move);
          window.addEventListener("mouseup", up);
        }, true);
        over.addEventListener("dblclick", () => {
          group.zoomed = false;
          for (const chart of group.charts) chart.resetX();
          group.onZoom();
        });
      },
    },
  };
}

function setX(group, min, max) {
  group.zoomed = true;
  group.syncing = true;
  for (const chart of group.charts) chart.u.setScale("x", { min, max });
  group.syncing = false;
  group.onZoom();
}

/** Time ticks in the page's language and the browser's zone, 24-hour, the date where the day changes. */
function timeAxis() {
  const locale = lang() === "ko" ? "ko-KR" : "en-GB";
  const day = new Intl.DateTimeFormat(locale, { month: "2-digit", day: "2-digit" });
  const minutes = new Intl.DateTimeFormat(locale, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
  const seconds = new Intl.DateTimeFormat(locale, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" });
  const full = new Intl.DateTimeFormat(locale, { dateStyle: "short", timeStyle: "medium" });
  const ticks = (u, splits, axis, space, increment) => {
    let lastDay = null;
    return splits.map((v) => {
      if (v === null || v === undefined) return null;
      const date = new Date(v);
      const dayText = day.format(date);
      const newDay = dayText !== lastDay;
      lastDay = dayText;
      if (increment >= 86_400_000) return dayText;
      const time = (increment < 60_000 ? seconds : minutes).format(date);
      return newDay ? `${time}\n${dayText}` : time;
    });
  };
  return { ticks, legend: (u, v) => (v === null || v === undefined ? "--" : full.format(new Date(v))) };
}

/** Limit lines (horizontal) and alarm markers (vertical) drawn over the series. */
function overlayPlugin(options) {
  return {
    hooks: {
      draw: (u) => {
        const ctx = u.ctx;
        const { left, top, width, height } = u.bbox;
        ctx.save();
        ctx.beginPath();
        ctx.rect(left, top, width, height);
        ctx.clip();
        ctx.lineWidth = devicePixelRatio;
        ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
        ctx.strokeStyle = "#dc2626";
        for (const level of options.thresholds || []) {
          const y = u.valToPos(level, "y", true);
          if (!Number.isFinite(y)) continue;
          ctx.beginPath();
          ctx.moveTo(left, y);
          ctx.lineTo(left + width, y);
          ctx.stroke();
        }
        ctx.setLineDash([]);
        ctx.strokeStyle = "rgba(220, 38, 38, 0.7)";
        ctx.fillStyle = "#b91c1c";
        ctx.font = `${10 * devicePixelRatio}px sans-serif`;
        for (const marker of options.markers || []) {
          const x = u.valToPos(marker.at, "x", true);
          if (!Number.isFinite(x) || x < left || x > left + width) continue;
          ctx.beginPath();
          ctx.moveTo(x, top);
          ctx.lineTo(x, top + height);
          ctx.stroke();
          ctx.fillText(`▲ ${marker.label}`, x + 3 * devicePixelRatio, top + 12 * devicePixelRatio);
        }
        ctx.restore();
      },
    },
  };
}

/**
 * A time chart in `parent`. `data` is `[ts_ms[], ...values[]]` (null or NaN
 * for gaps); `series` names the value columns; `styles` picks "value",
 * "centre", "limit" or "violation" per column. Charts given the same
 * `group` zoom and pan together and share the cursor.
 */
export function timeChart(parent, options) {
  const box = el("div", "chart");
  parent.append(box);
  if (typeof uPlot === "undefined") {
    // A build without npm embeds no chart library: say so instead of failing.
    box.append(el("p", "muted", "Charts are not in this build of usan (it was built without npm)."));
    const none = { u: { scales: { x: {} } }, update() {}, resetX() {}, redraw() {}, destroy() {} };
    return none;
  }
  const width = () => Math.max(240, box.clientWidth || parent.clientWidth || 600);
  const clean = (data) => data.map((column, i) => (i === 0 ? column : column.map((v) => (v === null || !Number.isFinite(v) ? null : v))));
  const thresholds = options.thresholds || [];
  const time = timeAxis();
  const opts = {
    width: width(),
    height: options.height || 180,
    ms: 1,
    legend: { live: true },
    cursor: { sync: { key: options.group ? "g" + (options.group.key ||= Math.random().toString(36).slice(2)) : undefined }, drag: { x: true, y: false, setScale: false } },
    scales: {
      x: { time: true },
      y: {
        range: (u, min, max) => {
          // Keep limit lines in view.
          const lo = Math.min(min ?? 0, ...thresholds);
          const hi = Math.max(max ?? 1, ...thresholds);
          const pad = (hi - lo) * 0.05 || Math.abs(hi) * 0.05 || 1;
          return [lo - pad, hi + pad];
        },
      },
    },
    axes: [{ values: time.ticks, space: 60 }, {}],
    series: [{ value: time.legend }, ...options.series.map((name, i) => ({ label: name, ...seriesStyle((options.styles || [])[i], i) }))],
    plugins: [overlayPlugin(options), ...(options.group ? [zoomPanPlugin(options.group)] : [])],
    hooks: {
      setSelect: [
        (u) => {
          if (u.select.width > 0 && options.group) {
            const min = u.posToVal(u.select.left, "x");
            const max = u.posToVal(u.select.left + u.select.width, "x");
            u.setSelect({ width: 0, height: 0 }, false);
            setX(options.group, min, max);
          }
        },
      ],
    },
  };
  let data = clean(options.data);
  const u = new uPlot(opts, data, box);
  const resize = new ResizeObserver(() => u.setSize({ width: width(), height: opts.height }));
  resize.observe(parent);
  const chart = {
    u,
    /** New data; the view stays where it is while the group is zoomed. */
    update(next) {
      data = clean(next);
      u.setData(data, !(options.group && options.group.zoomed));
    },
    resetX() {
      const ts = data[0];
      if (ts.length) u.setScale("x", { min: ts[0], max: ts[ts.length - 1] });
    },
    redraw() {
      u.redraw(false, false);
    },
    destroy() {
      resize.disconnect();
      u.destroy();
      if (options.group) options.group.charts = options.group.charts.filter((c) => c !== chart);
    },
  };
  if (options.group) options.group.charts.push(chart);
  return chart;
}
