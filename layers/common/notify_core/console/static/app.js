// The console's shell: sign-in, the API-down banner, the sections a key's scopes allow, the router.
import { api, ApiDown, forgetKey, getKey, on, ping, setKey } from "./api.js";
import { append, clear, errorBox, h, replace } from "./dom.js";
import { feedView } from "./feed.js";

// The feed is the first page: loaded with the shell. Every other section is fetched when first
// opened (fewer requests before the first paint). A route names a loader of its view.
const now = (view) => () => Promise.resolve(view);
const later = (file, name) => () => import(file).then((module) => module[name]);

const $ = (id) => document.getElementById(id);

// route → [scope needed, view]; a view gets (container, ctx, ...route params) and may return a
// function that stops what it started (timers).
const ROUTES = [
  [/^#\/feed$/, "notifications:read", now(feedView)],
  [/^#\/n\/([0-9a-f-]{36})$/, "notifications:read", later("./timeline.js", "timelineView")],
  [/^#\/dlq$/, "dlq:read", later("./dlq.js", "dlqView")],
  [/^#\/metrics$/, "metrics:read", later("./metrics.js", "metricsView")],
  [/^#\/templates(?:\/([a-z0-9_.-]+))?$/, "templates:read", later("./templates.js", "templatesView")],
  [/^#\/webhooks(?:\/([0-9a-f-]{36}))?$/, "webhooks:read", later("./webhooks.js", "webhooksView")],
  [/^#\/keys$/, "keys:admin", later("./keys.js", "keysView")],
  [/^#\/audit$/, "audit:read", later("./audit.js", "auditView")],
];

const ctx = { who: null, can: (scope) => Boolean(ctx.who && ctx.who.scopes.includes(scope)) };
let stopView = null;
let routed = 0;
let pinger = null;

// ------------------------------------------------------------------ the banner: the API is down

on("down", () => {
  const banner = $("banner");
  replace(banner, h("strong", {}, "The API is not reachable. "), "What is shown may be out of date; the page keeps trying and recovers on its own.");
  banner.hidden = false;
  if (!pinger) pinger = setInterval(ping, 3000);
});
on("up", () => {
  $("banner").hidden = true;
  clearInterval(pinger);
  pinger = null;
  if (ctx.who) route(); // reload the view with fresh data
  else if (getKey()) start();
});
on("unauthorized", (error) => signOut(`Your API key was rejected: ${error.message}`));

// ------------------------------------------------------------------ sign-in

function showSignIn(message) {
  if (stopView) stopView();
  stopView = null;
  routed++;
  ctx.who = null;
  $("who").hidden = true;
  $("nav").hidden = true;
  clear($("view"));
  $("sign-in").hidden = false;
  const box = $("sign-in-error");
  box.hidden = !message;
  box.textContent = message || "";
  $("api-key").value = "";
  $("api-key").focus();
}

function signOut(message) {
  forgetKey();
  showSignIn(message);
}

async function signIn(key) {
  const box = $("sign-in-error");
  box.hidden = true;
  try {
    const who = await api("GET", "/api/v1/whoami", { key });
    setKey(key);
    return who;
  } catch (error) {
    box.hidden = false;
    if (error instanceof ApiDown) {
      // a key kept from before stays: the page signs in again when the API answers
      box.textContent = error.message;
      return null;
    }
    forgetKey();
    if (error.status === 401) box.textContent = `This API key was not accepted: ${error.message}. Check it, or ask for a new one (it may have been revoked).`;
    else box.textContent = `Signing in failed: ${error.message}`;
    return null;
  }
}

function enter(who) {
  ctx.who = who;
  $("sign-in").hidden = true;
  $("who").hidden = false;
  replace($("who-text"), h("span", { class: "tenant" }, who.tenant_name), " · key ", h("code", {}, who.key_prefix));
  for (const item of document.querySelectorAll("#nav li[data-scope]")) {
    item.hidden = !ctx.can(item.dataset.scope);
  }
  $("nav").hidden = false;
  const first = ROUTES.find(([, scope]) => ctx.can(scope));
  if (!first) {
    replace($("view"), errorBox({ message: "This key has none of the scopes the console uses (notifications:read, dlq:read, metrics:read, …)." }, "Nothing to show"));
    return;
  }
  if (!location.hash || location.hash === "#") location.hash = { "notifications:read": "#/feed", "dlq:read": "#/dlq", "metrics:read": "#/metrics", "templates:read": "#/templates", "webhooks:read": "#/webhooks", "keys:admin": "#/keys", "audit:read": "#/audit" }[first[1]];
  route();
}

async function start() {
  const key = getKey();
  if (!key) {
    showSignIn();
    return;
  }
  const who = await signIn(key);
  if (who) enter(who);
  else showSignIn($("sign-in-error").textContent);
}

// ------------------------------------------------------------------ router

function route() {
  if (!ctx.who) return;
  if (stopView) stopView();
  stopView = null;
  routed++;
  const view = $("view");
  clear(view);
  const hash = location.hash || "#/feed";
  for (const link of document.querySelectorAll("#nav a")) {
    const current = hash === link.getAttribute("href") || (hash.startsWith("#/n/") && link.getAttribute("href") === "#/feed") || hash.startsWith(`${link.getAttribute("href")}/`);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  for (const [pattern, scope, render] of ROUTES) {
    const match = hash.match(pattern);
    if (!match) continue;
    if (!ctx.can(scope)) {
      append(view, errorBox({ message: `this API key lacks the scope '${scope}'` }, "Not available"));
      return;
    }
    const mine = ++routed;
    render().then(
      (show) => {
        if (mine !== routed) return; // the operator moved on while the section loaded
        stopView = show(view, ctx, ...match.slice(1)) || null;
      },
      (error) => {
        if (mine === routed) append(view, errorBox({ message: `the section did not load (${error.message})` }, "Not available"));
      },
    );
    return;
  }
  append(view, errorBox({ message: `no page ${hash}` }, "Not found"), h("p", {}, h("a", { href: "#/feed" }, "Go to the activity feed")));
}

window.addEventListener("hashchange", () => {
  route();
  // a new section: move the focus to it (screen readers announce it; Tab continues from there)
  $("main").focus({ preventScroll: false });
});

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return;
    const button = event.submitter || $("sign-in-form").querySelector("button");
    button.disabled = true;
    const who = await signIn(key);
    button.disabled = false;
    if (who) {
      $("api-key").value = "";
      enter(who);
    }
  });
  $("sign-out").addEventListener("click", () => signOut("Signed out. The key is no longer kept in this tab."));
  start();
});
