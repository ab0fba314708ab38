// Tenant clusters and spaces: status, conditions and the actions sleep, wake, upgrade and delete.

import { ApiError, del, enc, get, post } from "../api.js";
import { badge, bytes, cores, dialog, duration, h, panel, phaseBadge, relTime, replace, table, toast, when } from "../dom.js";

const PLURAL = { tenant: "tenants", space: "spaces" };
const LABEL = { tenant: "Tenant cluster", space: "Space" };

export function path(w) {
  return `/api/v1/projects/${enc(w.project)}/${PLURAL[w.kind]}/${enc(w.name)}`;
}

function conditionSummary(w) {
  if (w.failure) return h("span", { class: "badge err plain", title: w.failure }, "failed");
  const bad = w.conditions.filter((c) => c.status !== "True");
  if (!w.conditions.length) return h("span", { class: "muted" }, "—");
  if (!bad.length) return h("span", { class: "muted", title: w.conditions.map((c) => c.type).join(", ") }, `${w.conditions.length} OK`);
  return bad.map((c) => h("span", { class: "chip", title: `${c.reason}: ${c.message}` }, `${c.type}=${c.status}`));
}

function syncCell(w) {
  if (w.in_sync) return h("span", { class: "muted" }, "in sync");
  const observed = w.observed ? w.observed.generation : 0;
  return h("span", { class: "badge warn plain", title: `desired generation ${w.desired.generation}, observed ${observed}` }, `applying ${observed}→${w.desired.generation}`);
}

// Run one action on a workload, asking first where it matters. Resolves true when it was sent.
export async function act(ctx, w, action) {
  const id = `${w.project}/${w.name}`;
  let body;
  if (action === "upgrade") {
    const form = await dialog({
      title: `Upgrade ${id}`,
      body: h(
        "div",
        { class: "field" },
        h("label", { for: "upgrade-version" }, "Kubernetes version"),
        h("input", { id: "upgrade-version", name: "version", required: true, maxlength: 32, placeholder: "v1.36", value: w.version, testid: "upgrade-version" }),
        h("span", { class: "hint" }, `Now ${w.version || "unset"}. The quota is checked again.`),
      ),
      submit: "Upgrade",
      testid: "upgrade-dialog",
    });
    if (!form) return false;
    body = { version: String(form.get("version")).trim() };
  }
  if (action === "delete") {
    const ok = await dialog({
      title: `Delete ${w.kind === "tenant" ? "tenant cluster" : "space"} ${id}?`,
      body: h("p", {}, "Everything in it is deleted on the cluster. This cannot be undone."),
      submit: "Delete",
      danger: true,
      testid: "delete-dialog",
    });
    if (!ok) return false;
  }
  try {
    if (action === "delete") await del(path(w));
    else await post(`${path(w)}/${action}`, body);
    toast(`${action} ${id}: sent`);
    return true;
  } catch (err) {
    ctx.fail(err);
    return false;
  }
}

// Connect: kubectl reaches a tenant cluster or space through the platform's gateway (the kubeconfig holds no
// token: its credential comes from `tether token`).
function connectPanel(w) {
  const command = `tether ${w.kind} kubeconfig ${w.name} -p ${w.project} --merge`;
  const server = `${location.origin}/kubernetes/project/${enc(w.project)}/${w.kind}/${enc(w.name)}`;
  const copy = h("button", { type: "button", class: "btn btn-sm", testid: "connect-copy", onclick: () => navigator.clipboard?.writeText(command).then(() => toast("copied")) }, "Copy");
  return panel(
    "Connect with kubectl",
    h(
      "dl",
      { class: "kv panel-body" },
      h("dt", {}, "Kubeconfig"),
      h("dd", {}, h("code", { class: "mono", testid: "connect-command" }, command), " ", copy),
      h("dt", {}, "Server"),
      h("dd", { class: "mono", testid: "connect-server" }, server),
      h("dt", {}, "Then"),
      h("dd", {}, h("code", { class: "mono" }, w.kind === "space" ? "kubectl get all" : "kubectl get namespaces")),
    ),
    { testid: "workload-connect" },
  );
}

