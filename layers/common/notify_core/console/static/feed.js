// The activity feed: notifications newest first, filtered, refreshed every few seconds without a
// reload (new rows are added on top, shown rows get their new status).
import { api, ApiDown } from "./api.js";
import { announce, append, badge, empty, errorBox, field, h, loading, replace, select, short, time } from "./dom.js";

const STATUSES = ["pending", "scheduled", "queued", "sending", "retrying", "sent", "delivered", "failed", "cancelled", "suppressed"];
const CHANNELS = ["email", "sms", "push"];
export const REFRESH_MS = 4000;

export function recipient(n) {
  const p = n.payload || {};
  return p.to || p.token || p.topic || null;
}

function localToIso(value) {
  if (!value) return null;
  const when = new Date(value); // datetime-local: the browser's time zone
  return Number.isNaN(when.getTime()) ? null : when.toISOString();
}

let painted = false;

export function feedView(container, ctx) {
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter notifications" });
  const status = select("status", [["", "Any status"], ...STATUSES.map((s) => [s, s])]);
  const channel = select("channel", [["", "Any channel"], ...CHANNELS.map((c) => [c, c])]);
  const category = h("input", { name: "category", type: "text", placeholder: "e.g. orders", maxlength: 64 });
  const userId = h("input", { name: "user_id", type: "text", placeholder: "user id (uuid)", maxlength: 36, spellcheck: "false" });
  const after = h("input", { name: "created_after", type: "datetime-local", step: 1 });
  const before = h("input", { name: "created_before", type: "datetime-local", step: 1 });
  const q = h("input", { name: "q", type: "search", placeholder: "recipient, or a notification / user / message id", maxlength: 255, spellcheck: "false" });
  const live = h("input", { type: "checkbox", name: "live", checked: true });
  append(form, [
    field("Search", q, "The start of an address (case-insensitive) or an exact id"),
    field("Status", status),
    field("Channel", channel),
    field("Category", category),
    field("User", userId),
    field("Accepted from", after),
    field("Accepted before", before),
    h("div", { class: "field actions" },
      h("button", { type: "submit", class: "primary" }, "Apply"),
      h("button", { type: "reset" }, "Clear"),
      h("label", { class: "inline" }, live, " Auto-refresh")),
  ]);
  const summary = h("p", { class: "summary", "aria-live": "polite" });
  const results = h("div", { class: "results" }, loading("Loading notifications…"));
  const more = h("button", { type: "button", hidden: true }, "Load older");
  append(container, [h("h2", {}, "Activity"), form, summary, results, h("div", { class: "more" }, more)]);

  let filters = {};
  let cursor = null;
  let rows = new Map(); // id → <tr>
  let tbody = null;
  let generation = 0;

  function readFilters() {
    return {
      status: status.value,
      channel: channel.value,
      category: category.value.trim(),
      user_id: userId.value.trim(),
      created_after: localToIso(after.value),
      created_before: localToIso(before.value),
      q: q.value.trim(),
    };
  }

  function row(n) {
    const tr = h("tr", { dataset: { id: n.id } });
    fill(tr, n);
    return tr;
  }

  function fill(tr, n) {
    replace(tr,
      h("td", {}, time(n.created_at)),
      h("td", {}, badge(n.status)),
      h("td", {}, n.channel),
      h("td", { class: "recipient" }, short(recipient(n), 40)),
      h("td", {}, n.category ? short(n.category, 24) : h("span", { class: "muted" }, "—")),
      h("td", {}, n.provider),
      h("td", { class: "num" }, String(n.attempt_count)),
      h("td", {}, h("a", { href: `#/n/${n.id}`, "aria-label": `Timeline of notification ${n.id}` }, n.id.slice(0, 8))),
    );
    tr.dataset.status = n.status;
  }

  function table() {
    tbody = h("tbody");
    return h("div", { class: "table-wrap" },
      h("table", { class: "feed" },
        h("caption", { class: "visually-hidden" }, "Notifications, newest first"),
        h("thead", {}, h("tr", {}, ["Accepted", "Status", "Channel", "Recipient", "Category", "Provider", "Attempts", "Id"].map((t) => h("th", { scope: "col" }, t)))),
        tbody));
  }

  function hasFilters() {
    return Object.values(filters).some((v) => v);
  }

  async function load(reset) {
    const mine = ++generation;
    if (reset) {
      replace(results, loading("Loading notifications…"));
      cursor = null;
      rows = new Map();
      tbody = null;
    }
    try {
      const page = await api("GET", "/api/v1/notifications", { query: { ...filters, limit: 50, cursor: reset ? null : cursor } });
      if (mine !== generation) return;
      if (reset) {
        if (!page.data.length) {
          replace(results, hasFilters()
            ? empty("No notification matches these filters.", "Widen the time range, clear a filter, or search for the start of an address.")
            : empty("No notifications yet.", "Send one with POST /api/v1/notifications or POST /api/v1/messages; it appears here within seconds."));
        } else {
          replace(results, table());
        }
      }
      for (const n of page.data) {
        if (rows.has(n.id)) continue;
        const tr = row(n);
        rows.set(n.id, tr);
        tbody.append(tr);
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      summary.textContent = `${rows.size} shown${cursor ? ", more below" : ""}.`;
      if (!painted && page.data.length) {
        painted = true;
        performance.mark("feed-painted");
      }
    } catch (error) {
      if (mine !== generation) return;
      if (reset || !(error instanceof ApiDown)) replace(results, errorBox(error, "Could not load notifications"));
    }
  }

  async function refresh() {
    if (!live.checked || document.hidden) return;
    const mine = generation;
    try {
      const page = await api("GET", "/api/v1/notifications", { query: { ...filters, limit: 50 } });
      if (mine !== generation) return;
      if (!tbody && page.data.length) {
        replace(results, table());
      }
      const fresh = [];
      for (const n of page.data) {
        const tr = rows.get(n.id);
        if (tr) {
          if (tr.dataset.status !== n.status) fill(tr, n);
        } else {
          fresh.push(n);
        }
      }
      for (const n of fresh.reverse()) {
        const tr = row(n);
        tr.classList.add("fresh");
        rows.set(n.id, tr);
        tbody.prepend(tr);
      }
      if (fresh.length) {
        summary.textContent = `${rows.size} shown${cursor ? ", more below" : ""}.`;
        announce(`${fresh.length} new notification${fresh.length > 1 ? "s" : ""}`);
      }
    } catch {
      // the banner (API down) or the next refresh says it; the rows shown stay
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    filters = readFilters();
    load(true);
  });
  form.addEventListener("reset", () => {
    setTimeout(() => {
      filters = {};
      load(true);
    });
  });
  more.addEventListener("click", () => load(false));

  filters = readFilters();
  load(true);
  const timer = setInterval(refresh, REFRESH_MS);
  return () => {
    generation++;
    clearInterval(timer);
  };
}
