// Templates: the list, one template's versions and variants, and a preview with sample data.
import { api } from "./api.js";
import { append, empty, errorBox, field, h, loading, replace, select, short, time } from "./dom.js";

function listView(container) {
  const results = h("div", { class: "results" }, loading("Loading templates…"));
  const more = h("button", { type: "button", hidden: true }, "Load more");
  append(container, [h("h2", {}, "Templates"), results, h("div", { class: "more" }, more)]);
  let cursor = null;
  let tbody = null;
  async function load() {
    try {
      const page = await api("GET", "/api/v1/templates", { query: { limit: 50, cursor } });
      if (!tbody) {
        if (!page.data.length) {
          replace(results, empty("No templates yet.", "Create one with POST /api/v1/templates, or push a folder with notify-admin templates push."));
          return;
        }
        tbody = h("tbody");
        replace(results, h("div", { class: "table-wrap" }, h("table", {},
          h("caption", { class: "visually-hidden" }, "Templates"),
          h("thead", {}, h("tr", {}, ["Key", "Name", "Category", "Version", "Channels", "Updated"].map((t) => h("th", { scope: "col" }, t)))),
          tbody)));
      }
      for (const t of page.data) {
        tbody.append(h("tr", {},
          h("td", {}, h("a", { href: `#/templates/${t.key}` }, t.key)),
          h("td", {}, short(t.name, 40)),
          h("td", {}, t.category || "—"),
          h("td", { class: "num" }, String(t.latest_version)),
          h("td", {}, [...new Set(t.variants.map((v) => v.channel))].join(", ")),
          h("td", {}, time(t.updated_at))));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
    } catch (error) {
      replace(results, errorBox(error, "Could not load templates"));
    }
  }
  more.addEventListener("click", load);
  load();
}

function variantView(v) {
  const rows = [];
  for (const k of ["subject", "title", "body", "html"]) {
    if (v[k]) rows.push(h("dt", {}, k), h("dd", {}, h("pre", { class: "wrap" }, v[k])));
  }
  if (v.data && Object.keys(v.data).length) rows.push(h("dt", {}, "data"), h("dd", {}, h("pre", { class: "wrap" }, JSON.stringify(v.data, null, 2))));
  return h("article", { class: "variant" }, h("h4", {}, `${v.channel} · ${v.locale || "default locale"}`), h("dl", { class: "content" }, rows));
}

function detailView(container, key) {
  const head = h("div", {}, loading("Loading the template…"));
  const variants = h("div", { class: "variants" });
  const preview = h("section", { "aria-labelledby": "pv-h" });
  append(container, [h("p", {}, h("a", { href: "#/templates" }, "← Templates")), head, variants, preview]);
  let latest = null;

  async function show(version) {
    try {
      const t = await api("GET", `/api/v1/templates/${encodeURIComponent(key)}`, { query: { version } });
      latest = latest || t.latest_version;
      const versions = select("version", Array.from({ length: latest }, (_, i) => [String(latest - i), `v${latest - i}${latest - i === latest ? " (latest)" : ""}`]), String(t.version));
      versions.addEventListener("change", () => show(versions.value));
      replace(head,
        h("h2", {}, t.name, " ", h("code", {}, t.key)),
        h("p", { class: "facts" }, t.category ? `category ${t.category} · ` : "", `version ${t.version} of ${t.latest_version}, created `, time(t.updated_at)),
        h("form", { class: "filters", onsubmit: (e) => e.preventDefault() }, field("Version", versions)));
      replace(variants, h("h3", {}, "Variants"), t.variants.map(variantView));
      previewForm(t);
    } catch (error) {
      replace(head, errorBox(error, "Could not load this template"));
    }
  }

  function previewForm(t) {
    const channel = select("channel", [...new Set(t.variants.map((v) => v.channel))].map((c) => [c, c]));
    const locale = h("input", { name: "locale", type: "text", placeholder: "e.g. pt-BR", maxlength: 35 });
    const data = h("textarea", { name: "data", rows: 6, spellcheck: "false" }, '{\n  "name": "Ada"\n}');
    const out = h("div", { class: "preview-out", "aria-live": "polite" });
    const form = h("form", { class: "stack" },
      field("Channel", channel),
      field("Locale", locale, "Empty: the tenant's default"),
      field("Sample data (JSON)", data, "The template's variables; an undefined one is an error"),
      h("button", { type: "submit", class: "primary" }, "Preview"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      let parsed;
      try {
        parsed = JSON.parse(data.value || "{}");
      } catch (error) {
        replace(out, errorBox({ message: `the sample data is not JSON: ${error.message}` }, "Cannot preview"));
        return;
      }
      replace(out, loading("Rendering…"));
      try {
        const body = { channel: channel.value, data: parsed, version: t.version };
        if (locale.value.trim()) body.locale = locale.value.trim();
        const p = await api("POST", `/api/v1/templates/${encodeURIComponent(t.key)}/preview`, { body });
        replace(out, h("p", { class: "muted" }, `v${p.version}, ${p.channel}, locale ${p.locale || "default"}`),
          h("dl", { class: "content" }, Object.entries(p.payload).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, h("pre", { class: "wrap" }, typeof v === "string" ? v : JSON.stringify(v, null, 2)))])));
      } catch (error) {
        replace(out, errorBox(error, "Preview failed"));
      }
    });
    replace(preview, h("h3", { id: "pv-h" }, "Preview with sample data"), form, out);
  }

  show(null);
}

export function templatesView(container, ctx, key) {
  if (key) detailView(container, key);
  else listView(container);
}
