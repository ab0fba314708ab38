// Users and teams (platform admins): create, disable, delete, API tokens; teams' members. Every removal asks first.

import { del, enc, get, post } from "../api.js";
import { copyBox, dialog, h, replace, table, toast, when } from "../dom.js";

const field = (id, label, input) => h("div", { class: "field" }, h("label", { for: id }, label), input);

async function confirmRemoval(title, takes, testid) {
  const body = takes.length
    ? [h("p", {}, "This also removes:"), h("ul", { testid: `${testid}-takes` }, takes.map((t) => h("li", {}, t)))]
    : h("p", {}, "Nothing else goes with it.");
  return (await dialog({ title, body, submit: "Delete", danger: true, testid })) !== null;
}

function showToken(title, token) {
  return dialog({
    title,
    body: [h("p", {}, "Shown only this once: copy it now."), copyBox(token, "new-token")],
    submit: "Done",
    testid: "token-dialog",
  });
}

async function tokensDialog(ctx, user) {
  const list = await get(`/api/v1/users/${enc(user)}/tokens`);
  const rows = list.items.map((t) =>
    h(
      "tr",
      { testid: `token-row-${t.id}` },
      h("td", {}, h("code", {}, t.id)),
      h("td", {}, t.name || "—"),
      h("td", {}, when(t.created_at)),
      h("td", {}, t.expires_at ? when(t.expires_at) : "never"),
      h("td", { class: "actions" }, h("input", { type: "checkbox", name: "revoke", value: t.id, "aria-label": `revoke ${t.id}`, testid: `token-revoke-${t.id}` })),
    ),
  );
  const form = await dialog({
    title: `API tokens of ${user}`,
    body: [
      table(["Id", "Name", "Created", "Expires", "Revoke"], rows, { testid: "token-table", empty: "No tokens." }),
      field("token-name", "New token's name (leave empty to create none)", h("input", { id: "token-name", name: "name", maxlength: 200, testid: "token-name" })),
    ],
    submit: "Apply",
    testid: "tokens-dialog",
  });
  if (!form) return;
  const revoke = form.getAll("revoke");
  if (revoke.length && !(await confirmRemoval(`Revoke ${revoke.length} token(s) of ${user}?`, revoke.map((id) => `token ${id} (stops working at once)`), "revoke-dialog"))) return;
  for (const id of revoke) await del(`/api/v1/users/${enc(user)}/tokens/${enc(id)}`);
  const name = String(form.get("name") || "").trim();
  if (name) {
    const created = await post(`/api/v1/users/${enc(user)}/tokens`, { name });
    await showToken(`New token for ${user}`, created.token);
  }
  if (revoke.length) toast(`${revoke.length} token(s) revoked`);
}

async function createUser(reload) {
  const form = await dialog({
    title: "Create a user",
    body: [
      field("user-name", "Name", h("input", { id: "user-name", name: "name", required: true, maxlength: 63, testid: "user-name" })),
      field("user-email", "E-mail", h("input", { id: "user-email", name: "email", type: "email", maxlength: 254, testid: "user-email" })),
      h("label", { class: "check" }, h("input", { type: "checkbox", name: "admin", testid: "user-admin" }), " platform admin"),
    ],
    submit: "Create",
    testid: "user-dialog",
  });
  if (!form) return;
  const created = await post("/api/v1/users", { name: form.get("name"), email: form.get("email") || "", platform_admin: form.get("admin") === "on" });
  reload();
  await showToken(`User ${created.user.name} created`, created.token);
}

async function deleteUser(ctx, u, reload) {
  const [tokens, teams, projects] = await Promise.all([get(`/api/v1/users/${enc(u.name)}/tokens`), get("/api/v1/teams"), get("/api/v1/projects")]);
  const takes = [
    ...tokens.items.map((t) => `API token ${t.id}${t.name ? ` (${t.name})` : ""}`),
    ...teams.items.filter((t) => t.members.includes(u.name)).map((t) => `membership of team ${t.name}`),
    ...projects.items.flatMap((p) => p.members.filter((m) => m.kind === "user" && m.name === u.name).map((m) => `role ${m.role} in project ${p.name}`)),
  ];
  if (!(await confirmRemoval(`Delete user ${u.name}?`, takes, "delete-user-dialog"))) return;
  await del(`/api/v1/users/${enc(u.name)}`);
  toast(`user ${u.name} deleted`);
  reload();
}

