// The admin API, called with the session cookie; state-changing calls carry the CSRF token.
const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";
export const MAX_UPLOAD = 64 << 20; // the platform refuses larger firmware (413)

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function call(method, path, body, contentType = "application/json") {
  const headers = {};
  if (method !== "GET") headers["X-CSRF-Token"] = csrf();
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = contentType;
    payload = contentType === "application/json" ? JSON.stringify(body) : body;
  }
  const resp = await fetch(path, { method, headers, body: payload, credentials: "same-origin" });
  if (resp.status === 401) {
    window.location.assign("/console"); // the session ended: back to the sign-in page
    throw new ApiError(401, "signed out");
  }
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new ApiError(resp.status, data.error || `HTTP ${resp.status}`);
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body === undefined ? {} : body);

export function uploadPackage(file, meta) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(meta)) if (v) q.set(k, v);
  q.set("source", file.name.slice(0, 200));
  return call("POST", `/api/packages?${q}`, file, "application/octet-stream");
}

export async function signOut() {
  await fetch("/console/logout", { method: "POST", headers: { "X-CSRF-Token": csrf() } });
  window.location.assign("/console");
}

// Which operations the running platform offers (its OpenAPI document): the console shows a
// button only for a route that exists, so new task actions appear when the API gets them.
let described;
export async function apiPaths() {
  if (!described) {
    described = fetch("/openapi.json").then((r) => r.json()).then((doc) => doc.paths || {})
      .catch(() => ({}));
  }
  return described;
}
