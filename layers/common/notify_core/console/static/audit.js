// The audit log: who changed what, newest first, with filters.
import { api } from "./api.js";
import { append, empty, errorBox, field, h, loading, replace, short, time } from "./dom.js";

export function auditView(container) {
  const action = h("input", { name: "action", type: "text", placeholder: "e.g. api_key.revoke", maxlength: 64 });
  const targetType = h("input", { name: "target_type", type: "text", placeholder: "e.g. dead_letter", maxlength: 64 });
  const targetId = h("input", { name: "target_id", type: "text", maxlength: 255 });
  const actor = h("input", { name: "actor", type: "text", placeholder: "key prefix, cli or system", maxlength: 64 });
  const form = h("form", { class: "filters", role: "search", "aria-label": "Filter audit events" },
    field("Action", action), field("Target type", targetType), field("Target id", targetId), field("Actor", actor),
    h("div", { class: "field actions" }, h("button", { type: "submit" }, "Apply"), h("button", { type: "reset" }, "Clear")));
  const results = h("div", { class: "results" }, loading("Loading the audit log…"));
  const more = h("button", { type: "button", hidden: true }, "Load older");
  append(container, [h("h2", {}, "Audit log"), form, results, h("div", { class: "more" }, more)]);
  let filters = {};
  let cursor = null;
  let tbody = null;

  async function load(reset) {
    if (reset) {
      cursor = null;
      tbody = null;
      replace(results, loading("Loading the audit log…"));
    }
    try {
      const page = await api("GET", "/api/v1/audit-events", { query: { ...filters, limit: 50, cursor } });
      if (!tbody) {
        if (!page.data.length) {
          replace(results, empty(Object.values(filters).some(Boolean) ? "No audit event matches these filters." : "No audit events yet.", "Every change made through the API or the CLI is recorded here."));
          more.hidden = true;
          return;
        }
        tbody = h("tbody");
        replace(results, h("div", { class: "table-wrap" }, h("table", {},
          h("caption", { class: "visually-hidden" }, "Audit events, newest first"),
          h("thead", {}, h("tr", {}, ["At", "Actor", "Action", "Target", "Changes"].map((t) => h("th", { scope: "col" }, t)))),
          tbody)));
      }
      for (const e of page.data) {
        const target = e.target.type === "notification" && e.target.id
          ? h("a", { href: `#/n/${e.target.id}` }, `${e.target.type} ${e.target.id.slice(0, 8)}`)
          : short(`${e.target.type} ${e.target.id || ""}`, 48);
        tbody.append(h("tr", {},
          h("td", {}, time(e.at)),
          h("td", {}, e.actor.prefix ? h("code", {}, e.actor.prefix) : e.actor.type),
          h("td", {}, e.action),
          h("td", {}, target),
          h("td", { class: "error-cell" }, short(JSON.stringify(e.changes), 90))));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } catch (error) {
      replace(results, errorBox(error, "Could not load the audit log"));
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    filters = { action: action.value.trim(), target_type: targetType.value.trim(), target_id: targetId.value.trim(), actor: actor.value.trim() };
    load(true);
  });
  form.addEventListener("reset", () => setTimeout(() => {
    filters = {};
    load(true);
  }));
  more.addEventListener("click", () => load(false));
  load(true);
}
