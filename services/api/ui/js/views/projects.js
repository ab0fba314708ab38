// Projects the caller may see: members, allowed clusters and quota use.

import { get } from "../api.js";
import { bytes, chips, cores, h, meter, replace, table } from "../dom.js";

export function roleBadge(role, testid) {
  return h("span", { class: "badge plain info role", testid }, role || "platform admin");
}

export function allowedClusters(p) {
  if (!p.clusters.length && !Object.keys(p.cluster_selector).length) return h("span", { class: "muted" }, "any cluster");
  return [
    p.clusters.map((c) => h("a", { class: "chip", href: `#/clusters/${encodeURIComponent(c)}` }, c)),
    Object.keys(p.cluster_selector).length ? [h("span", { class: "muted small" }, " labels: "), chips(p.cluster_selector)] : null,
  ];
}

export async function render(ctx) {
  const body = h("div", { testid: "projects-container" });
  replace(
    ctx.main,
    h("div", { class: "page-head" }, h("h1", {}, "Projects")),
    h("section", { class: "panel", testid: "projects-view", "aria-label": "Projects" }, body),
  );
  const load = async () => {
    try {
      const data = await get("/api/v1/projects");
      if (!ctx.alive) return;
      const rows = data.items.map((p) =>
        h(
          "tr",
          { testid: `project-row-${p.name}` },
          h("td", {}, h("a", { href: `#/projects/${encodeURIComponent(p.name)}` }, p.name), p.display_name && p.display_name !== p.name ? h("span", { class: "sub" }, p.display_name) : null),
          h("td", {}, roleBadge(p.my_role, `project-role-${p.name}`)),
          h("td", { class: "num" }, String(p.members.length)),
          h("td", { class: "chips" }, allowedClusters(p)),
          h("td", {}, meter(p.usage.tenants, p.quota.tenants)),
          h("td", {}, meter(p.usage.spaces, p.quota.spaces)),
          h("td", {}, meter(p.usage.cpu, p.quota.cpu, cores)),
          h("td", {}, meter(p.usage.memory, p.quota.memory, bytes)),
        ),
      );
      replace(
        body,
        table(["Name", "Your role", h("th", { class: "num", scope: "col" }, "Members"), "Clusters", "Tenant clusters", "Spaces", "CPU", "Memory"], rows, {
          testid: "project-table",
          empty: "You are not a member of any project.",
        }),
      );
    } catch (err) {
      ctx.fail(err);
    }
  };
  ctx.on(["project.", "tenant.", "space."], ctx.debounce(load, 300));
  ctx.refresh(load);
  ctx.every(15000, load);
  await load();
}