async function createTeam(reload) {
  const form = await dialog({
    title: "Create a team",
    body: [
      field("team-name", "Name", h("input", { id: "team-name", name: "name", required: true, maxlength: 63, testid: "team-name" })),
      field("team-members", "Members (comma separated)", h("input", { id: "team-members", name: "members", testid: "team-members" })),
    ],
    submit: "Create",
    testid: "team-dialog",
  });
  if (!form) return;
  const members = String(form.get("members") || "").split(",").map((s) => s.trim()).filter(Boolean);
  await post("/api/v1/teams", { name: form.get("name"), members });
  reload();
}

async function deleteTeam(t, reload) {
  const projects = await get("/api/v1/projects");
  const takes = [
    ...t.members.map((m) => `membership of user ${m}`),
    ...projects.items.flatMap((p) => p.members.filter((m) => m.kind === "team" && m.name === t.name).map((m) => `role ${m.role} in project ${p.name}`)),
  ];
  if (!(await confirmRemoval(`Delete team ${t.name}?`, takes, "delete-team-dialog"))) return;
  await del(`/api/v1/teams/${enc(t.name)}`);
  toast(`team ${t.name} deleted`);
  reload();
}

async function removeMember(t, user, reload) {
  const ok = await dialog({
    title: `Remove ${user} from team ${t.name}?`,
    body: h("p", {}, "They lose what the team's project roles gave them, at the next apply."),
    submit: "Remove",
    danger: true,
    testid: "remove-team-member-dialog",
  });
  if (!ok) return;
  await del(`/api/v1/teams/${enc(t.name)}/members/${enc(user)}`);
  reload();
}

export async function render(ctx) {
  const users = h("div", { testid: "users-container" });
  const teams = h("div", { testid: "teams-container" });
  const act = (fn) => () => fn().catch((err) => ctx.fail(err));
  const btn = (text, testid, fn, cls = "btn btn-sm") => h("button", { type: "button", class: cls, testid, onclick: act(fn) }, text);
  const load = async () => {
    const [u, t] = await Promise.all([get("/api/v1/users"), get("/api/v1/teams")]);
    if (!ctx.alive) return;
    replace(
      users,
      table(
        ["Name", "E-mail", "Role", "State", "Created", h("th", { class: "actions", scope: "col" }, "")],
        u.items.map((x) =>
          h(
            "tr",
            { testid: `user-row-${x.name}` },
            h("td", {}, x.name),
            h("td", {}, x.email || "—"),
            h("td", {}, x.platform_admin ? "platform admin" : "user"),
            h("td", { testid: `user-state-${x.name}` }, x.disabled ? "disabled" : "active"),
            h("td", {}, when(x.created_at)),
            h(
              "td",
              { class: "actions" },
              btn("Tokens", `user-tokens-${x.name}`, () => tokensDialog(ctx, x.name)),
              btn(x.disabled ? "Enable" : "Disable", `user-toggle-${x.name}`, async () => {
                await post(`/api/v1/users/${enc(x.name)}/${x.disabled ? "enable" : "disable"}`);
                load();
              }),
              btn("Delete", `user-delete-${x.name}`, () => deleteUser(ctx, x, load), "btn btn-sm btn-danger"),
            ),
          ),
        ),
        { testid: "user-table" },
      ),
    );
    replace(
      teams,
      table(
        ["Name", "Members", h("th", { class: "actions", scope: "col" }, "")],
        t.items.map((x) =>
          h(
            "tr",
            { testid: `team-row-${x.name}` },
            h("td", {}, x.name),
            h(
              "td",
              { class: "chips" },
              x.members.map((m) => h("span", { class: "chip" }, m, " ", h("button", { type: "button", class: "btn btn-ghost btn-sm", "aria-label": `remove ${m}`, testid: `team-remove-${x.name}-${m}`, onclick: act(() => removeMember(x, m, load)) }, "×"))),
            ),
            h("td", { class: "actions" }, btn("Delete", `team-delete-${x.name}`, () => deleteTeam(x, load), "btn btn-sm btn-danger")),
          ),
        ),
        { testid: "team-table", empty: "No teams yet." },
      ),
    );
  };
  replace(
    ctx.main,
    h("div", { class: "page-head" }, h("h1", {}, "People")),
    h("section", { class: "panel", "aria-label": "Users" }, h("div", { class: "panel-head" }, h("h2", {}, "Users"), h("span", { class: "spacer" }), btn("Create user", "create-user", () => createUser(load), "btn btn-primary btn-sm")), users),
    h("section", { class: "panel", "aria-label": "Teams" }, h("div", { class: "panel-head" }, h("h2", {}, "Teams"), h("span", { class: "spacer" }), btn("Create team", "create-team", () => createTeam(load), "btn btn-primary btn-sm")), teams),
  );
  ctx.refresh(load);
  await load();
}
