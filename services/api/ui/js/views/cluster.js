// One cluster: status, health over time (transitions and nodes), and the tenants and spaces on it.

import { enc, get, post } from "../api.js";
import {
  badge,
  bytes,
  chips,
  clusterStatus,
  cores,
  dialog,
  h,
  panel,
  relTime,
  replace,
  svg,
  table,
  toast,
  when,
} from "../dom.js";
import { clusterActions } from "./edits.js";
import { workloadTable } from "./workloads.js";

const samples = new Map(); // cluster -> [{t, ready, total}], kept while the tab lives

function sample(c) {
  const list = samples.get(c.name) || [];
  const last = list[list.length - 1];
  const now = Date.now();
  if (!last || now - last.t > 1000) list.push({ t: now, ready: c.nodes_ready, total: c.node_count, online: c.online });
  while (list.length > 720) list.shift();
  samples.set(c.name, list);
  return list;
}

const STATE_OF = { online: "online", offline: "offline", disconnected: "offline", registered: "unknown" };

// Online/offline segments from transitions (oldest first) over [start, end] (ms).
export function segments(events, start, end, currentOnline) {
  const out = [];
  let state = "unknown";
  let at = start;
  for (const ev of events) {
    const t = Math.max(start, new Date(ev.at).getTime());
    const next = STATE_OF[ev.kind];
    if (!next) continue;
    if (t > at) out.push({ state, from: at, to: t });
    state = next;
    at = t;
  }
  if (state === "unknown" && events.length === 0) state = currentOnline ? "online" : "unknown";
  if (end > at) out.push({ state, from: at, to: end });
  return out;
}

function timeline(history, cluster) {
  const now = Date.now();
  const events = [...history.items].reverse(); // oldest first
  const created = cluster.created_at ? new Date(cluster.created_at).getTime() : now - 3600e3;
  const first = events.length ? new Date(events[0].at).getTime() : created;
  const start = Math.max(new Date(history.since).getTime(), Math.min(first, created) - 1000);
  const segs = segments(events, start, now, cluster.online);
  const span = Math.max(1, now - start);
  return h(
    "div",
    { testid: "cluster-timeline" },
    h(
      "div",
      { class: "timeline", role: "img", "aria-label": "Online and offline periods" },
      segs.map((s) =>
        h("div", {
          class: `seg ${s.state}`,
          style: `width:${((s.to - s.from) / span) * 100}%`,
          title: `${s.state}: ${when(new Date(s.from).toISOString())} → ${when(new Date(s.to).toISOString())}`,
        }),
      ),
    ),
    h("div", { class: "timeline-axis" }, h("span", {}, when(new Date(start).toISOString())), h("span", {}, "now")),
    h(
      "div",
      { class: "legend" },
      h("span", {}, h("i", { style: "background:#3fb872" }), "online"),
      h("span", {}, h("i", { style: "background:#e26363" }), "offline"),
      h("span", {}, h("i", { style: "background:#dfe3e8" }), "pending or unknown"),
    ),
  );
}

function nodeChart(list) {
  if (list.length < 2) {
    const now = list[list.length - 1];
    return h(
      "p",
      { class: "muted small" },
      now && now.total ? `${now.ready}/${now.total} nodes ready. ` : "No node report yet. ",
      "The chart fills in while this page stays open.",
    );
  }
  const w = 600;
  const hgt = 60;
  const t0 = list[0].t;
  const t1 = list[list.length - 1].t;
  const max = Math.max(1, ...list.map((s) => s.total));
  const x = (t) => ((t - t0) / Math.max(1, t1 - t0)) * w;
  const y = (v) => hgt - 4 - (v / max) * (hgt - 8);
  const path = (key) =>
    list.map((s, i) => `${i ? "L" : "M"}${x(s.t).toFixed(1)},${y(s[key]).toFixed(1)}`).join(" ");
  const chart = svg("svg", { class: "spark", viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: "none", role: "img" });
  chart.setAttribute("aria-label", "Nodes ready over time");
  chart.append(svg("path", { d: path("total"), class: "total" }), svg("path", { d: path("ready") }));
  return h(
    "div",
    {},
    chart,
    h(
      "div",
      { class: "timeline-axis" },
      h("span", {}, when(new Date(t0).toISOString())),
      h("span", {}, `ready (solid) / total (dashed), max ${max}`),
      h("span", {}, "now"),
    ),
  );
}

function card(k, v, s, testid) {
  return h("div", { class: "card", testid }, h("div", { class: "k" }, k), h("div", { class: "v" }, v), s ? h("div", { class: "s" }, s) : null);
}

