// DOM helpers. Every piece of data reaches the page as text (textContent, attribute values), never
// as markup: HTML in a payload or a recipient is shown, not interpreted.

/**
 * h("button", {class: "x", onclick: fn, "aria-label": "..."}, "text", child, ...)
 * Attributes: `class`, `for`, `on<event>` (listeners), booleans (true sets, false/null omits),
 * anything else as a string attribute. Children: strings (as text nodes), nodes, arrays, null.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

/** append(el, child, [children], ...): strings as text, nodes as they are; null and false skipped. */
export function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function replace(el, ...children) {
  clear(el);
  return append(el, ...children);
}

const dateFormat = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
});

/** A timestamp for people (local time), in a <time> element carrying the exact instant. */
export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const when = new Date(iso);
  return h("time", { datetime: iso, title: iso }, Number.isNaN(when.getTime()) ? iso : dateFormat.format(when));
}

export function ago(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 90) return `${seconds} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} days`;
}

export function badge(text, kind = text) {
  return h("span", { class: `badge badge-${String(kind).replace(/[^a-z_]/g, "")}` }, text);
}

/** A loading line, an error box (the API's own message) or an empty state. */
export function loading(what = "Loading…") {
  return h("p", { class: "state state-loading", role: "status" }, what);
}

export function errorBox(error, what = "Could not load this") {
  const details = (error && error.details) || [];
  return h(
    "div",
    { class: "state state-error", role: "alert" },
    h("strong", {}, `${what}: `),
    error && error.message ? error.message : String(error),
    details.length
      ? h("ul", {}, details.map((d) => h("li", {}, d.field ? `${d.field}: ${d.message}` : d.message)))
      : null,
  );
}

export function empty(title, hint) {
  return h("div", { class: "state state-empty" }, h("p", {}, h("strong", {}, title)), hint ? h("p", {}, hint) : null);
}

/** A labelled form control: label + control (+ optional hint), ids wired for screen readers. */
let nextId = 0;
export function field(labelText, control, hint) {
  const id = control.id || `f${++nextId}`;
  control.id = id;
  const hintEl = hint ? h("small", { id: `${id}-hint`, class: "hint" }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: id }, labelText), control, hintEl);
}

export function select(name, options, value = "") {
  return h(
    "select",
    { name },
    options.map(([v, label]) => h("option", { value: v, selected: v === value }, label)),
  );
}

/**
 * A modal confirmation (a <dialog>: focus is trapped, Escape cancels). Resolves true on confirm.
 */
export function confirmDialog(title, message, confirmLabel = "Confirm", danger = false) {
  return new Promise((resolve) => {
    const dialog = h("dialog", { class: "confirm", "aria-labelledby": "confirm-title" });
    const done = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    const ok = h("button", { type: "button", class: danger ? "danger" : "primary", onclick: () => done(true) }, confirmLabel);
    append(dialog, [
      h("h2", { id: "confirm-title" }, title),
      h("p", {}, message),
      h("div", { class: "actions" },
        h("button", { type: "button", onclick: () => done(false) }, "Cancel"),
        ok),
    ]);
    dialog.addEventListener("cancel", (event) => {
      event.preventDefault();
      done(false);
    });
    document.body.append(dialog);
    dialog.showModal();
    ok.focus();
  });
}

/** Shorten long strings for a table cell; the whole value stays in the title. */
export function short(text, max = 48) {
  if (text === null || text === undefined) return h("span", { class: "muted" }, "—");
  const value = String(text);
  if (value.length <= max) return h("span", { class: "wrap" }, value);
  return h("span", { class: "wrap", title: value }, `${value.slice(0, max - 1)}…`);
}

export function announce(message) {
  const live = document.getElementById("live");
  if (live) live.textContent = message;
}
