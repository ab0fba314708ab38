// Connect a cluster: register it, then show the agent command (and manifests) and wait for it to come online.

import { enc, get, post } from "../api.js";
import { badge, clusterStatus, copyBox, h, panel, relTime, replace, when } from "../dom.js";
import { parseSelector } from "./clusters.js";

function field(label, input, hint) {
  return h("div", { class: "field" }, h("label", { for: input.id }, label), input, hint ? h("span", { class: "hint" }, hint) : null);
}

function parseLabels(text) {
  const labels = {};
  for (const [k, v] of parseSelector(text.replace(/\n/g, ","))) labels[k] = v ?? "";
  return labels;
}

function manifestText(manifests) {
  if (typeof manifests === "string") return manifests;
  if (Array.isArray(manifests)) return manifests.map((m) => (typeof m === "string" ? m : JSON.stringify(m, null, 2))).join("\n---\n");
  return JSON.stringify(manifests, null, 2);
}

export async function render(ctx) {
  if (!ctx.me.platform_admin) {
    replace(ctx.main, h("div", { class: "empty", testid: "connect-forbidden" }, "Only platform admins connect clusters."));
    return;
  }
  const name = h("input", {
    id: "connect-name",
    name: "name",
    required: true,
    maxlength: 63,
    pattern: "[a-z0-9]([a-z0-9\\-]{0,61}[a-z0-9])?",
    placeholder: "edge-1",
    autocomplete: "off",
    testid: "connect-name",
  });
  const display = h("input", { id: "connect-display", name: "display_name", maxlength: 1024, testid: "connect-display-name" });
  const description = h("input", { id: "connect-description", name: "description", maxlength: 1024, testid: "connect-description" });
  const labels = h("input", { id: "connect-labels", name: "labels", placeholder: "env=dev, region=eu", testid: "connect-labels" });
  const ttl = h(
    "select",
    { id: "connect-ttl", name: "token_ttl", testid: "connect-ttl" },
    [
      [3600, "1 hour"],
      [86400, "1 day"],
      [604800, "7 days"],
    ].map(([v, t]) => h("option", { value: String(v) }, t)),
  );
  const error = h("p", { class: "form-error", role: "alert", hidden: true, testid: "connect-error" });
  const submit = h("button", { type: "submit", class: "btn btn-primary", testid: "connect-submit" }, "Register cluster");
  const form = h(
    "form",
    { class: "panel-body", testid: "connect-form", "aria-label": "Connect a cluster" },
    h(
      "div",
      { class: "form-grid" },
      field("Name", name, "Lower-case letters, digits and '-' (DNS-1123 label)"),
      field("Display name", display),
      field("Description", description),
      field("Labels", labels, "key=value pairs, comma separated"),
      field("Connect token valid for", ttl, "The one-time token is spent by the agent's first connect"),
    ),
    error,
    h("div", { class: "form-actions" }, submit, h("a", { class: "btn", href: "#/clusters" }, "Cancel")),
  );
  const result = h("div", { testid: "connect-result" });
  replace(
    ctx.main,
    h("div", { class: "crumbs" }, h("a", { href: "#/clusters" }, "Clusters"), " / Connect"),
    h("div", { class: "page-head" }, h("h1", {}, "Connect a cluster")),
    panel("1. Register", form),
    result,
  );
  name.focus();

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    submit.disabled = true;
    try {
      const out = await post("/api/v1/clusters", {
        name: name.value.trim(),
        display_name: display.value.trim(),
        description: description.value.trim(),
        labels: parseLabels(labels.value),
        token_ttl: Number(ttl.value),
      });
      for (const el of form.elements) el.disabled = true;
      showResult(out);
    } catch (err) {
      error.textContent = err.message;
      error.hidden = false;
      submit.disabled = false;
    }
  });

  function showResult(out) {
    const cname = out.cluster.name;
    const status = h("span", { testid: "connect-status" }, badge("Waiting for the agent…", "warn"));
    const seen = h("span", { class: "muted" });
    replace(
      result,
      panel(
        "2. Run the agent on the cluster",
        h(
          "div",
          { class: "panel-body" },
          h("p", { class: "notice", role: "note" }, "The connect token is shown only once. The agent dials out to NATS; the cluster needs no inbound access."),
          h("h3", {}, "Agent command"),
          copyBox(out.agent_command, "agent-command"),
          out.manifests
            ? [
                h("h3", { style: "margin-top:12px" }, "Or apply these manifests (kubectl apply -f -)"),
                copyBox(manifestText(out.manifests), "agent-manifests"),
              ]
            : null,
          h(
            "dl",
            { class: "kv", style: "margin-top:12px" },
            h("dt", {}, "Cluster"),
            h("dd", {}, h("a", { href: `#/clusters/${enc(cname)}`, testid: "connect-cluster-link" }, cname)),
            h("dt", {}, "NATS"),
            h("dd", { class: "mono" }, out.nats_url),
            h("dt", {}, "Token"),
            h("dd", { class: "mono", testid: "connect-token" }, out.token),
            h("dt", {}, "Token expires"),
            h("dd", {}, when(out.expires_at)),
          ),
        ),
        { testid: "connect-instructions" },
      ),
      panel("3. Wait for it to come online", h("div", { class: "panel-body" }, status, " ", seen)),
    );
    const poll = async () => {
      try {
        const c = await get(`/api/v1/clusters/${enc(cname)}`);
        if (!ctx.alive) return;
        const st = clusterStatus(c);
        replace(status, st.key === "pending" ? badge("Waiting for the agent…", "warn") : badge(st.text, st.tone));
        status.dataset.status = st.key;
        replace(seen, c.last_seen ? ["last heartbeat ", relTime(c.last_seen)] : "");
      } catch (err) {
        ctx.fail(err);
      }
    };
    ctx.on("cluster.", (_kind, data) => data && data.cluster === cname && poll());
    ctx.refresh(poll);
    ctx.every(2000, poll);
    poll();
  }
}
