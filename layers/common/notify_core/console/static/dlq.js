// Dead letters: stats, a filtered list, replay and discard (each confirmed), bulk replay of the
// filtered set (POST /api/v1/dlq/replay).
import { api } from "./api.js";
import { ago, announce, append, badge, confirmDialog, empty, errorBox, field, h, loading, replace, select, short, time } from "./dom.js";

const REASONS = ["permanent_error", "max_attempts", "redrive", "ambiguous"];
const CHANNELS = ["email", "sms", "push"];
const PROVIDERS = ["sendgrid", "twilio", "fcm", "ses", "sns", "console"];

function counts(title, map) {
  const entries = Object.entries(map || {});
  return h("div", { class: "stat" }, h("h3", {}, title),
    entries.length
      ? h("ul", {}, entries.map(([k, v]) => h("li", {}, h("span", {}, k.replaceAll("_", " ")), " ", h("strong", {}, String(v)))))
      : h("p", { class: "muted" }, "none"));
}

export function dlqView(container, ctx) {
  const canWrite = ctx.can("dlq:write");
  const stats = h("div", { class: "stats" }, loading("Loading counts…"));
  const form = h("form", { class: "filters", "aria-label": "Filter dead letters" });
  const reason = select("reason", [["", "Any reason"], ...REASONS.map((r) => [r, r.replace("_", " ")])]);
  const channel = select("channel", [["", "Any channel"], ...CHANNELS.map((c) => [c, c])]);
  const provider = select("provider", [["", "Any provider"], ...PROVIDERS.map((p) => [p, p])]);
  const bulk = h("button", { type: "button", class: "primary", hidden: !canWrite }, "Replay all matching…");
  append(form, [field("Reason", reason), field("Channel", channel), field("Provider", provider),
    h("div", { class: "field actions" }, h("button", { type: "submit" }, "Apply"), bulk)]);
  const note = h("div", { role: "status", class: "note" });
  const results = h("div", { class: "results" }, loading("Loading dead letters…"));
  const more = h("button", { type: "button", hidden: true }, "Load older");
  append(container, [h("h2", {}, "Dead letters"), stats, form, note, results, h("div", { class: "more" }, more)]);

  let filters = {};
  let cursor = null;
  let tbody = null;

  async function loadStats() {
    try {
      const s = await api("GET", "/api/v1/dlq/stats");
      replace(stats,
        h("div", { class: "stat" }, h("h3", {}, "Open"), h("p", { class: "big" }, String(s.total)),
          h("p", { class: "muted" }, `oldest ${ago(s.oldest_age_seconds)} old`)),
        counts("By reason", s.by_reason), counts("By channel", s.by_channel), counts("By provider", s.by_provider));
    } catch (error) {
      replace(stats, errorBox(error, "Could not load the counts"));
    }
  }

  function row(d) {
    const actions = canWrite ? h("td", { class: "row-actions" },
      h("button", { type: "button", "aria-label": `Replay dead letter ${d.id}`, onclick: () => replay(d) }, "Replay"),
      h("button", { type: "button", class: "danger", "aria-label": `Discard dead letter ${d.id}`, onclick: () => discard(d) }, "Discard")) : null;
    return h("tr", { dataset: { id: d.id } },
      h("td", {}, time(d.created_at)),
      h("td", {}, badge(d.reason.replace("_", " "), d.reason)),
      h("td", {}, d.channel),
      h("td", {}, d.provider),
      h("td", { class: "num" }, String(d.attempt_count)),
      h("td", { class: "error-cell" }, short(d.last_error, 80)),
      h("td", {}, h("a", { href: `#/n/${d.notification_id}`, "aria-label": `Timeline of notification ${d.notification_id}` }, d.notification_id.slice(0, 8))),
      actions);
  }

  async function load(reset) {
    if (reset) {
      replace(results, loading("Loading dead letters…"));
      cursor = null;
      tbody = null;
    }
    try {
      const page = await api("GET", "/api/v1/dlq", { query: { ...filters, limit: 50, cursor } });
      if (reset) {
        if (!page.data.length) {
          replace(results, Object.values(filters).some(Boolean)
            ? empty("No dead letter matches these filters.", "Clear a filter to see the others.")
            : empty("The dead-letter queue is empty.", "Notifications that fail for good land here, with the reason; replay them once the cause is fixed."));
          bulk.disabled = true;
        } else {
          tbody = h("tbody");
          bulk.disabled = false;
          replace(results, h("div", { class: "table-wrap" }, h("table", {},
            h("caption", { class: "visually-hidden" }, "Open dead letters, newest first"),
            h("thead", {}, h("tr", {}, ["Since", "Reason", "Channel", "Provider", "Attempts", "Last error", "Notification", canWrite ? "Actions" : null].filter(Boolean).map((t) => h("th", { scope: "col" }, t)))),
            tbody)));
        }
      }
      for (const d of page.data) tbody.append(row(d));
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } catch (error) {
      replace(results, errorBox(error, "Could not load dead letters"));
    }
  }

  async function replay(d) {
    const ok = await confirmDialog("Replay this dead letter?", `Notification ${d.notification_id} (${d.channel} via ${d.provider}) goes back on the queue with a fresh attempt budget.`, "Replay");
    if (!ok) return;
    try {
      const r = await api("POST", `/api/v1/dlq/${d.id}/replay`);
      replace(note, h("p", { class: "state state-ok" }, `Replayed: notification ${r.notification_id} is ${r.status}.`));
      announce("Dead letter replayed");
    } catch (error) {
      replace(note, errorBox(error, "Replay failed"));
    }
    reload();
  }

  async function discard(d) {
    const ok = await confirmDialog("Discard this dead letter?", `The record of notification ${d.notification_id}'s failure is deleted; the notification stays failed. This cannot be undone.`, "Discard", true);
    if (!ok) return;
    try {
      await api("DELETE", `/api/v1/dlq/${d.id}`);
      replace(note, h("p", { class: "state state-ok" }, "Discarded."));
      announce("Dead letter discarded");
    } catch (error) {
      replace(note, errorBox(error, "Discard failed"));
    }
    reload();
  }

  bulk.addEventListener("click", async () => {
    const described = Object.entries(filters).filter(([, v]) => v).map(([k, v]) => `${k} ${v}`).join(", ") || "no filter: every open dead letter";
    const ok = await confirmDialog("Replay every matching dead letter?", `Matching ${described}. Up to 100 are replayed per call, newest first; each goes back on the queue with a fresh attempt budget.`, "Replay all");
    if (!ok) return;
    try {
      const r = await api("POST", "/api/v1/dlq/replay", { body: { ...Object.fromEntries(Object.entries(filters).filter(([, v]) => v)), limit: 100 } });
      replace(note, h("p", { class: "state state-ok" },
        `Replayed ${r.replayed.length}` + (r.skipped.length ? `, skipped ${r.skipped.length} (no longer failed)` : "") + (r.remaining ? `; ${r.remaining} still match: replay again for the next ones.` : ".")));
      announce(`${r.replayed.length} dead letters replayed`);
    } catch (error) {
      replace(note, errorBox(error, "Bulk replay failed"));
    }
    reload();
  });

  function reload() {
    loadStats();
    load(true);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    filters = { reason: reason.value, channel: channel.value, provider: provider.value };
    load(true);
  });
  more.addEventListener("click", () => load(false));
  reload();
}
