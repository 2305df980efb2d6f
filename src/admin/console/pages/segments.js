// Segments: a searchable, paged list showing the traits each one names and the destinations
// it is mapped to, and a form whose rule is checked as it is typed, with a trait finder that
// writes `<sid>T` at the cursor. #/segments, #/segments/new, #/segments/<sid>.

import { ruleEditor } from "./rule-editor.js";
import { catalogList, deleteButton, fetchAll, field, flash, matches, num, select } from "./ui.js";

const view = { page: 0, pageSize: 20, q: "" };

export async function render(root, ctx) {
  const [which] = ctx.params;
  if (which === "new") return form(root, ctx, null);
  if (which && /^\d+$/.test(which)) return form(root, ctx, await ctx.api("GET", "/v1/segments/" + which));
  return list(root, ctx);
}

function list(root, ctx) {
  const { h, api } = ctx;
  return catalogList(root, ctx, {
    kind: "segments", singular: "segment", view,
    columns: ["Id", "Name", "Rule", "Status", "Mapped to", ""],
    related: () => fetchAll(api, "/v1/destinations"),
    row: (s, destinations, { redraw, report }) => {
      const users = destinations.filter((d) => (d.mappings || []).some((m) => m.sid === s.sid));
      return h("tr", { "data-sid": s.sid },
        h("td", {}, String(s.sid)),
        h("td", {}, h("a", { href: "#/segments/" + s.sid }, s.name), s.description ? h("div", { class: "muted" }, s.description) : null),
        h("td", {}, h("code", {}, s.segmentRule)),
        h("td", {}, s.status),
        h("td", { class: "used-by" }, users.length
          ? users.flatMap((d, i) => [i ? ", " : "", h("a", { href: "#/destinations/" + d.destinationId }, d.destinationId + " " + d.name)])
          : h("span", { class: "muted" }, "no destination")),
        h("td", {}, h("a", { href: "#/segments/" + s.sid }, "Edit"), " ",
          deleteButton(ctx, {
            path: "/v1/segments/" + s.sid, what: "segment " + s.sid,
            explain: (e) => "Segment " + s.sid + " was not deleted because "
              + (users.length ? "destination" + (users.length > 1 ? "s " : " ") + users.map((d) => d.destinationId + " (" + d.name + ")").join(", ") + (users.length > 1 ? " map" : " maps") + " it" : "a destination maps it")
              + ". Remove the mapping first. (The server said: " + e.message + ")",
            done: () => { flash("Segment " + s.sid + " deleted."); redraw(); },
            report,
          })));
    },
  });
}

/** Type a trait's name or id, pick it, and `<sid>T` goes into the rule at the cursor. */
function traitFinder(ctx, traits, rule) {
  const { h } = ctx;
  const input = h("input", { type: "search", name: "traitSearch", autocomplete: "off", placeholder: "Trait name or id" });
  const results = h("ul", { class: "finder-results", "aria-label": "Matching traits" });
  const show = () => {
    const q = input.value.trim();
    const found = q ? traits.filter((t) => matches(t, "sid", q) || String(t.sid).startsWith(q)).slice(0, 10) : [];
    results.replaceChildren(...found.map((t) =>
      h("li", {}, h("button", { type: "button", class: "secondary pick-trait", "data-sid": t.sid,
        onclick: () => { rule.insert(t.sid + "T"); } }, t.sid + "T: " + t.name))));
    if (q && !found.length) results.append(h("li", { class: "muted" }, "No trait matches."));
  };
  input.addEventListener("input", show);
  // Enter picks the first match rather than submitting the form.
  input.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault();
    results.querySelector("button")?.click();
  });
  return h("div", { class: "finder" }, field(h, "Insert a trait", input, "Type a name or id, then pick one: it is written into the rule at the cursor."), results);
}

async function form(root, ctx, existing) {
  const { h, api } = ctx;
  const s = existing || { name: "", description: "", segmentRule: "", dataSourceId: "", status: "ACTIVE", integrationCode: "" };
  const input = (name, attrs) => {
    const el = h("input", { name, ...attrs });
    el.value = s[name] ?? "";
    return el;
  };
  const traits = await fetchAll(api, "/v1/traits");
  const rule = ruleEditor(ctx, { kind: "segments", label: "Rule", value: s.segmentRule, name: "segmentRule" });
  const problem = h("div", {});
  const f = h("form", { id: "segment-form", novalidate: true },
    field(h, "Name", input("name", { required: true, maxlength: 255 })),
    field(h, "Description", input("description", {})),
    rule.element,
    traitFinder(ctx, traits, rule),
    field(h, "Data source id", input("dataSourceId", { type: "number", min: 0, required: true, inputmode: "numeric" })),
    field(h, "Status", select(h, "status", [["ACTIVE", "Active"], ["INACTIVE", "Inactive"]], s.status)),
    field(h, "Integration code", input("integrationCode", {})),
    problem,
    h("button", { type: "submit" }, existing ? "Save segment" : "Create segment"),
    h("a", { href: "#/segments", class: "cancel" }, "Cancel"));
  root.append(h("h1", {}, existing ? "Segment " + existing.sid + ": " + existing.name : "New segment"), f);
  f.elements.name.focus();

  f.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    const v = f.elements;
    const body = {
      ...(existing || {}),
      name: v.name.value.trim(), description: v.description.value, segmentRule: rule.value(),
      dataSourceId: num(v.dataSourceId.value), status: v.status.value,
      integrationCode: v.integrationCode.value.trim(),
    };
    if (!body.name || body.dataSourceId === undefined) {
      problem.append(h("p", { class: "error", role: "alert" }, "A segment needs a name and a data source id."));
      return;
    }
    try {
      const saved = existing
        ? await api("PUT", "/v1/segments/" + existing.sid, body)
        : await api("POST", "/v1/segments", body);
      flash("Segment " + saved.sid + " saved.");
      ctx.navigate("#/segments");
    } catch (e) {
      if (e.field === "segmentRule") rule.showError(e.message, e.offset);
      problem.append(h("p", { class: "error", role: "alert" }, "Not saved: " + e.message + (e.field ? " (" + e.field + ")" : "")));
    }
  });
  return rule.stop;
}