function actionButtons(ctx, w, reload) {
  const run = (action) => async (ev) => {
    ev.currentTarget.disabled = true;
    await act(ctx, w, action);
    reload();
  };
  const key = `${w.project}-${w.name}`;
  const deleting = w.desired.state === "deleted";
  const buttons = [];
  if (w.kind === "tenant") {
    if (w.desired.state === "running")
      buttons.push(h("button", { type: "button", class: "btn btn-sm", testid: `action-sleep-${key}`, onclick: run("sleep"), "aria-label": `Sleep ${w.name}` }, "Sleep"));
    if (w.desired.state === "sleeping")
      buttons.push(h("button", { type: "button", class: "btn btn-sm", testid: `action-wake-${key}`, onclick: run("wake"), "aria-label": `Wake ${w.name}` }, "Wake"));
    if (!deleting)
      buttons.push(h("button", { type: "button", class: "btn btn-sm", testid: `action-upgrade-${key}`, onclick: run("upgrade"), "aria-label": `Upgrade ${w.name}` }, "Upgrade"));
  }
  if (!deleting)
    buttons.push(h("button", { type: "button", class: "btn btn-sm btn-danger", testid: `action-delete-${key}`, onclick: run("delete"), "aria-label": `Delete ${w.name}` }, "Delete"));
  return buttons;
}

export function workloadTable(ctx, kind, items, roles, { reload, showCluster = true, showProject = true, empty } = {}) {
  const anyActions = items.some((w) => ctx.canManage(w, roles));
  const headers = [
    "Name",
    showProject ? "Project" : null,
    showCluster ? "Cluster" : null,
    "Phase",
    kind === "tenant" ? "Version" : null,
    "Sync",
    "Conditions",
    h("th", { class: "num", scope: "col" }, "CPU"),
    h("th", { class: "num", scope: "col" }, "Memory"),
    "Created by",
    "Age",
    anyActions ? h("th", { class: "actions", scope: "col" }, "Actions") : null,
  ].filter(Boolean);
  const rows = items.map((w) => {
    const key = `${w.project}-${w.name}`;
    const version =
      w.observed && w.observed.version && w.observed.version !== w.version ? `${w.observed.version} → ${w.version}` : w.version || "—";
    return h(
      "tr",
      { testid: `${kind}-row-${key}`, dataset: { phase: w.phase } },
      h("td", {}, h("a", { href: `#/projects/${enc(w.project)}/${PLURAL[kind]}/${enc(w.name)}` }, w.name)),
      showProject ? h("td", {}, h("a", { href: `#/projects/${enc(w.project)}` }, w.project)) : null,
      showCluster ? h("td", {}, h("a", { href: `#/clusters/${enc(w.cluster)}` }, w.cluster)) : null,
      h("td", {}, phaseBadge(w.phase, `phase-${key}`)),
      kind === "tenant" ? h("td", {}, version) : null,
      h("td", {}, syncCell(w)),
      h("td", { class: "chips" }, conditionSummary(w)),
      h("td", { class: "num" }, cores(w.desired.cpu)),
      h("td", { class: "num" }, bytes(w.desired.memory)),
      h("td", {}, w.created_by || "—"),
      h("td", {}, relTime(w.created_at)),
      anyActions ? h("td", { class: "actions" }, ctx.canManage(w, roles) ? actionButtons(ctx, w, reload) : null) : null,
    );
  });
  return table(headers, rows, {
    testid: `${kind}-table`,
    empty: empty || `No ${kind === "tenant" ? "tenant clusters" : "spaces"} here.`,
  });
}

