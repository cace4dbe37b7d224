// Metrics from GET /api/v1/metrics: notifications per hour or day split by status, channel or
// provider, and accepted→sent p50/p95/p99, drawn with uPlot (vendored); the numbers also as a table.
import { api } from "./api.js";
import { append, empty, errorBox, field, h, loading, replace, select } from "./dom.js";

const RANGES = [
  ["24h", "Last 24 hours, per hour", 24 * 3600, "hour"],
  ["7d", "Last 7 days, per hour", 7 * 24 * 3600, "hour"],
  ["30d", "Last 30 days, per day", 30 * 24 * 3600, "day"],
];
const SPLITS = [
  ["status", "Status"],
  ["channel", "Channel"],
  ["provider", "Provider"],
  ["status,channel", "Status and channel"],
  ["status,provider", "Status and provider"],
];
const COLORS = ["#2f6fdd", "#d1453b", "#2e9d58", "#c58b00", "#8a4fd3", "#1b9aaa", "#e0628f", "#6d7b8d", "#7aa33c", "#b5651d"];

// uPlot (vendored, console/uplot.*) is loaded with the first chart: a script and a style sheet of
// this origin, as the page's policy allows.
let library = null;
function loadUplot() {
  if (!library) {
    library = new Promise((resolve, reject) => {
      const base = new URL(".", import.meta.url);
      document.head.append(h("link", { rel: "stylesheet", href: new URL("uplot.min.css", base).href }));
      const script = h("script", { src: new URL("uplot.iife.min.js", base).href });
      script.addEventListener("load", () => resolve(window.uPlot));
      script.addEventListener("error", () => {
        library = null;
        reject(new Error("the chart library did not load"));
      });
      document.head.append(script);
    });
  }
  return library;
}

/** Every bucket start (seconds) from `from` to `to`: hours, or days (UTC, as the API buckets). */
function buckets(from, to, granularity) {
  const step = granularity === "hour" ? 3600 : 86400;
  const first = Math.floor(from.getTime() / 1000 / step) * step;
  const out = [];
  for (let x = first; x < to.getTime() / 1000; x += step) out.push(x);
  return out;
}

function chart(host, title, xs, series) {
  if (typeof window.uPlot !== "function") {
    append(host, errorBox({ message: "the chart library did not load" }, "No chart"));
    return null;
  }
  const width = Math.max(280, host.clientWidth || 600);
  const opts = {
    title,
    width,
    height: 260,
    scales: { x: { time: true, range: [xs[0], xs[xs.length - 1]] } },
    series: [{}, ...series.map((s, i) => ({ label: s.label, stroke: COLORS[i % COLORS.length], width: 2, points: { show: xs.length <= 48 } }))],
    axes: [{}, { size: 60 }],
  };
  return new window.uPlot(opts, [xs, ...series.map((s) => s.values)], host);
}

function dataTable(caption, headers, rows) {
  return h("details", { class: "numbers" },
    h("summary", {}, `${caption}: the numbers`),
    h("div", { class: "table-wrap" }, h("table", {},
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c, i) => h(i ? "td" : "th", i ? { class: "num" } : { scope: "row" }, c === null ? "—" : String(c)))))))));
}

export function metricsView(container) {
  const form = h("form", { class: "filters", "aria-label": "Metrics range" });
  const range = select("range", RANGES.map(([v, label]) => [v, label]), "24h");
  const split = select("group_by", SPLITS, "status");
  append(form, [field("Range", range), field("Split by", split), h("div", { class: "field actions" }, h("button", { type: "submit" }, "Show"))]);
  const counts = h("section", { class: "chart", "aria-labelledby": "m-counts" }, h("h3", { id: "m-counts" }, "Notifications accepted"));
  const latency = h("section", { class: "chart", "aria-labelledby": "m-lat" }, h("h3", { id: "m-lat" }, "Accepted → sent latency (ms)"));
  const body = h("div", { class: "charts" }, loading("Loading metrics…"));
  append(container, [h("h2", {}, "Metrics"), form, body]);
  let plots = [];

  function destroy() {
    for (const p of plots) p.destroy();
    plots = [];
  }

  async function load() {
    destroy();
    replace(body, loading("Loading metrics…"));
    const [, , seconds, granularity] = RANGES.find(([v]) => v === range.value);
    const to = new Date();
    const from = new Date(to.getTime() - seconds * 1000);
    const query = { from: from.toISOString(), to: to.toISOString(), granularity };
    try {
      const [split_, overall] = await Promise.all([
        api("GET", "/api/v1/metrics", { query: { ...query, group_by: split.value } }),
        api("GET", "/api/v1/metrics", { query }),
        loadUplot().catch(() => null), // without it: the tables, and a note where the charts would be
      ]);
      if (!split_.data.length) {
        replace(body, empty("No notifications in this range.", "Counts are rolled up every few minutes; send some, or pick a longer range."));
        return;
      }
      replace(body, counts, latency);
      // counts: one series per group over every bucket of the range (0 where none was accepted)
      const xs = buckets(from, to, granularity);
      const index = new Map(xs.map((x, i) => [x, i]));
      const groups = new Map();
      for (const b of split_.data) {
        const label = split_.group_by.map((d) => b.group[d] || "(none)").join(" · ");
        if (!groups.has(label)) groups.set(label, new Array(xs.length).fill(0));
        const at = index.get(Date.parse(b.bucket) / 1000);
        if (at !== undefined) groups.get(label)[at] = b.count;
      }
      const series = [...groups.entries()].sort().map(([label, values]) => ({ label, values }));
      const countHost = h("div", { class: "plot", role: "img", "aria-label": `Notifications per ${granularity} by ${split.value.replace(",", " and ")}` });
      append(counts, countHost);
      const p1 = chart(countHost, `per ${granularity}`, xs, series);
      if (p1) plots.push(p1);
      const filled = xs.map((x, i) => i).filter((i) => series.some((s) => s.values[i]));
      append(counts, dataTable("Notifications accepted", ["Bucket", ...series.map((s) => s.label)],
        filled.map((i) => [new Date(xs[i] * 1000).toLocaleString(), ...series.map((s) => s.values[i])])));
      // latency: p50/p95/p99 of the overall buckets
      const lat = overall.data.filter((b) => b.latency_ms);
      if (!lat.length) {
        append(latency, empty("Nothing sent in this range yet.", "Latency is measured from acceptance to the provider taking it."));
      } else {
        const byBucket = new Map(lat.map((b) => [Date.parse(b.bucket) / 1000, b.latency_ms]));
        const host = h("div", { class: "plot", role: "img", "aria-label": "Accepted to sent latency percentiles" });
        append(latency, host);
        const p2 = chart(host, "p50 / p95 / p99", xs, ["p50", "p95", "p99"].map((p) => ({ label: p, values: xs.map((x) => (byBucket.has(x) ? byBucket.get(x)[p] : null)) })));
        if (p2) plots.push(p2);
        append(latency, dataTable("Latency", ["Bucket", "sent", "p50", "p95", "p99"],
          lat.map((b) => [new Date(b.bucket).toLocaleString(), b.latency_ms.count, b.latency_ms.p50, b.latency_ms.p95, b.latency_ms.p99])));
      }
    } catch (error) {
      replace(body, errorBox(error, "Could not load metrics"));
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    load();
  });
  load();
  return destroy;
}
