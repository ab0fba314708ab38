// Small DOM and formatting helpers. Text always goes in as text (never as HTML).

export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "testid") el.setAttribute("data-testid", value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2).toLowerCase(), value);
    else if (key === "value") el.value = value;
    else if (key === "style") el.style.cssText = value; // CSSOM: allowed by the page's CSP, unlike style attributes
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function svg(tag, attrs) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

// --- formatting ----------------------------------------------------------------------------
const GI = 1024 ** 3;

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  if (n === 0) return "0";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${v >= 100 || Number.isInteger(v) ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

export function cores(n) {
  if (n === null || n === undefined) return "—";
  return `${Number.isInteger(n) ? n : Number(n.toFixed(2))}`;
}

export function gib(n) {
  return n / GI;
}

export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  const pad = (x) => String(x).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function ago(iso, now = Date.now()) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function duration(seconds) {
  if (!seconds) return "—";
  if (seconds % 86400 === 0) return `${seconds / 86400}d`;
  if (seconds % 3600 === 0) return `${seconds / 3600}h`;
  if (seconds % 60 === 0) return `${seconds / 60}m`;
  return `${seconds}s`;
}

// A relative time that keeps itself current (see tickTimes).
export function relTime(iso, testid) {
  return h("time", { datetime: iso || "", title: iso ? when(iso) : "", dataset: { ago: iso || "" }, testid }, ago(iso));
}

export function tickTimes(root = document) {
  const now = Date.now();
  for (const el of root.querySelectorAll("time[data-ago]")) {
    if (el.dataset.ago) el.textContent = ago(el.dataset.ago, now);
  }
}

// --- status badges ------------------------------------------------------------------------------
export function clusterStatus(c) {
  if (c.state === "pending") return { text: "Pending", tone: "warn", key: "pending" };
  if (c.state === "disconnected") return { text: "Disconnected", tone: "", key: "disconnected" };
  return c.online ? { text: "Online", tone: "ok", key: "online" } : { text: "Offline", tone: "err", key: "offline" };
}

const PHASE_TONE = { Ready: "ok", Sleeping: "info", Pending: "warn", Upgrading: "warn", Deleting: "warn", Failed: "err" };

export function badge(text, tone, testid, title) {
  return h("span", { class: `badge ${tone || ""}`, testid, title }, text);
}

export function phaseBadge(phase, testid) {
  return badge(phase, PHASE_TONE[phase] || "", testid);
}

export function chips(obj) {
  const entries = Object.entries(obj || {});
  if (!entries.length) return h("span", { class: "muted" }, "—");
  return entries.map(([k, v]) => h("span", { class: "chip" }, v === "" ? k : `${k}=${v}`));
}

export function meter(used, limit, fmt = (x) => String(x), testid) {
  const unlimited = limit === null || limit === undefined;
  const ratio = unlimited ? 0 : limit === 0 ? (used > 0 ? 1 : 0) : Math.min(1, used / limit);
  const cls = ratio >= 1 ? "meter full" : ratio >= 0.8 ? "meter high" : "meter";
  return h(
    "div",
    { class: cls, testid, title: unlimited ? "no quota" : `${Math.round(ratio * 100)}% used` },
    h("div", { class: "label" }, h("span", {}, fmt(used)), h("span", { class: "muted" }, unlimited ? "no limit" : `of ${fmt(limit)}`)),
    h("div", { class: "bar" }, h("div", { class: "fill", style: `width:${unlimited ? 0 : Math.round(ratio * 100)}%` })),
  );
}

export function table(headers, rows, { empty = "Nothing here yet.", testid } = {}) {
  if (!rows.length) return h("div", { class: "empty", testid: testid ? `${testid}-empty` : undefined }, empty);
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { testid },
      h("thead", {}, h("tr", {}, headers.map((x) => (typeof x === "string" ? h("th", { scope: "col" }, x) : x)))),
      h("tbody", {}, rows),
    ),
  );
}

export function panel(title, body, { actions = [], testid } = {}) {
  return h(
    "section",
    { class: "panel", testid, "aria-label": title },
    h("div", { class: "panel-head" }, h("h2", {}, title), h("span", { class: "spacer" }), actions),
    body,
  );
}

export function copyBox(text, testid) {
  const pre = h("pre", { testid }, text);
  const btn = h("button", { type: "button", class: "btn btn-sm copy", testid: testid ? `${testid}-copy` : undefined }, "Copy");
  btn.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      const range = document.createRange();
      range.selectNodeContents(pre);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      document.execCommand("copy");
    }
    btn.textContent = "Copied";
    setTimeout(() => (btn.textContent = "Copy"), 1500);
  });
  return h("div", { class: "codebox" }, pre, btn);
}

export function toast(message, tone = "") {
  const el = h("div", { class: `toast ${tone}`, role: tone === "err" ? "alert" : "status" }, message);
  document.getElementById("toasts").append(el);
  setTimeout(() => el.remove(), tone === "err" ? 8000 : 4000);
}

// A modal form. `fields` are elements; resolves with the FormData, or null when cancelled.
export function dialog({ title, body = [], submit = "OK", danger = false, testid }) {
  return new Promise((resolve) => {
    const form = h(
      "form",
      { method: "dialog" },
      h("h2", {}, title),
      body,
      h(
        "div",
        { class: "form-actions" },
        h("button", { type: "button", class: "btn", value: "cancel", testid: testid ? `${testid}-cancel` : undefined }, "Cancel"),
        h("button", { type: "submit", class: danger ? "btn btn-danger solid" : "btn btn-primary", testid: testid ? `${testid}-confirm` : undefined }, submit),
      ),
    );
    const dlg = h("dialog", { testid, "aria-label": title }, form);
    let result = null;
    form.querySelector('button[value="cancel"]').addEventListener("click", () => dlg.close());
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      result = new FormData(form);
      dlg.close();
    });
    dlg.addEventListener("close", () => {
      dlg.remove();
      resolve(result);
    });
    document.body.append(dlg);
    dlg.showModal();
    const first = form.querySelector("input, select, textarea");
    if (first) first.focus();
  });
}
