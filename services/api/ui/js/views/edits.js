// Change and remove a project or a cluster (platform admins). Every removal asks first and says what goes.

import { api, del, enc, get } from "../api.js";
import { dialog, h, toast } from "../dom.js";

const GI = 1024 ** 3;
const field = (id, label, input) => h("div", { class: "field" }, h("label", { for: id }, label), input);
const num = (v) => (v === "" || v === null ? null : Number(v));

function labelsText(obj) {
  return Object.entries(obj || {}).map(([k, v]) => `${k}=${v}`).join(", ");
}

function parseLabels(text) {
  const out = {};
  for (const part of String(text || "").split(",").map((s) => s.trim()).filter(Boolean)) {
    const i = part.indexOf("=");
    if (i < 1) throw new Error(`invalid label ${part}: expected key=value`);
    out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

async function editProject(ctx, p, reload) {
  const q = p.quota;
  const form = await dialog({
    title: `Edit project ${p.name}`,
    body: [
      field("p-display", "Display name", h("input", { id: "p-display", name: "display_name", value: p.display_name, maxlength: 1024, testid: "project-edit-display" })),
      field("p-clusters", "Allowed clusters (comma separated; empty: by selector or any)", h("input", { id: "p-clusters", name: "clusters", value: p.clusters.join(", "), testid: "project-edit-clusters" })),
      field("p-selector", "Cluster selector (k=v, comma separated)", h("input", { id: "p-selector", name: "selector", value: labelsText(p.cluster_selector), testid: "project-edit-selector" })),
      field("p-tenants", "Quota: tenant clusters (empty: no limit)", h("input", { id: "p-tenants", name: "tenants", type: "number", min: 0, value: q.tenants ?? "", testid: "project-edit-tenants" })),
      field("p-spaces", "Quota: spaces", h("input", { id: "p-spaces", name: "spaces", type: "number", min: 0, value: q.spaces ?? "", testid: "project-edit-spaces" })),
      field("p-cpu", "Quota: CPU cores", h("input", { id: "p-cpu", name: "cpu", type: "number", min: 0, step: "any", value: q.cpu ?? "", testid: "project-edit-cpu" })),
      field("p-memory", "Quota: memory (Gi)", h("input", { id: "p-memory", name: "memory", type: "number", min: 0, step: "any", value: q.memory === null ? "" : q.memory / GI, testid: "project-edit-memory" })),
    ],
    submit: "Save",
    testid: "project-edit-dialog",
  });
  if (!form) return;
  const memory = num(form.get("memory"));
  await api("PATCH", `/api/v1/projects/${enc(p.name)}`, {
    display_name: form.get("display_name"),
    clusters: String(form.get("clusters") || "").split(",").map((s) => s.trim()).filter(Boolean),
    cluster_selector: parseLabels(form.get("selector")),
    quota: { tenants: num(form.get("tenants")), spaces: num(form.get("spaces")), cpu: num(form.get("cpu")), memory: memory === null ? null : Math.round(memory * GI) },
  });
  toast(`project ${p.name} saved`);
  reload();
}

async function deleteProject(ctx, p) {
  const live = p.usage.tenants + p.usage.spaces;
  const takes = [
    ...p.members.map((m) => `${m.kind} ${m.name}'s role ${m.role}`),
    live ? `${p.usage.tenants} tenant cluster(s) and ${p.usage.spaces} space(s), deleted from their clusters` : null,
  ].filter(Boolean);
  const ok = await dialog({
    title: `Delete project ${p.name}?`,
    body: [h("p", {}, "This also removes:"), h("ul", { testid: "delete-project-takes" }, takes.map((t) => h("li", {}, t)))],
    submit: "Delete",
    danger: true,
    testid: "delete-project-dialog",
  });
  if (!ok) return;
  const path = `/api/v1/projects/${enc(p.name)}?cascade=true`;
  let res = await del(path);
  while (!res.deleted && ctx.alive) {
    toast(`deleting ${res.remaining.join(", ")}…`);
    await new Promise((r) => setTimeout(r, 1000));
    res = await del(path);
  }
  toast(`project ${p.name} deleted`);
  location.hash = "#/projects";
}

export function projectActions(ctx, p, reload) {
  if (!ctx.me.platform_admin) return null;
  const run = (fn) => () => fn().catch((err) => ctx.fail(err));
  return [
    h("button", { type: "button", class: "btn", testid: "edit-project", onclick: run(() => editProject(ctx, p, reload)) }, "Edit"),
    h("button", { type: "button", class: "btn btn-danger", testid: "delete-project", onclick: run(() => deleteProject(ctx, p)) }, "Delete"),
  ];
}

async function editCluster(c, reload) {
  const form = await dialog({
    title: `Edit cluster ${c.name}`,
    body: [
      field("c-display", "Display name", h("input", { id: "c-display", name: "display_name", value: c.display_name, maxlength: 1024, testid: "cluster-edit-display" })),
      field("c-description", "Description", h("input", { id: "c-description", name: "description", value: c.description, maxlength: 1024, testid: "cluster-edit-description" })),
      field("c-labels", "Labels (k=v, comma separated)", h("input", { id: "c-labels", name: "labels", value: labelsText(c.labels), testid: "cluster-edit-labels" })),
    ],
    submit: "Save",
    testid: "cluster-edit-dialog",
  });
  if (!form) return;
  await api("PATCH", `/api/v1/clusters/${enc(c.name)}`, {
    display_name: form.get("display_name"),
    description: form.get("description"),
    labels: parseLabels(form.get("labels")),
  });
  toast(`cluster ${c.name} saved`);
  reload();
}

async function removeCluster(c) {
  const placed = [...(await get(`/api/v1/tenants?cluster=${enc(c.name)}`)).items, ...(await get(`/api/v1/spaces?cluster=${enc(c.name)}`)).items];
  const takes = ["its record, presence, command consumer and any commands still waiting for it", ...placed.map((w) => `${w.kind} ${w.project}/${w.name} (being deleted; never confirmed)`)];
  const ok = await dialog({
    title: `Remove cluster ${c.name}?`,
    body: [h("p", {}, "This also removes:"), h("ul", { testid: "remove-cluster-takes" }, takes.map((t) => h("li", {}, t)))],
    submit: "Remove",
    danger: true,
    testid: "remove-cluster-dialog",
  });
  if (!ok) return;
  await del(`/api/v1/clusters/${enc(c.name)}`);
  toast(`cluster ${c.name} removed`);
  location.hash = "#/clusters";
}

export function clusterActions(ctx, c, reload) {
  if (!ctx.me.platform_admin) return null;
  const run = (fn) => () => fn().catch((err) => ctx.fail(err));
  return [
    h("button", { type: "button", class: "btn", testid: "edit-cluster", onclick: run(() => editCluster(c, reload)) }, "Edit"),
    c.state !== "connected"
      ? h("button", { type: "button", class: "btn btn-danger", testid: "remove-cluster", onclick: run(() => removeCluster(c)) }, "Remove")
      : null,
  ];
}
