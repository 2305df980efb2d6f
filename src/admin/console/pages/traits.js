// Traits: a searchable, paged list showing which segments use each trait, and a form to
// create or edit one with its rule checked as it is typed. #/traits, #/traits/new,
// #/traits/<sid>.

import { ruleEditor } from "./rule-editor.js";
import { catalogList, deleteButton, fetchAll, field, flash, namesTrait, num, select } from "./ui.js";

// Kept across re-renders so returning from a form shows the same page and search.
const view = { page: 0, pageSize: 20, q: "" };

export async function render(root, ctx) {
  const [which] = ctx.params;
  if (which === "new") return form(root, ctx, null);
  if (which && /^\d+$/.test(which)) return form(root, ctx, await ctx.api("GET", "/v1/traits/" + which));
  return list(root, ctx);
}

function list(root, ctx) {
  const { h, api } = ctx;
  return catalogList(root, ctx, {
    kind: "traits", singular: "trait", view,
    columns: ["Id", "Name", "Type", "Status", "Used by", ""],
    // Segments name traits in their rules; one fetch of them all answers "used by" for the page.
    related: () => fetchAll(api, "/v1/segments"),
    row: (t, segments, { redraw, report }) => {
      const users = segments.filter((s) => namesTrait(s.segmentRule, t.sid));
      return h("tr", { "data-sid": t.sid },
        h("td", {}, String(t.sid)),
        h("td", {}, h("a", { href: "#/traits/" + t.sid }, t.name), t.description ? h("div", { class: "muted" }, t.description) : null),
        h("td", {}, t.traitType === "ON_BOARDED_TRAIT" ? "onboarded" : "rule-based"),
        h("td", {}, t.status),
        h("td", { class: "used-by" }, users.length
          ? users.flatMap((s, i) => [i ? ", " : "", h("a", { href: "#/segments/" + s.sid }, s.sid + " " + s.name)])
          : h("span", { class: "muted" }, "no segment")),
        h("td", {}, h("a", { href: "#/traits/" + t.sid }, "Edit"), " ",
          deleteButton(ctx, {
            path: "/v1/traits/" + t.sid, what: "trait " + t.sid,
            explain: (e) => "Trait " + t.sid + " was not deleted because "
              + (users.length ? "segment" + (users.length > 1 ? "s " : " ") + users.map((s) => s.sid + " (" + s.name + ")").join(", ") + (users.length > 1 ? " use" : " uses") + " it in " + (users.length > 1 ? "their rules" : "its rule") : "a segment uses it")
              + ". Remove " + t.sid + "T from " + (users.length > 1 ? "those rules" : "that rule") + " first, or delete the segment. (The server said: " + e.message + ")",
            done: () => { flash("Trait " + t.sid + " deleted."); redraw(); },
            report,
          })));
    },
  });
}

async function form(root, ctx, existing) {
  const { h, api } = ctx;
  const t = existing || { name: "", description: "", traitType: "RULE_BASED_TRAIT", traitRule: "", dataSourceId: "", ttl: 120, status: "ACTIVE", integrationCode: "" };
  const input = (name, attrs) => {
    const el = h("input", { name, ...attrs });
    el.value = t[name] ?? "";
    return el;
  };
  const rule = ruleEditor(ctx, { kind: "traits", label: "Rule", value: t.traitRule, name: "traitRule" });
  const problem = h("div", {});
  const f = h("form", { id: "trait-form", novalidate: true },
    field(h, "Name", input("name", { required: true, maxlength: 255 })),
    field(h, "Description", input("description", {})),
    field(h, "Type", select(h, "traitType", [["RULE_BASED_TRAIT", "Rule-based: from the event's signals"], ["ON_BOARDED_TRAIT", "Onboarded: from a provider's answer"]], t.traitType)),
    rule.element,
    field(h, "Data source id", input("dataSourceId", { type: "number", min: 0, required: true, inputmode: "numeric" })),
    field(h, "Lifetime (days)", input("ttl", { type: "number", min: 0, inputmode: "numeric" }), "0 means a realization never expires."),
    field(h, "Status", select(h, "status", [["ACTIVE", "Active"], ["INACTIVE", "Inactive"]], t.status)),
    field(h, "Integration code", input("integrationCode", {})),
    problem,
    h("button", { type: "submit" }, existing ? "Save trait" : "Create trait"),
    h("a", { href: "#/traits", class: "cancel" }, "Cancel"));
  root.append(h("h1", {}, existing ? "Trait " + existing.sid + ": " + existing.name : "New trait"), f);
  f.elements.name.focus();

  f.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    const v = f.elements;
    const body = {
      ...(existing || {}),
      name: v.name.value.trim(), description: v.description.value, traitType: v.traitType.value,
      traitRule: rule.value(), dataSourceId: num(v.dataSourceId.value), ttl: num(v.ttl.value),
      status: v.status.value, integrationCode: v.integrationCode.value.trim(),
    };
    if (!body.name || body.dataSourceId === undefined) {
      problem.append(h("p", { class: "error", role: "alert" }, "A trait needs a name and a data source id."));
      return;
    }
    try {
      const saved = existing
        ? await api("PUT", "/v1/traits/" + existing.sid, body)
        : await api("POST", "/v1/traits", body);
      flash("Trait " + saved.sid + " saved.");
      ctx.navigate("#/traits");
    } catch (e) {
      if (e.field === "traitRule") rule.showError(e.message, e.offset);
      problem.append(h("p", { class: "error", role: "alert" }, "Not saved: " + e.message + (e.field ? " (" + e.field + ")" : "")));
    }
  });
  return rule.stop;
}
