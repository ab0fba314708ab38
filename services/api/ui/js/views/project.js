// One project: quota use, allowed clusters, members and roles, and its tenant clusters and spaces.

import { del, enc, get, put } from "../api.js";
import { badge, bytes, clusterStatus, cores, dialog, h, meter, panel, relTime, replace, table, toast, when } from "../dom.js";
import { projectActions } from "./edits.js";
import { allowedClusters, roleBadge } from "./projects.js";
import { createWorkload, workloadTable } from "./workloads.js";

function allows(p, c) {
  if (!p.clusters.length && !Object.keys(p.cluster_selector).length) return true;
  if (p.clusters.includes(c.name)) return true;
  const sel = Object.entries(p.cluster_selector);
  return sel.length > 0 && sel.every(([k, v]) => c.labels[k] === v);
}

export async function render(ctx) {
  const [name] = ctx.params;
  const head = h("div");
  const quota = h("div", { class: "cards", testid: "project-quota" });
  const members = h("div", { testid: "project-members" });
  const clusters = h("div", { testid: "project-clusters" });
  const tenants = h("div", { testid: "project-tenants" });
  const spaces = h("div", { testid: "project-spaces" });
  const tenantActions = h("span");
  const spaceActions = h("span");
  const memberActions = h("span");
  replace(
    ctx.main,
    h("div", { class: "crumbs" }, h("a", { href: "#/projects" }, "Projects"), " / ", name),
    head,
    quota,
    h("div", { class: "grid-2" }, panel("Members and roles", members, { actions: memberActions }), panel("Allowed clusters", clusters)),
    panel("Tenant clusters", tenants, { actions: tenantActions }),
    panel("Spaces", spaces, { actions: spaceActions }),
  );

  let clusterNames = [];
  const load = async () => {
    try {
      const [p, cl, t, s, roles] = await Promise.all([
        get(`/api/v1/projects/${enc(name)}`),
        get("/api/v1/clusters"),
        get(`/api/v1/tenants?project=${enc(name)}`),
        get(`/api/v1/spaces?project=${enc(name)}`),
        ctx.roles(true),
      ]);
      if (!ctx.alive) return;
      const manage = ctx.me.platform_admin || p.my_role === "admin";
      const create = ctx.canCreate(name, roles);
      const allowed = cl.items.filter((c) => allows(p, c));
      clusterNames = allowed.map((c) => c.name);
      replace(
        head,
        h(
          "div",
          { class: "page-head" },
          h("h1", {}, p.display_name || p.name),
          roleBadge(p.my_role, "project-my-role"),
          h("span", { class: "muted" }, `created ${when(p.created_at)} by ${p.created_by || "—"}`),
          h("span", { class: "spacer" }),
          projectActions(ctx, p, load),
        ),
      );
      const card = (label, used, limit, fmt) =>
        h("div", { class: "card" }, h("div", { class: "k" }, label), meter(used, limit, fmt, `quota-${label.toLowerCase().replace(/ /g, "-")}`));
      replace(
        quota,
        card("Tenant clusters", p.usage.tenants, p.quota.tenants),
        card("Spaces", p.usage.spaces, p.quota.spaces),
        card("CPU", p.usage.cpu, p.quota.cpu, cores),
        card("Memory", p.usage.memory, p.quota.memory, bytes),
      );
      replace(
        members,
        table(
          ["Member", "Kind", "Role", manage ? h("th", { class: "actions", scope: "col" }, "") : null].filter(Boolean),
          p.members.map((m) =>
            h(
              "tr",
              { testid: `member-row-${m.kind}-${m.name}` },
              h("td", {}, m.name),
              h("td", { class: "muted" }, m.kind),
              h("td", { class: "role" }, m.role),
              manage
                ? h(
                    "td",
                    { class: "actions" },
                    h("button", { type: "button", class: "btn btn-sm btn-danger", testid: `remove-member-${m.kind}-${m.name}`, onclick: () => removeMember(m) }, "Remove"),
                  )
                : null,
            ),
          ),
          { empty: "No members yet." },
        ),
      );
      replace(
        memberActions,
        manage ? h("button", { type: "button", class: "btn btn-sm", testid: "add-member", onclick: addMember }, "Add member") : null,
      );
      replace(
        clusters,
        h("div", { class: "panel-body chips" }, allowedClusters(p)),
        table(
          ["Cluster", "Status", "Last seen"],
          allowed.map((c) => {
            const st = clusterStatus(c);
            return h(
              "tr",
              {},
              h("td", {}, h("a", { href: `#/clusters/${enc(c.name)}` }, c.name)),
              h("td", {}, badge(st.text, st.tone)),
              h("td", {}, relTime(c.last_seen)),
            );
          }),
          { empty: "No connected cluster matches yet." },
        ),
      );
      replace(tenants, workloadTable(ctx, "tenant", t.items, roles, { reload: load, showProject: false }));
      replace(spaces, workloadTable(ctx, "space", s.items, roles, { reload: load, showProject: false }));
      const newButton = (kind) =>
        create
          ? h(
              "button",
              {
                type: "button",
                class: "btn btn-sm btn-primary",
                testid: `create-${kind}`,
                onclick: async () => (await createWorkload(ctx, kind, name, clusterNames)) && load(),
              },
              kind === "tenant" ? "New tenant cluster" : "New space",
            )
          : null;
      replace(tenantActions, newButton("tenant"));
      replace(spaceActions, newButton("space"));
    } catch (err) {
      ctx.fail(err);
    }
  };

  async function addMember() {
    const form = await dialog({
      title: `Add a member to ${name}`,
      body: [
        h(
          "div",
          { class: "field" },
          h("label", { for: "member-kind" }, "Kind"),
          h("select", { id: "member-kind", name: "kind", testid: "member-kind" }, h("option", { value: "user" }, "User"), h("option", { value: "team" }, "Team")),
        ),
        h("div", { class: "field" }, h("label", { for: "member-name" }, "Name"), h("input", { id: "member-name", name: "name", required: true, maxlength: 63, testid: "member-name" })),
        h(
          "div",
          { class: "field" },
          h("label", { for: "member-role" }, "Role"),
          h("select", { id: "member-role", name: "role", testid: "member-role" }, ["viewer", "user", "admin"].map((r) => h("option", { value: r }, r))),
        ),
      ],
      submit: "Add",
      testid: "member-dialog",
    });
    if (!form) return;
    const kind = String(form.get("kind"));
    const body = { role: String(form.get("role")), [kind]: String(form.get("name")).trim() };
    try {
      await put(`/api/v1/projects/${enc(name)}/members`, body);
      toast(`${body[kind]} is now ${body.role} of ${name}`);
      load();
    } catch (err) {
      ctx.fail(err);
    }
  }

  async function removeMember(m) {
    const ok = await dialog({
      title: `Remove ${m.kind} ${m.name} from ${name}?`,
      body: h("p", {}, "Their access to the project's tenant clusters and spaces is removed on the next apply."),
      submit: "Remove",
      danger: true,
      testid: "remove-member-dialog",
    });
    if (!ok) return;
    try {
      await del(`/api/v1/projects/${enc(name)}/members/${m.kind}/${enc(m.name)}`);
      load();
    } catch (err) {
      ctx.fail(err);
    }
  }

  ctx.on(["tenant.", "space.", "command.", "project.", "cluster."], ctx.debounce(load, 200));
  ctx.refresh(load);
  ctx.every(10000, load);
  await load();
}
