// The REST API, with the token kept in this tab's sessionStorage.

const KEY = "tether.token";
const listeners = new Set();

export const session = {
  get token() {
    return sessionStorage.getItem(KEY) || "";
  },
  set(token) {
    sessionStorage.setItem(KEY, token);
  },
  clear() {
    sessionStorage.removeItem(KEY);
  },
  onUnauthorized(fn) {
    listeners.add(fn);
  },
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function api(method, path, body, token = session.token) {
  const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, `cannot reach the API: ${err.message}`);
  }
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const message = data?.error?.message || data?.detail || `${res.status} ${res.statusText}`;
    if (res.status === 401 && token === session.token) listeners.forEach((fn) => fn(message));
    throw new ApiError(res.status, message);
  }
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body ?? {});
export const put = (path, body) => api("PUT", path, body);
export const del = (path) => api("DELETE", path);
export const enc = encodeURIComponent;
