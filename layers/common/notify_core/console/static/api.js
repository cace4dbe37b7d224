// The API client: the key typed at sign-in, kept in sessionStorage (this tab only; no cookies), sent
// as X-Api-Key. Errors carry the API's envelope ({code, message, details}).

const KEY = "notify-console-key";

// Where the API is: the console is served at <base>/console (<base> is the API Gateway stage, or
// nothing behind notify-local or a custom domain).
export const BASE = location.pathname.replace(/\/console\/?$/, "");

export class ApiError extends Error {
  constructor(status, code, message, details = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** The API did not answer (network error, gateway failure): the page shows a banner and retries. */
export class ApiDown extends ApiError {}

const listeners = { down: [], up: [], unauthorized: [] };
export function on(event, fn) {
  listeners[event].push(fn);
}
function emit(event, payload) {
  for (const fn of listeners[event]) fn(payload);
}

export function getKey() {
  return sessionStorage.getItem(KEY);
}
export function setKey(key) {
  sessionStorage.setItem(KEY, key);
}
export function forgetKey() {
  sessionStorage.removeItem(KEY);
}

let down = false;

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") search.set(name, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

/**
 * api("GET", "/api/v1/notifications", {query: {...}}) → parsed JSON (null for 204).
 * Throws ApiDown when the API cannot be reached, ApiError with the API's message otherwise.
 */
export async function api(method, path, { query: params, body, key, idempotencyKey } = {}) {
  const headers = { Accept: "application/json" };
  const useKey = key || getKey();
  if (useKey) headers["X-Api-Key"] = useKey;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
  let reply;
  try {
    reply = await fetch(`${BASE}${path}${query(params)}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (error) {
    markDown();
    throw new ApiDown(0, "unreachable", "The API is not reachable (network error). The page retries on its own.");
  }
  const text = await reply.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if ([502, 503, 504].includes(reply.status) && !(data && data.error)) {
    markDown();
    throw new ApiDown(reply.status, "unreachable", `The API is not answering (HTTP ${reply.status}). The page retries on its own.`);
  }
  markUp();
  if (!reply.ok) {
    const error = (data && data.error) || {};
    const failure = new ApiError(
      reply.status,
      error.code || "http_error",
      error.message || `HTTP ${reply.status}`,
      error.details || [],
    );
    if (reply.status === 401 && !key) emit("unauthorized", failure);
    throw failure;
  }
  return data;
}

function markDown() {
  if (!down) {
    down = true;
    emit("down");
  }
}

function markUp() {
  if (down) {
    down = false;
    emit("up");
  }
}

/** Ping the API (no key needed) until it answers; used while the banner is up. */
export async function ping() {
  try {
    const reply = await fetch(`${BASE}/health`, { cache: "no-store", credentials: "omit" });
    if (reply.ok) markUp();
    else markDown();
  } catch {
    markDown();
  }
}

export function newIdempotencyKey() {
  return crypto.randomUUID();
}