export async function render(ctx) {
  const [name] = ctx.params;
  const head = h("div");
  const cards = h("div", { class: "cards", testid: "cluster-cards" });
  const health = h("div", { class: "panel-body", testid: "cluster-history" });
  const nodes = h("div", { class: "panel-body", testid: "cluster-node-chart" });
  const conditions = h("div", { testid: "cluster-conditions" });
  const planes = h("div", { testid: "cluster-control-planes" });
  const tenants = h("div", { testid: "cluster-tenants" });
  const spaces = h("div", { testid: "cluster-spaces" });
  replace(
    ctx.main,
    h("div", { class: "crumbs" }, h("a", { href: "#/clusters" }, "Clusters"), " / ", name),
    head,
    cards,
    h(
      "div",
      { class: "grid-2" },
      panel("Health over time", health, { testid: "cluster-health-panel" }),
      panel("Nodes", nodes),
    ),
    panel("Conditions", conditions),
    panel("Tenant control planes (as the agent sees them)", planes),
    panel("Tenant clusters on this cluster", tenants),
    panel("Spaces on this cluster", spaces),
  );

  const loadCluster = async () => {
    const c = await get(`/api/v1/clusters/${enc(name)}`);
    if (!ctx.alive) return null;
    const st = clusterStatus(c);
    replace(
      head,
      h(
        "div",
        { class: "page-head" },
        h("h1", { testid: "cluster-name" }, c.display_name || c.name),
        badge(st.text, st.tone, "cluster-detail-status"),
        Object.keys(c.labels).length ? h("span", { class: "chips" }, chips(c.labels)) : null,
        h("span", { class: "spacer" }),
        clusterActions(ctx, c, loadCluster),
        ctx.me.platform_admin && c.state !== "disconnected"
          ? h("button", { type: "button", class: "btn btn-danger", testid: "disconnect-cluster", onclick: () => disconnect(c) }, "Disconnect")
          : null,
      ),
      c.description ? h("p", { class: "muted" }, c.description) : null,
    );
    replace(
      cards,
      card("Status", st.text, c.online ? ["since ", relTime(c.connected_since)] : ["last seen ", relTime(c.last_seen)], "card-status"),
      card("Last heartbeat", relTime(c.last_seen), when(c.last_seen)),
      card("Kubernetes", c.kubernetes_version || "—", c.driver ? `driver: ${c.driver}` : ""),
      card("Agent", c.agent_version || "—", c.local ? "platform cluster" : ""),
      card("Nodes", c.node_count ? `${c.nodes_ready}/${c.node_count}` : "—", "ready / total", "card-nodes"),
      card("Capacity", c.capacity.cpu ? `${cores(c.capacity.cpu)} CPU` : "—", c.capacity.memory ? bytes(c.capacity.memory) : ""),
      card("Registered", relTime(c.created_at), when(c.created_at)),
    );
    replace(
      conditions,
      table(
        ["Type", "Status", "Reason", "Message", "Since"],
        c.conditions.map((x) =>
          h(
            "tr",
            {},
            h("td", {}, x.type),
            h("td", {}, badge(x.status, x.status === "True" ? "ok" : x.status === "False" ? "err" : "")),
            h("td", {}, x.reason || "—"),
            h("td", { class: "wrap" }, x.message || ""),
            h("td", {}, relTime(x.last_transition_time)),
          ),
        ),
        { empty: "No conditions reported yet." },
      ),
    );
    replace(
      planes,
      table(
        ["Tenant cluster", "Ready", "Version", "Pods", "Why not ready"],
        (c.control_planes || []).map((p) =>
          h(
            "tr",
            { testid: "control-plane-row" },
            h("td", {}, `${p.project}/${p.name}`),
            h("td", {}, badge(p.ready ? "Ready" : p.replicas ? "Not ready" : "Asleep", p.ready ? "ok" : p.replicas ? "err" : "")),
            h("td", {}, p.version || "—"),
            h("td", {}, String(p.pods)),
            h("td", { class: "wrap" }, p.reason ? `${p.reason}${p.message ? `: ${p.message}` : ""}` : ""),
          ),
        ),
        { empty: "No tenant cluster runs here." },
      ),
    );
    replace(nodes, nodeChart(sample(c)));
    return c;
  };

  const loadHistory = async (c) => {
    const history = await get(`/api/v1/clusters/${enc(name)}/events?limit=200&hours=168`);
    if (!ctx.alive) return;
    replace(
      health,
      timeline(history, c),
      h("h3", { style: "margin-top:12px" }, "Transitions"),
      table(
        ["When", "Event", "Reason"],
        history.items.slice(0, 50).map((ev) =>
          h(
            "tr",
            { testid: "history-row" },
            h("td", { title: when(ev.at) }, when(ev.at)),
            h("td", {}, badge(ev.kind, ev.kind === "online" ? "ok" : ev.kind === "offline" || ev.kind === "disconnected" ? "err" : "info")),
            h("td", { class: "wrap" }, ev.reason || ""),
          ),
        ),
        { empty: "No transitions in the last 7 days.", testid: "history-table" },
      ),
    );
  };

  const loadWorkloads = async () => {
    const [t, s, roles] = await Promise.all([
      get(`/api/v1/tenants?cluster=${enc(name)}`),
      get(`/api/v1/spaces?cluster=${enc(name)}`),
      ctx.roles(true),
    ]);
    if (!ctx.alive) return;
    replace(tenants, workloadTable(ctx, "tenant", t.items, roles, { reload: loadWorkloads, showCluster: false }));
    replace(spaces, workloadTable(ctx, "space", s.items, roles, { reload: loadWorkloads, showCluster: false }));
  };

  const loadAll = async () => {
    try {
      const c = await loadCluster();
      if (c) await Promise.all([loadHistory(c), loadWorkloads()]);
    } catch (err) {
      ctx.fail(err);
    }
  };

  async function disconnect(c) {
    const ok = await dialog({
      title: `Disconnect ${c.name}?`,
      body: h("p", {}, "Its agent's credentials stop working at once and its agent stops. Tenant clusters on it keep running."),
      submit: "Disconnect",
      danger: true,
      testid: "disconnect-dialog",
    });
    if (!ok) return;
    try {
      await post(`/api/v1/clusters/${enc(c.name)}/disconnect`);
      toast(`${c.name} disconnected`);
      loadAll();
    } catch (err) {
      ctx.fail(err);
    }
  }

  ctx.on("cluster.", ctx.debounce(loadAll, 150));
  ctx.on(["tenant.", "space.", "command."], ctx.debounce(() => loadWorkloads().catch(ctx.fail), 200));
  ctx.refresh(loadAll);
  ctx.every(5000, () => loadCluster().catch(ctx.fail));
  await loadAll();
}
