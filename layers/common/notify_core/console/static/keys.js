// API keys: list, create (the key shown once), revoke (confirmed).
import { api, newIdempotencyKey } from "./api.js";
import { append, badge, confirmDialog, empty, errorBox, field, h, loading, replace, time } from "./dom.js";

export function keysView(container, ctx) {
  const name = h("input", { name: "name", type: "text", required: true, maxlength: 255, placeholder: "e.g. ci" });
  const rate = h("input", { name: "rate_limit", type: "number", min: 1, step: 1, placeholder: "the default" });
  const scopes = h("fieldset", { class: "scopes" }, h("legend", {}, "Scopes (only those of your own key can be given)"),
    ctx.who.scopes.map((s) => h("label", { class: "inline" }, h("input", { type: "checkbox", name: "scope", value: s }), ` ${s}`)));
  const created = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "stack create-key" },
    h("h3", {}, "Create a key"), field("Name", name), scopes, field("Rate limit (requests per window)", rate),
    h("button", { type: "submit", class: "primary" }, "Create key"));
  const showRevoked = h("input", { type: "checkbox", name: "revoked" });
  const results = h("div", { class: "results" }, loading("Loading keys…"));
  append(container, [h("h2", {}, "API keys"), form, created,
    h("h3", {}, "Keys"), h("label", { class: "inline" }, showRevoked, " Include revoked keys"), results]);

  async function load() {
    replace(results, loading("Loading keys…"));
    try {
      const page = await api("GET", "/api/v1/api-keys", { query: { limit: 100, revoked: showRevoked.checked ? "true" : null } });
      if (!page.data.length) {
        replace(results, empty("No keys.", "Create one above."));
        return;
      }
      replace(results, h("div", { class: "table-wrap" }, h("table", {},
        h("caption", { class: "visually-hidden" }, "API keys, newest first"),
        h("thead", {}, h("tr", {}, ["Prefix", "Name", "Scopes", "Last used", "Created", "State"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, page.data.map((k) => h("tr", {},
          h("td", {}, h("code", {}, k.prefix), k.prefix === ctx.who.key_prefix ? h("span", { class: "muted" }, " (this tab)") : null),
          h("td", { class: "wrap" }, k.name),
          h("td", { class: "scopes-cell" }, k.scopes.join(", ")),
          h("td", {}, time(k.last_used_at)),
          h("td", {}, time(k.created_at)),
          h("td", {}, k.revoked_at ? badge("revoked", "cancelled") : h("button", { type: "button", class: "danger", "aria-label": `Revoke key ${k.prefix}`, onclick: () => revoke(k) }, "Revoke"))))))));
    } catch (error) {
      replace(results, errorBox(error, "Could not load keys"));
    }
  }

  async function revoke(k) {
    const self = k.prefix === ctx.who.key_prefix;
    const ok = await confirmDialog(`Revoke ${k.prefix}?`, `${self ? "This is the key this tab signed in with: the console signs out. " : ""}Clients using "${k.name}" get 401 from now on (within the key cache time). This cannot be undone.`, "Revoke", true);
    if (!ok) return;
    try {
      await api("DELETE", `/api/v1/api-keys/${k.id}`);
    } catch (error) {
      replace(created, errorBox(error, "Revoke failed"));
    }
    load();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = [...scopes.querySelectorAll("input:checked")].map((i) => i.value);
    const body = { name: name.value.trim(), scopes: chosen };
    if (rate.value) body.rate_limit = Number(rate.value);
    try {
      const k = await api("POST", "/api/v1/api-keys", { body, idempotencyKey: newIdempotencyKey() });
      const keyText = h("code", { class: "secret wrap" }, k.key || "");
      const copy = h("button", { type: "button", onclick: async () => {
        try {
          await navigator.clipboard.writeText(k.key);
          copy.textContent = "Copied";
        } catch {
          copy.textContent = "Select the key and copy it";
        }
      } }, "Copy");
      replace(created, h("div", { class: "state state-ok", role: "alert" },
        h("p", {}, h("strong", {}, `Key ${k.prefix} created. `), "Copy it now: it is shown this once and cannot be read again."),
        h("p", {}, keyText, " ", copy)));
      form.reset();
      load();
    } catch (error) {
      replace(created, errorBox(error, "Could not create the key"));
    }
  });
  showRevoked.addEventListener("change", load);
  load();
}
