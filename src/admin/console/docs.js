// The API reference at /docs: /openapi.json rendered in the page by this script alone, so
// it works on a server with no internet access (no CDN, no framework). It shows what an
// integrator looks for: each path's methods, parameters, body and answers, and the schemas.

import { h } from "./dom.js";

function schemaText(schema, depth) {
  if (!schema || typeof schema !== "object") return "";
  if (schema.$ref) return schema.$ref.split("/").pop();
  if (schema.oneOf) return schema.oneOf.map((s) => schemaText(s, depth)).join(" | ");
  if (schema.type === "array") return schemaText(schema.items, depth) + "[]";
  if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (schema.type === "object" && schema.properties && depth < 2) {
    const fields = Object.entries(schema.properties).map(([k, v]) => k + ": " + schemaText(v, depth + 1));
    return "{" + fields.join(", ") + "}";
  }
  return Array.isArray(schema.type) ? schema.type.join(" | ") : schema.type || "any";
}

function params(list) {
  if (!list || !list.length) return null;
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "parameter"), h("th", {}, "in"), h("th", {}, "type"), h("th", {}, "meaning"))),
    h("tbody", {}, list.map((p) => h("tr", {},
      h("td", {}, h("code", {}, p.name), p.required ? " *" : ""),
      h("td", {}, p.in), h("td", {}, schemaText(p.schema, 0)), h("td", {}, p.description || ""))))));
}

function operation(path, method, op, shared) {
  const body = op.requestBody && op.requestBody.content;
  const responses = Object.entries(op.responses || {});
  return h("section", { class: "card", id: method + "-" + path.replace(/[^a-z0-9]+/gi, "-") },
    h("h3", {}, h("code", {}, method.toUpperCase() + " " + path)),
    h("p", {}, op.summary || ""),
    params([...(shared || []), ...(op.parameters || [])]),
    body ? h("p", {}, "Body: ", Object.entries(body).map(([type, c]) =>
      h("span", {}, h("code", {}, type), " ", schemaText(c.schema, 0)))) : null,
    h("details", {}, h("summary", {}, "Answers"),
      h("ul", {}, responses.map(([code, r]) => h("li", {}, h("code", {}, code), " ", r.description || "")))));
}

async function main() {
  const root = document.getElementById("docs");
  let spec;
  try {
    const response = await fetch("/openapi.json");
    spec = await response.json();
  } catch (e) {
    root.replaceChildren(h("p", { class: "error", role: "alert" }, "Cannot load /openapi.json: " + e));
    return;
  }
  const byTag = new Map();
  for (const [path, item] of Object.entries(spec.paths || {})) {
    for (const method of ["get", "post", "put", "delete"]) {
      const op = item[method];
      if (!op) continue;
      const tag = (op.tags && op.tags[0]) || "other";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(path, method, op, item.parameters));
    }
  }
  const schemas = Object.entries((spec.components && spec.components.schemas) || {});
  // One container: `h` flattens the lists of sections, which replaceChildren would not.
  root.replaceChildren(h("div", {},
    h("h1", {}, (spec.info && spec.info.title) || "API", " ", h("span", { class: "muted" }, spec.info && spec.info.version)),
    h("p", {}, (spec.info && spec.info.description) || ""),
    h("p", {}, "Every call but this page and /openapi.json needs ", h("code", {}, "Authorization: Bearer <admin token>"), "."),
    h("nav", { "aria-label": "Groups" }, [...byTag.keys()].map((tag) => h("a", { href: "#tag-" + tag.replace(/\W+/g, "-") }, tag))),
    [...byTag.entries()].map(([tag, ops]) => h("section", { id: "tag-" + tag.replace(/\W+/g, "-") },
      h("h2", {}, tag), h("div", { class: "cards" }, ops))),
    h("h2", {}, "Schemas"),
    schemas.map(([name, schema]) => h("details", {}, h("summary", {}, h("code", {}, name)),
      h("pre", {}, JSON.stringify(schema, null, 2))))));
}

main();
