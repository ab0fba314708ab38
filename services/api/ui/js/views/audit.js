// Audit: a placeholder until the audit stream is exposed by the API (its nav entry stays hidden).

import { h, replace } from "../dom.js";

export async function render(ctx) {
  replace(
    ctx.main,
    h("div", { class: "page-head" }, h("h1", {}, "Audit")),
    h("div", { class: "panel empty", testid: "audit-placeholder" }, "The audit log is not available yet."),
  );
}