// A dialog that creates a tenant cluster or space in `project`.
export async function createWorkload(ctx, kind, project, clusters) {
  const fields = [
    h("div", { class: "field" }, h("label", { for: "wl-name" }, "Name"), h("input", { id: "wl-name", name: "name", required: true, maxlength: 63, pattern: "[a-z0-9]([a-z0-9\\-]{0,61}[a-z0-9])?", testid: "create-name" })),
    h(
      "div",
      { class: "field" },
      h("label", { for: "wl-cluster" }, "Cluster"),
      h("select", { id: "wl-cluster", name: "cluster", testid: "create-cluster" }, h("option", { value: "" }, "Let the platform pick"), clusters.map((c) => h("option", { value: c }, c))),
    ),
  ];
  if (kind === "tenant") {
    fields.push(
      h("div", { class: "field" }, h("label", { for: "wl-version" }, "Kubernetes version"), h("input", { id: "wl-version", name: "version", maxlength: 32, placeholder: "v1.36", testid: "create-version" })),
      h("div", { class: "field" }, h("label", { for: "wl-sleep" }, "Sleep after idle (minutes, 0: never)"), h("input", { id: "wl-sleep", name: "sleep_after", type: "number", min: 0, value: "0", testid: "create-sleep-after" })),
    );
  }
  const form = await dialog({ title: `New ${LABEL[kind].toLowerCase()} in ${project}`, body: fields, submit: "Create", testid: "create-dialog" });
  if (!form) return null;
  const body = { name: String(form.get("name")).trim(), cluster: String(form.get("cluster") || "") };
  if (kind === "tenant") {
    body.version = String(form.get("version") || "").trim();
    body.sleep_after = Number(form.get("sleep_after") || 0) * 60;
  }
  try {
    const out = await post(`/api/v1/projects/${enc(project)}/${PLURAL[kind]}`, body);
    toast(`${LABEL[kind]} ${project}/${out.name} created`);
    return out;
  } catch (err) {
    ctx.fail(err);
    return null;
  }
}

export async function render(ctx, kind) {
  const filter = h("input", { type: "search", placeholder: "Filter by name, project or cluster", "aria-label": "Filter", testid: `${kind}-filter` });
  const phase = h(
    "select",
    { "aria-label": "Filter by phase", testid: `${kind}-filter-phase` },
    ["all", "Ready", "Sleeping", "Pending", "Upgrading", "Deleting", "Failed"].map((p) => h("option", { value: p }, p === "all" ? "All phases" : p)),
  );
  const body = h("div", { testid: `${kind}s-container` });
  replace(
    ctx.main,
    h("div", { class: "page-head" }, h("h1", {}, kind === "tenant" ? "Tenant clusters" : "Spaces")),
    h("section", { class: "panel", testid: `${kind}s-view`, "aria-label": kind === "tenant" ? "Tenant clusters" : "Spaces" }, h("div", { class: "panel-head" }, h("div", { class: "toolbar" }, filter, phase)), body),
  );
  let items = [];
  let roles = new Map();
  const draw = () => {
    const text = filter.value.trim().toLowerCase();
    const shown = items.filter(
      (w) => (phase.value === "all" || w.phase === phase.value) && (!text || `${w.name} ${w.project} ${w.cluster}`.toLowerCase().includes(text)),
    );
    replace(body, workloadTable(ctx, kind, shown, roles, { reload: load }));
  };
  const load = async () => {
    try {
      const [data, r] = await Promise.all([get(`/api/v1/${PLURAL[kind]}`), ctx.roles(true)]);
      if (!ctx.alive) return;
      items = data.items;
      roles = r;
      draw();
    } catch (err) {
      ctx.fail(err);
    }
  };
  filter.addEventListener("input", draw);
  phase.addEventListener("change", draw);
  ctx.on([`${kind}.`, "command.", "project."], ctx.debounce(load, 150));
  ctx.refresh(load);
  ctx.every(10000, load);
  await load();
}

