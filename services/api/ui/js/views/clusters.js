// Clusters: every connected cluster, filtered by label and status, updated live.

import { get } from "../api.js";
import { bytes, chips, clusterStatus, cores, badge, h, relTime, replace, table } from "../dom.js";

// "env=dev, tier" -> [["env","dev"],["tier",null]]
export function parseSelector(text) {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean)
    .map((s) => {
      const i = s.indexOf("=");
      return i < 0 ? [s, null] : [s.slice(0, i).trim(), s.slice(i + 1).trim()];
    });
}

function matches(c, selector, status, text) {
  if (status !== "all" && clusterStatus(c).key !== status) return false;
  for (const [k, v] of selector) {
    if (!(k in c.labels)) return false;
    if (v !== null && c.labels[k] !== v) return false;
  }
  if (text && !`${c.name} ${c.display_name}`.toLowerCase().includes(text)) return false;
  return true;
}

export function clusterRow(c) {
  const st = clusterStatus(c);
  return h(
    "tr",
    { testid: `cluster-row-${c.name}`, dataset: { status: st.key } },
    h(
      "td",
      {},
      h("a", { href: `#/clusters/${encodeURIComponent(c.name)}`, testid: `cluster-link-${c.name}` }, c.name),
      c.display_name && c.display_name !== c.name ? h("span", { class: "sub" }, c.display_name) : null,
      c.local ? h("span", { class: "sub" }, "platform cluster") : null,
    ),
    h("td", {}, badge(st.text, st.tone, `cluster-status-${c.name}`)),
    h("td", {}, relTime(c.last_seen, `cluster-seen-${c.name}`)),
    h("td", {}, c.kubernetes_version || "—"),
    h("td", {}, c.agent_version || "—", c.driver ? h("span", { class: "sub" }, c.driver) : null),
    h("td", { class: "num", testid: `cluster-nodes-${c.name}` }, c.node_count ? `${c.nodes_ready}/${c.node_count}` : "—"),
    h("td", { class: "num" }, c.capacity.cpu ? cores(c.capacity.cpu) : "—"),
    h("td", { class: "num" }, c.capacity.memory ? bytes(c.capacity.memory) : "—"),
    h("td", { class: "chips" }, chips(c.labels)),
  );
}

export const CLUSTER_HEADERS = [
  "Name",
  "Status",
  "Last seen",
  "Kubernetes",
  "Agent",
  h("th", { class: "num", scope: "col" }, "Nodes"),
  h("th", { class: "num", scope: "col" }, "CPU"),
  h("th", { class: "num", scope: "col" }, "Memory"),
  "Labels",
];

export async function render(ctx) {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const search = h("input", {
    type: "search",
    placeholder: "Filter by name",
    "aria-label": "Filter by name",
    testid: "cluster-filter-name",
  });
  const labels = h("input", {
    type: "search",
    placeholder: "Labels, e.g. env=prod,region",
    "aria-label": "Filter by labels",
    testid: "cluster-filter-labels",
    value: params.get("labels") || "",
  });
  const status = h(
    "select",
    { "aria-label": "Filter by status", testid: "cluster-filter-status" },
    ["all", "online", "offline", "pending", "disconnected"].map((s) =>
      h("option", { value: s }, s === "all" ? "All statuses" : s[0].toUpperCase() + s.slice(1)),
    ),
  );
  const summary = h("div", { class: "summary", testid: "cluster-summary" });
  const body = h("div", { testid: "cluster-table-container" });
  replace(
    ctx.main,
    h(
      "div",
      { class: "page-head" },
      h("h1", {}, "Clusters"),
      summary,
      h("span", { class: "spacer" }),
      ctx.me.platform_admin
        ? h("a", { class: "btn btn-primary", href: "#/connect", testid: "connect-cluster-button" }, "Connect cluster")
        : null,
    ),
    h("section", { class: "panel", "aria-label": "Clusters", testid: "clusters-view" },
      h("div", { class: "panel-head" }, h("div", { class: "toolbar" }, search, labels, status)),
      body,
    ),
  );

  let items = [];
  const draw = () => {
    const selector = parseSelector(labels.value);
    const text = search.value.trim().toLowerCase();
    const shown = items.filter((c) => matches(c, selector, status.value, text));
    const online = items.filter((c) => clusterStatus(c).key === "online").length;
    replace(
      summary,
      h("span", {}, h("b", {}, String(items.length)), " clusters"),
      h("span", {}, h("b", {}, String(online)), " online"),
      h("span", {}, h("b", {}, String(items.length - online)), " not online"),
    );
    replace(
      body,
      table(CLUSTER_HEADERS, shown.map(clusterRow), {
        testid: "cluster-table",
        empty: items.length ? "No cluster matches the filter." : "No cluster is connected yet.",
      }),
    );
  };
  const load = async () => {
    try {
      const data = await get("/api/v1/clusters");
      if (!ctx.alive) return;
      items = data.items;
      draw();
    } catch (err) {
      ctx.fail(err);
    }
  };
  for (const el of [search, labels]) el.addEventListener("input", draw);
  status.addEventListener("change", draw);
  ctx.on("cluster.", ctx.debounce(load, 150));
  ctx.refresh(load);
  ctx.every(5000, load); // last-seen and node counts change without an event
  await load();
}
