// Destinations: cookie (ADS), URL (PUSH) and server-to-server (S2S) ones with their segment
// mappings, and a form whose fields follow the type (docs/destinations.md). For S2S, the
// outbox's counters from /v1/metrics and each destination's status
// (/v1/destinations/{id}/outbox: waiting, failures in a row, the last error) are shown.
// #/destinations, #/destinations/new, #/destinations/<id>.

import { deleteButton, fetchAll, field, flash, num, select, showFlash } from "./ui.js";

const TYPES = [["ADS", "Cookie (ADS)"], ["PUSH", "URL (PUSH)"], ["S2S", "Server-to-server (S2S)"]];
const SECRET = "********";
// One refresh of the S2S counters at a time, also when a delete redraws the list.
let refresh = null;

export async function render(root, ctx) {
  const [which] = ctx.params;
  if (which === "new") return form(root, ctx, null);
  if (which && /^\d+$/.test(which)) return form(root, ctx, await ctx.api("GET", "/v1/destinations/" + which));
  return list(root, ctx);
}

/** Unix seconds as `2026-12-02 15:04:05 UTC`. */
function utc(seconds) {
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}

/** The `tributary_s2s_*` samples of the Prometheus text: [{name, labels, value}]. */
export function s2sSamples(text) {
  const out = [];
  for (const line of String(text || "").split("\n")) {
    const m = /^(tributary_s2s_[a-z_]+)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const pair of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

function sum(samples, name, where) {
  return samples.filter((s) => s.name === name && Object.entries(where || {}).every(([k, v]) => s.labels[k] === v))
    .reduce((a, s) => a + s.value, 0);
}

async function list(root, ctx) {
  const { h, api } = ctx;
  const [destinations, segments] = await Promise.all([fetchAll(api, "/v1/destinations"), fetchAll(api, "/v1/segments")]);
  let samples = [];
  if (destinations.some((d) => d.destinationType === "S2S")) {
    // The metrics are a nicety here: without them the list still shows.
    samples = s2sSamples(await api("GET", "/v1/metrics").catch(() => ""));
  }
  const segName = (sid) => (segments.find((s) => s.sid === sid) || {}).name;
  const status = h("div", {});
  const where = (d) => d.destinationType === "ADS" ? "cookie " + (d.cookieName || "")
    : d.destinationType === "PUSH" ? d.urlFormatString || ""
    : d.url || "";
  // The counters are filled in by showOutbox, and refreshed while the list is shown.
  const outboxes = [];
  const outbox = (d) => {
    if (d.destinationType !== "S2S") return null;
    const el = h("div", { class: "muted outbox", "data-id": d.destinationId });
    outboxes.push(el);
    return el;
  };
  // Each S2S destination's own status (waiting, failures in a row, last errors).
  let statuses = {};
  const loadStatuses = async () => {
    const got = await Promise.all(outboxes.map((el) =>
      api("GET", "/v1/destinations/" + el.dataset.id + "/outbox").catch(() => null)));
    statuses = {};
    outboxes.forEach((el, i) => { statuses[el.dataset.id] = got[i]; });
  };
  const showOutbox = () => {
    for (const el of outboxes) {
      const id = el.dataset.id;
      const ok = sum(samples, "tributary_s2s_requests_total", { destination: id, result: "ok" });
      const failed = sum(samples, "tributary_s2s_requests_total", { destination: id, result: "error" });
      const delivered = sum(samples, "tributary_s2s_delivered_total", { destination: id });
      const st = statuses[id];
      const last = st && st.lastErrors && st.lastErrors[0];
      el.replaceChildren("Requests: " + ok + " ok, ", h("span", { class: failed ? "error" : "" }, failed + " failed"),
        "; " + delivered + " deliveries since start.",
        st ? h("div", { class: "outbox-status" }, st.waiting + " waiting",
          st.failuresInARow ? ", " + st.failuresInARow + " failed requests in a row" : "",
          st.lastDeliveredAt ? "; last delivered " + utc(st.lastDeliveredAt) : "") : null,
        last ? h("div", { class: "error outbox-error" }, "Last error, " +
          utc(last.at) + ": " + last.message) : null);
    }
    if (s2s) {
      s2s.textContent = "S2S outbox: " + sum(samples, "tributary_s2s_waiting") + " deliveries waiting, "
        + sum(samples, "tributary_s2s_dropped_total") + " dropped since start.";
    }
  };
  const table = h("table", { id: "destinations-table" },
    h("thead", {}, h("tr", {}, ["Id", "Name", "Type", "Where", "Mappings", "Status", ""].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, destinations.map((d) => h("tr", { "data-id": d.destinationId },
      h("td", {}, String(d.destinationId)),
      h("td", {}, h("a", { href: "#/destinations/" + d.destinationId }, d.name)),
      h("td", {}, d.destinationType),
      h("td", { class: "where" }, h("code", {}, where(d)), outbox(d)),
      h("td", { class: "mappings" }, (d.mappings || []).length
        ? h("ul", { class: "plain" }, d.mappings.map((m) => h("li", {},
          h("a", { href: "#/segments/" + m.sid }, String(m.sid)),
          segName(m.sid) ? " " + segName(m.sid) : "",
          m.traitAlias ? " → " + m.traitAlias : "", m.valueAlias ? " = " + m.valueAlias : "")))
        : h("span", { class: "muted" }, "none")),
      h("td", {}, d.status),
      h("td", {}, h("a", { href: "#/destinations/" + d.destinationId }, "Edit"), " ",
        deleteButton(ctx, {
          path: "/v1/destinations/" + d.destinationId, what: "destination " + d.destinationId,
          done: () => { flash("Destination " + d.destinationId + " deleted."); root.replaceChildren(); list(root, ctx); },
          report: (text) => ctx.message(status, text, "error"),
        }))))));
  const s2s = outboxes.length ? h("p", { class: "muted s2s-outbox", "aria-live": "polite" }) : null;
  root.append(
    h("h1", {}, "Destinations"),
    h("p", {}, h("a", { href: "#/destinations/new", class: "button" }, "New destination")),
    status, s2s,
    destinations.length ? h("div", { class: "table-wrap" }, table) : h("p", { class: "muted" }, "No destinations yet."));
  showFlash(root, ctx);
  await loadStatuses();
  showOutbox();
  clearInterval(refresh);
  if (!outboxes.length) return undefined;
  refresh = setInterval(async () => {
    samples = s2sSamples(await api("GET", "/v1/metrics").catch(() => ""));
    await loadStatuses();
    showOutbox();
  }, 3000);
  return () => clearInterval(refresh);
}

async function form(root, ctx, existing) {
  const { h, api } = ctx;
  const d = existing || { name: "", description: "", destinationType: "ADS", status: "ACTIVE", ttl: 30, maxSize: 1000,
    formatType: "key_value", keySeparator: "=", valueSeparator: ",", serializationSeparator: ";", delimiter: ",",
    serializationEnabled: false, batchSize: 100, mappings: [] };
  const segments = await fetchAll(api, "/v1/segments");
  const input = (name, attrs) => {
    const el = h("input", { name, ...attrs });
    el.value = d[name] ?? "";
    return el;
  };
  const type = select(h, "destinationType", TYPES, d.destinationType);
  const serialized = h("input", { type: "checkbox", name: "serializationEnabled", class: "check" });
  serialized.checked = !!d.serializationEnabled;
  const format = select(h, "formatType", [["key_value", "key=value pairs"], ["single_key", "one key"]], d.formatType || "key_value");
  const groups = {
    ADS: h("fieldset", { class: "type-fields", "data-type": "ADS" }, h("legend", {}, "Cookie"),
      field(h, "Cookie name", input("cookieName", { autocomplete: "off" }), "Letters, digits, _ - ."),
      field(h, "Cookie domain", input("cnameDomain", {}), "Empty: the DCS's own."),
      field(h, "Lifetime (days)", input("ttl", { type: "number", min: 1, max: 3650 })),
      field(h, "Longest value (bytes)", input("maxSize", { type: "number", min: 1, max: 4096 })),
      field(h, "Format", format),
      field(h, "Single key", input("singleKey", {}), "Only for the one-key format."),
      field(h, "Key separator", input("keySeparator", {})),
      field(h, "Value separator", input("valueSeparator", {})),
      field(h, "Pair separator", input("serializationSeparator", {}))),
    PUSH: h("fieldset", { class: "type-fields", "data-type": "PUSH" }, h("legend", {}, "URL"),
      field(h, "URL", input("urlFormatString", { type: "url" }), "Macros such as %ALIAS%, %DID%, %RND%."),
      field(h, "Secure URL", input("secureUrlFormatString", { type: "url" }), "Empty: the URL above."),
      h("div", { class: "field" }, h("label", { class: "inline" }, serialized, " One call for all segments")),
      field(h, "Delimiter", input("delimiter", {}), "Joins the aliases in one call.")),
    S2S: h("fieldset", { class: "type-fields", "data-type": "S2S" }, h("legend", {}, "Server to server"),
      field(h, "Endpoint URL", input("url", { type: "url" })),
      field(h, "Signing secret", input("secret", { type: "password", autocomplete: "new-password" }),
        existing && existing.secret ? "Shown as ******** : leave it to keep the stored one, empty it to remove it." : "Optional HMAC key."),
      field(h, "Batch size", input("batchSize", { type: "number", min: 1, max: 1000 }))),
  };
  const showType = () => {
    for (const [t, g] of Object.entries(groups)) g.hidden = t !== type.value;
  };
  type.addEventListener("change", showType);
  showType();

  // Mappings: one row per segment, by id (the list offers the catalog's segments).
  const datalist = h("datalist", { id: "segment-ids" }, segments.map((s) => h("option", { value: s.sid }, s.name)));
  const rows = h("tbody", {});
  const addRow = (m) => {
    const sid = h("input", { type: "number", name: "mapSid", min: 1, list: "segment-ids", "aria-label": "Segment id", placeholder: "Segment id", inputmode: "numeric" });
    sid.value = m.sid ?? "";
    const alias = h("input", { name: "mapAlias", "aria-label": "Alias (optional)", placeholder: "Alias (optional)", maxlength: 255 });
    alias.value = m.traitAlias || "";
    const value = h("input", { name: "mapValue", "aria-label": "Value alias (optional, cookies)", placeholder: "Value alias (optional)", maxlength: 255 });
    value.value = m.valueAlias || "";
    const name = h("span", { class: "muted" });
    const showName = () => { name.textContent = (segments.find((s) => String(s.sid) === sid.value) || {}).name || ""; };
    sid.addEventListener("input", showName);
    showName();
    const tr = h("tr", { class: "mapping" }, h("td", {}, sid, name), h("td", {}, alias), h("td", {}, value),
      h("td", {}, h("button", { type: "button", class: "secondary", onclick: () => { tr.remove(); add.focus(); } }, "Remove")));
    rows.append(tr);
    return sid;
  };
  const add = h("button", { type: "button", class: "secondary", id: "add-mapping", onclick: () => addRow({}).focus() }, "Add mapping");
  for (const m of d.mappings || []) addRow(m);

  const problem = h("div", {});
  const f = h("form", { id: "destination-form", novalidate: true },
    field(h, "Name", input("name", { required: true })),
    field(h, "Description", input("description", {})),
    field(h, "Type", type),
    field(h, "Status", select(h, "status", [["ACTIVE", "Active"], ["INACTIVE", "Inactive"]], d.status)),
    groups.ADS, groups.PUSH, groups.S2S,
    h("h2", {}, "Mappings"),
    datalist,
    h("div", { class: "table-wrap" }, h("table", { class: "mappings-editor" },
      h("thead", {}, h("tr", {}, ["Segment id", "Alias", "Value alias", ""].map((t) => h("th", { scope: "col" }, t)))), rows)),
    add,
    problem,
    h("div", {}, h("button", { type: "submit" }, existing ? "Save destination" : "Create destination"),
      h("a", { href: "#/destinations", class: "cancel" }, "Cancel")));
  root.append(h("h1", {}, existing ? "Destination " + existing.destinationId + ": " + existing.name : "New destination"), f);
  f.elements.name.focus();

  f.addEventListener("submit", async (event) => {
    event.preventDefault();
    problem.replaceChildren();
    const v = f.elements;
    const text = (name) => { const s = v[name].value.trim(); return s === "" ? undefined : s; };
    const body = {
      ...(existing || {}),
      name: v.name.value.trim(), description: v.description.value, destinationType: type.value, status: v.status.value,
      cookieName: text("cookieName"), cnameDomain: text("cnameDomain"), ttl: num(v.ttl.value), maxSize: num(v.maxSize.value),
      formatType: format.value, singleKey: text("singleKey"), keySeparator: text("keySeparator"),
      valueSeparator: text("valueSeparator"), serializationSeparator: text("serializationSeparator"),
      urlFormatString: text("urlFormatString"), secureUrlFormatString: text("secureUrlFormatString"),
      serializationEnabled: serialized.checked, delimiter: text("delimiter"),
      url: text("url"), secret: text("secret"), batchSize: num(v.batchSize.value),
      mappings: [...rows.querySelectorAll("tr.mapping")].map((tr) => {
        const [sid, alias, value] = tr.querySelectorAll("input");
        const m = { sid: num(sid.value) };
        if (alias.value.trim()) m.traitAlias = alias.value.trim();
        if (value.value.trim()) m.valueAlias = value.value.trim();
        return m;
      }).filter((m) => m.sid !== undefined),
    };
    // Left out, a field takes its default; a secret left out is removed, which is meant.
    for (const k of Object.keys(body)) if (body[k] === undefined) delete body[k];
    if (body.secret === SECRET && !existing) delete body.secret;
    try {
      const saved = existing
        ? await api("PUT", "/v1/destinations/" + existing.destinationId, body)
        : await api("POST", "/v1/destinations", body);
      flash("Destination " + saved.destinationId + " saved.");
      ctx.navigate("#/destinations");
    } catch (e) {
      problem.append(h("p", { class: "error", role: "alert" }, "Not saved: " + e.message + (e.field ? " (" + e.field + ")" : "")));
    }
  });
}