export async function renderOne(ctx) {
  const [project, plural, name] = ctx.params;
  const kind = plural === "tenants" ? "tenant" : "space";
  const head = h("div");
  const body = h("div");
  replace(
    ctx.main,
    h("div", { class: "crumbs" }, h("a", { href: `#/${plural}` }, kind === "tenant" ? "Tenant clusters" : "Spaces"), " / ", h("a", { href: `#/projects/${enc(project)}` }, project), " / ", name),
    head,
    body,
  );
  const load = async () => {
    let w;
    try {
      w = await get(`/api/v1/projects/${enc(project)}/${plural}/${enc(name)}`);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        replace(head, h("div", { class: "page-head" }, h("h1", {}, name)));
        replace(body, h("div", { class: "empty", testid: "workload-gone" }, `This ${kind === "tenant" ? "tenant cluster" : "space"} does not exist (any more).`));
        return;
      }
      ctx.fail(err);
      return;
    }
    const roles = await ctx.roles(true);
    if (!ctx.alive) return;
    const key = `${w.project}-${w.name}`;
    replace(
      head,
      h(
        "div",
        { class: "page-head" },
        h("h1", {}, w.name),
        phaseBadge(w.phase, `phase-${key}`),
        h("span", { class: "muted" }, `${LABEL[kind]} in project ${w.project}`),
        h("span", { class: "spacer" }),
        ctx.canManage(w, roles) ? actionButtons(ctx, w, load) : null,
      ),
      w.failure ? h("p", { class: "form-error", testid: "workload-failure" }, w.failure) : null,
    );
    replace(
      body,
      h(
        "div",
        { class: "grid-2" },
        panel(
          "Status",
          h(
            "dl",
            { class: "kv panel-body" },
            h("dt", {}, "Phase"),
            h("dd", {}, w.phase),
            h("dt", {}, "Cluster"),
            h("dd", {}, h("a", { href: `#/clusters/${enc(w.cluster)}` }, w.cluster)),
            kind === "tenant" ? [h("dt", {}, "Version"), h("dd", {}, w.version || "—")] : null,
            h("dt", {}, "Desired"),
            h("dd", {}, `${w.desired.state}, generation ${w.desired.generation} (${w.desired.operation})`),
            h("dt", {}, "Observed"),
            h("dd", {}, w.observed ? [`${w.observed.state}, generation ${w.observed.generation} `, relTime(w.observed.at)] : "not yet reported"),
            h("dt", {}, "In sync"),
            h("dd", {}, w.in_sync ? "yes" : "no"),
            h("dt", {}, "Resources"),
            h("dd", {}, `${cores(w.desired.cpu)} CPU, ${bytes(w.desired.memory)}`),
            kind === "tenant" ? [h("dt", {}, "Sleep after idle"), h("dd", {}, duration(w.sleep_after) === "—" ? "never" : duration(w.sleep_after))] : null,
            h("dt", {}, "Last activity"),
            h("dd", {}, relTime(w.last_activity)),
            h("dt", {}, "Created"),
            h("dd", {}, `${when(w.created_at)} by ${w.created_by || "—"}`),
          ),
        ),
        panel(
          "Access on the cluster",
          table(["Subject", "Access"], w.desired.members.map((m) => h("tr", {}, h("td", { class: "mono" }, m.subject), h("td", { class: "role" }, m.access))), { empty: "No members." }),
        ),
      ),
      connectPanel(w),
      panel(
        "Conditions",
        table(
          ["Type", "Status", "Reason", "Message", "Since"],
          w.conditions.map((c) =>
            h(
              "tr",
              {},
              h("td", {}, c.type),
              h("td", {}, badge(c.status, c.status === "True" ? "ok" : c.status === "False" ? "err" : "")),
              h("td", {}, c.reason || "—"),
              h("td", { class: "wrap" }, c.message || ""),
              h("td", {}, relTime(c.last_transition_time)),
            ),
          ),
          { empty: "No conditions yet.", testid: "workload-conditions" },
        ),
      ),
    );
  };
  ctx.on([`${kind}.`, "command."], (_k, data) => (!data || (data.project === project && data.name === name)) && load());
  ctx.refresh(load);
  ctx.every(10000, load);
  await load();
}
