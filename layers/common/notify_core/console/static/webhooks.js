// Webhooks: endpoints, one endpoint's deliveries (each attempt's status, error, next retry),
// redeliver, send a test event.
import { api, newIdempotencyKey } from "./api.js";
import { append, badge, empty, errorBox, h, loading, replace, short, time } from "./dom.js";

function endpointsView(container) {
  const results = h("div", { class: "results" }, loading("Loading endpoints…"));
  append(container, [h("h2", {}, "Webhooks"), results]);
  (async () => {
    try {
      const page = await api("GET", "/api/v1/webhooks", { query: { limit: 100 } });
      if (!page.data.length) {
        replace(results, empty("No webhook endpoints.", "Register one with POST /api/v1/webhooks; its deliveries show here."));
        return;
      }
      replace(results, h("div", { class: "table-wrap" }, h("table", {},
        h("caption", { class: "visually-hidden" }, "Webhook endpoints"),
        h("thead", {}, h("tr", {}, ["URL", "Events", "State", "Created"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, page.data.map((w) => h("tr", {},
          h("td", {}, h("a", { href: `#/webhooks/${w.id}` }, short(w.url, 60))),
          h("td", {}, w.events.join(", ")),
          h("td", {}, w.disabled_at ? badge("disabled", "failed") : w.active ? (w.failing_since ? badge("failing", "retrying") : badge("active", "sent")) : badge("inactive", "cancelled")),
          h("td", {}, time(w.created_at))))))));
    } catch (error) {
      replace(results, errorBox(error, "Could not load webhook endpoints"));
    }
  })();
}

function endpointView(container, ctx, id) {
  const canWrite = ctx.can("webhooks:write");
  const head = h("div", {}, loading("Loading the endpoint…"));
  const note = h("div", { role: "status" });
  const results = h("div", { class: "results" });
  const more = h("button", { type: "button", hidden: true }, "Load older");
  append(container, [h("p", {}, h("a", { href: "#/webhooks" }, "← Webhooks")), head, note, h("h3", {}, "Deliveries"), results, h("div", { class: "more" }, more)]);
  let cursor = null;
  let tbody = null;
  let timer = null;
  let stopped = false;

  async function action(path, label) {
    try {
      const d = await api("POST", path, { idempotencyKey: newIdempotencyKey() });
      replace(note, h("p", { class: "state state-ok" }, `${label}: delivery ${d.id} is ${d.status}.`));
    } catch (error) {
      replace(note, errorBox(error, `${label} failed`));
    }
    loadDeliveries(true);
  }

  async function loadHead() {
    try {
      const w = await api("GET", `/api/v1/webhooks/${id}`);
      replace(head,
        h("h2", { class: "wrap" }, w.url),
        h("p", { class: "facts" }, w.active ? "active" : "inactive", " · events ", w.events.join(", "), w.description ? [" · ", w.description] : null),
        w.disabled_reason ? h("p", { class: "state state-error" }, `Disabled: ${w.disabled_reason}`) : null,
        canWrite ? h("div", { class: "actions" }, h("button", { type: "button", onclick: () => action(`/api/v1/webhooks/${id}/test`, "Test event") }, "Send a test event")) : null);
    } catch (error) {
      replace(head, errorBox(error, "Could not load this endpoint"));
    }
  }

  async function loadDeliveries(reset, quiet = false) {
    clearTimeout(timer);
    if (reset) {
      cursor = null;
      if (!quiet) replace(results, loading("Loading deliveries…"));
    }
    try {
      const page = await api("GET", `/api/v1/webhooks/${id}/deliveries`, { query: { limit: 50, cursor } });
      if (stopped) return;
      if (reset) tbody = null;
      // while a delivery is pending, follow it (the first page, every few seconds)
      if (reset && page.data.some((d) => d.status === "pending")) timer = setTimeout(() => loadDeliveries(true, true), 3000);
      if (!tbody) {
        if (!page.data.length) {
          replace(results, empty("No deliveries yet.", "Events this endpoint subscribes to show here as they are sent."));
          more.hidden = true;
          return;
        }
        tbody = h("tbody");
        replace(results, h("div", { class: "table-wrap" }, h("table", {},
          h("caption", { class: "visually-hidden" }, "Deliveries, newest first"),
          h("thead", {}, h("tr", {}, ["Created", "Event", "Status", "Attempts", "HTTP", "Error", "Next retry", canWrite ? "Actions" : null].filter(Boolean).map((t) => h("th", { scope: "col" }, t)))),
          tbody)));
      }
      for (const d of page.data) {
        tbody.append(h("tr", {},
          h("td", {}, time(d.created_at)),
          h("td", {}, d.event_type),
          h("td", {}, badge(d.status, d.status === "delivered" ? "sent" : d.status === "pending" ? "queued" : "failed")),
          h("td", { class: "num" }, String(d.attempt_count)),
          h("td", { class: "num" }, d.status_code === null ? "—" : String(d.status_code)),
          h("td", { class: "error-cell" }, short(d.error, 60)),
          h("td", {}, time(d.next_retry_at)),
          canWrite ? h("td", {}, h("button", { type: "button", "aria-label": `Redeliver ${d.event_type} ${d.id}`, onclick: () => action(`/api/v1/webhooks/${id}/deliveries/${d.id}/redeliver`, "Redelivery") }, "Redeliver")) : null));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } catch (error) {
      replace(results, errorBox(error, "Could not load deliveries"));
    }
  }
  more.addEventListener("click", () => loadDeliveries(false));
  loadHead();
  loadDeliveries(true);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

export function webhooksView(container, ctx, id) {
  if (id) return endpointView(container, ctx, id);
  endpointsView(container);
  return null;
}
