// One notification: its timeline (GET /api/v1/notifications/{id}/timeline) and its rendered content.
import { api } from "./api.js";
import { append, badge, empty, errorBox, h, loading, replace, time } from "./dom.js";
import { recipient } from "./feed.js";

const FINAL = ["sent", "delivered", "failed", "cancelled", "suppressed"];
const DETAIL_ORDER = ["provider", "outcome", "duration_ms", "error", "error_code", "fault", "type", "reason", "status", "status_code", "event_type", "attempt_count", "until", "send_at", "provider_message_id", "dead_letter_id", "delivery_id", "endpoint_id", "action", "changes", "provider_detail", "category", "idempotency_key", "message_id", "received_at", "delivered_at"];

function detailList(detail) {
  const keys = Object.keys(detail).filter((k) => detail[k] !== null && detail[k] !== undefined && !(typeof detail[k] === "object" && !Object.keys(detail[k]).length));
  keys.sort((a, b) => (DETAIL_ORDER.indexOf(a) + 1 || 99) - (DETAIL_ORDER.indexOf(b) + 1 || 99));
  if (!keys.length) return null;
  return h("dl", { class: "detail" },
    keys.flatMap((k) => [
      h("dt", {}, k.replaceAll("_", " ")),
      h("dd", { class: "wrap" }, typeof detail[k] === "object" ? JSON.stringify(detail[k]) : String(detail[k])),
    ]));
}

function content(n) {
  const p = n.payload || {};
  const rows = [];
  const add = (label, value, pre = false) => {
    if (value === undefined || value === null || value === "") return;
    rows.push(h("dt", {}, label), h("dd", {}, pre ? h("pre", { class: "wrap" }, String(value)) : h("span", { class: "wrap" }, String(value))));
  };
  add(n.channel === "push" ? (p.token ? "Token" : "Topic") : "To", recipient(n));
  add("From", p.from);
  add("Subject", p.subject);
  add("Title", p.title);
  add("Body", p.body, true);
  // HTML is shown as its source text: never rendered, never interpreted
  add("HTML (source)", p.html, true);
  if (p.data && Object.keys(p.data).length) add("Data", JSON.stringify(p.data, null, 2), true);
  const known = new Set(["to", "token", "topic", "from", "subject", "title", "body", "html", "data"]);
  for (const [k, v] of Object.entries(p)) {
    if (!known.has(k)) add(k, typeof v === "object" ? JSON.stringify(v) : v, typeof v === "object");
  }
  return h("dl", { class: "content" }, rows);
}

export function timelineView(container, ctx, id) {
  const body = h("div", {}, loading("Loading the timeline…"));
  append(container, [h("p", {}, h("a", { href: "#/feed" }, "← Activity")), body]);
  let timer = null;
  let stopped = false;

  async function load(first) {
    try {
      const t = await api("GET", `/api/v1/notifications/${id}/timeline`);
      if (stopped) return;
      render(t);
      clearTimeout(timer);
      // until it reaches a final state, follow it
      if (!FINAL.includes(t.notification.status) || t.notification.status === "sent") timer = setTimeout(() => load(false), 4000);
    } catch (error) {
      if (stopped) return;
      if (first || error.status === 404) replace(body, errorBox(error, "Could not load this notification"));
      else timer = setTimeout(() => load(false), 4000);
    }
  }

  function render(t) {
    const n = t.notification;
    const list = t.entries.length
      ? h("ol", { class: "timeline" }, t.entries.map((e) => h("li", { class: `entry entry-${e.kind}` },
        h("div", { class: "entry-head" }, time(e.at), " ", badge(e.kind.replace("_", " "), e.kind)),
        h("p", { class: "entry-summary wrap" }, e.summary),
        detailList(e.detail))))
      : empty("Nothing recorded yet.", "The timeline fills as the notification moves on.");
    const actions = [];
    if (ctx.can("notifications:write") && ["pending", "scheduled", "queued", "retrying"].includes(n.status)) {
      actions.push(h("button", { type: "button", onclick: async (event) => {
        event.target.disabled = true;
        try {
          await api("POST", `/api/v1/notifications/${n.id}/cancel`);
          load(false);
        } catch (error) {
          append(body, errorBox(error, "Could not cancel"));
        }
      } }, "Cancel this notification"));
    }
    replace(body,
      h("h2", {}, "Notification ", h("code", { class: "wrap" }, n.id)),
      h("p", { class: "facts" }, badge(n.status), " ", n.channel, " via ", n.provider,
        n.category ? [" · category ", n.category] : null,
        " · ", `${n.attempt_count} of ${n.max_attempts} attempts`,
        n.user_id ? [" · user ", h("code", { class: "wrap" }, n.user_id)] : null),
      n.last_error ? h("p", { class: "state state-error" }, h("strong", {}, "Last error: "), n.last_error) : null,
      actions.length ? h("div", { class: "actions" }, actions) : null,
      h("div", { class: "split" },
        h("section", { "aria-labelledby": "tl-h" }, h("h3", { id: "tl-h" }, "Timeline"), list),
        h("section", { "aria-labelledby": "ct-h" }, h("h3", { id: "ct-h" }, "Rendered content"),
          n.template_key ? h("p", { class: "muted" }, `Template ${n.template_key} v${n.template_version}`) : null,
          content(n))));
  }

  load(true);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
