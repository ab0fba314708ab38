// Tether console: sign-in, the shell, a hash router and the live event feed.

import { api, ApiError, get, session } from "./api.js";
import { replace, tickTimes, toast } from "./dom.js";
import { connectLive } from "./live.js";
import * as audit from "./views/audit.js";
import * as cluster from "./views/cluster.js";
import * as clusters from "./views/clusters.js";
import * as connect from "./views/connect.js";
import * as project from "./views/project.js";
import * as people from "./views/people.js";
import * as projects from "./views/projects.js";
import * as workloads from "./views/workloads.js";

const ROUTES = [
  [/^\/clusters$/, clusters.render, "clusters"],
  [/^\/clusters\/([^/]+)$/, cluster.render, "clusters"],
  [/^\/connect$/, connect.render, "clusters"],
  [/^\/projects$/, projects.render, "projects"],
  [/^\/projects\/([^/]+)$/, project.render, "projects"],
  [/^\/projects\/([^/]+)\/(tenants|spaces)\/([^/]+)$/, workloads.renderOne, "workloads"],
  [/^\/tenants$/, (ctx) => workloads.render(ctx, "tenant"), "tenants"],
  [/^\/spaces$/, (ctx) => workloads.render(ctx, "space"), "spaces"],
  [/^\/audit$/, audit.render, "audit"],
  [/^\/people$/, people.render, "people"],
];

const $ = (id) => document.getElementById(id);
let me = null;
let stopLive = null;
let current = null; // the view on screen: { listeners, timers, refresh, alive }
const liveHandlers = new Set();

// --- the context a view gets ---------------------------------------------------------------
function makeContext(params) {
  const view = { listeners: [], timers: [], refreshers: [], alive: true };
  let rolesCache = null;
  const ctx = {
    me,
    params: params.map(decodeURIComponent),
    main: $("main"),
    get alive() {
      return view.alive && current === view;
    },
    // Call fn(kind, data) for live events whose kind starts with one of the prefixes.
    on(prefixes, fn) {
      const list = [].concat(prefixes);
      const handler = (kind, data) => {
        if (view.alive && list.some((p) => kind.startsWith(p))) fn(kind, data);
      };
      liveHandlers.add(handler);
      view.listeners.push(handler);
    },
    every(ms, fn) {
      view.timers.push(setInterval(() => view.alive && document.visibilityState === "visible" && fn(), ms));
    },
    // Register the view's loader: called after a reconnect of the live feed (events may be missed).
    refresh(fn) {
      view.refreshers.push(fn);
    },
    // Debounce: many events in a burst cause one reload.
    debounce(fn, ms = 250) {
      let t = null;
      return () => {
        clearTimeout(t);
        t = setTimeout(() => view.alive && fn(), ms);
      };
    },
    // The caller's role per project (null for a platform admin who is no member).
    async roles(force = false) {
      if (!rolesCache || force) {
        rolesCache = get("/api/v1/projects").then((r) => new Map(r.items.map((p) => [p.name, p.my_role])));
      }
      return rolesCache;
    },
    canManage(workload, roles) {
      if (me.platform_admin) return true;
      const role = roles.get(workload.project);
      return role === "admin" || (role === "user" && workload.created_by === me.user);
    },
    canCreate(projectName, roles) {
      if (me.platform_admin) return true;
      const role = roles.get(projectName);
      return role === "admin" || role === "user";
    },
    fail(err) {
      if (err instanceof ApiError && err.status === 401) return;
      toast(err.message || String(err), "err");
    },
  };
  return { ctx, view };
}

function leave() {
  if (!current) return;
  current.alive = false;
  current.listeners.forEach((fn) => liveHandlers.delete(fn));
  current.timers.forEach(clearInterval);
  current = null;
}

async function route() {
  if (!me) return;
  const path = (location.hash || "#/clusters").slice(1) || "/clusters";
  const found = ROUTES.map(([re, fn, nav]) => [path.match(re), fn, nav]).find(([m]) => m);
  if (!found) {
    location.replace("#/clusters");
    return;
  }
  const [match, render, nav] = found;
  leave();
  const { ctx, view } = makeContext(match.slice(1));
  current = view;
  for (const a of document.querySelectorAll(".sidebar a")) {
    a.classList.toggle("active", a.dataset.nav === nav);
    if (a.dataset.nav === nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  replace(ctx.main);
  try {
    await render(ctx);
  } catch (err) {
    if (ctx.alive) ctx.fail(err);
  }
}

// --- live feed ---------------------------------------------------------------------------------------
function setLive(state) {
  const el = $("live");
  el.dataset.state = state;
  const text = { live: "Live", connecting: "Connecting…", reconnecting: "Reconnecting…", unauthorized: "Signed out" };
  el.querySelector(".live-text").textContent = text[state] || state;
}

function startLive() {
  let wasLive = false;
  stopLive = connectLive(session.token, {
    onState(state) {
      setLive(state);
      if (state === "live") {
        if (wasLive && current) current.refreshers.forEach((fn) => fn());
        wasLive = true;
      }
      if (state === "unauthorized") signOut("Your session has ended; sign in again.");
    },
    onEvent(kind, data) {
      for (const fn of [...liveHandlers]) {
        try {
          fn(kind, data);
        } catch (err) {
          console.error(err);
        }
      }
      if (kind === "resync" && current) current.refreshers.forEach((fn) => fn());
    },
  });
}

// --- sign-in ---------------------------------------------------------------------------------------
function showLogin(message) {
  $("shell").hidden = true;
  $("login").hidden = false;
  const err = $("login-error");
  err.hidden = !message;
  err.textContent = message || "";
  $("login-token").focus();
}

async function enter(token) {
  me = await api("GET", "/api/v1/whoami", undefined, token);
  session.set(token);
  $("login").hidden = true;
  $("shell").hidden = false;
  const who = $("whoami");
  who.replaceChildren(me.user);
  $("nav-people").hidden = !me.platform_admin;
  if (me.platform_admin) {
    const b = document.createElement("span");
    b.className = "badge info plain";
    b.textContent = "platform admin";
    b.dataset.testid = "admin-badge";
    who.append(b);
  }
  startLive();
  if (!location.hash || location.hash === "#/") location.replace("#/clusters");
  else route();
}

function signOut(message) {
  if (stopLive) stopLive();
  stopLive = null;
  leave();
  me = null;
  session.clear();
  replace($("main"));
  showLogin(message);
}

async function start() {
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const token = $("login-token").value.trim();
    const button = ev.target.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await enter(token);
      $("login-token").value = "";
    } catch (err) {
      showLogin(err.status === 401 ? "That token is not valid." : err.message);
    } finally {
      button.disabled = false;
    }
  });
  $("logout").addEventListener("click", () => signOut());
  session.onUnauthorized(() => signOut("Your session has ended; sign in again."));
  window.addEventListener("hashchange", route);
  setInterval(() => tickTimes(), 1000);
  fetch("/openapi.json")
    .then((r) => r.json())
    .then((doc) => ($("version").textContent = `API v${doc.info.version}`))
    .catch(() => {});
  if (session.token) {
    try {
      await enter(session.token);
      return;
    } catch {
      session.clear();
    }
  }
  showLogin();
}

start();
