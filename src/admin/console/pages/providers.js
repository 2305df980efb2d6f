// Providers: the catalog's providers with their state (enabled, circuit, share of timeouts
// from the metrics), a form to create or edit one, enable/disable and delete. A provider's
// secret is write-only: the API shows "********" in its place, and the form never fills it in.

import { parseMetrics, byTwo } from "./overview.js";

const MASK = "********";
const FIELDS = ["name", "url", "dataSourceId", "timeoutMs", "cacheTtlSecs", "askFor", "tcfVendorId", "enabled", "secret"];

/**
 * The circuit's state from `tributary_provider_circuit_transitions_total{to}` counts. A circuit
 * goes closed → open → half_open → (closed | open), so one more `open` than `half_open` means
 * open now; no `closed` after opening means half-open; otherwise counts alone cannot tell
 * closed from half-open, which a probe resolves within one call.
 */
export function circuitState(counts) {
  const open = counts.open || 0;
  const half = counts.half_open || 0;
  const closed = counts.closed || 0;
  if (!open && !half && !closed) return "closed (never opened)";
  if (open > half) return "open";
  if (!closed) return "half-open";
  return "closed (last change unknown: closed or half-open)";
}

export async function render(root, ctx) {
  const { api, h, ApiError, message } = ctx;
  const heading = h("h1", {}, "Providers");
  const listBox = h("div", { id: "providers-list" });
  const formBox = h("div", { id: "provider-form-box" });
  root.append(heading, h("button", { type: "button", id: "provider-new", onclick: () => edit(null) }, "New provider"), listBox, formBox);

  let providers = [];

  async function load() {
    const [list, text] = await Promise.all([
      api("GET", "/v1/providers"),
      api("GET", "/v1/metrics").catch(() => ""),
    ]);
    providers = Array.isArray(list) ? list : list.list || [];
    const samples = parseMetrics(text);
    const calls = byTwo(samples, "tributary_provider_calls_total", "provider", "outcome");
    const circuits = byTwo(samples, "tributary_provider_circuit_transitions_total", "provider", "to");
    if (!providers.length) {
      listBox.replaceChildren(h("p", { class: "muted" }, "No providers yet."));
      return;
    }
    const rows = providers.map((p) => {
      const c = calls[p.name] || {};
      const all = Object.values(c).reduce((a, b) => a + b, 0);
      const share = all ? ((c.timeout || 0) / all * 100).toFixed(1) + " % of " + all : "no calls";
      return h("tr", { "data-pid": p.pid },
        h("td", {}, String(p.pid)),
        h("th", { scope: "row" }, p.name),
        h("td", { class: "url" }, p.url),
        h("td", {}, String(p.timeoutMs) + " ms"),
        h("td", { class: "state" }, p.enabled ? "enabled" : "disabled"),
        h("td", { class: "circuit" }, samples.length ? circuitState(circuits[p.name] || {}) : "unknown"),
        h("td", { class: "timeout-share" }, share),
        h("td", {},
          h("button", { type: "button", class: "secondary", "data-action": "edit", onclick: () => edit(p) }, "Edit"),
          h("button", { type: "button", class: "secondary", "data-action": "toggle", onclick: () => toggle(p) }, p.enabled ? "Disable" : "Enable"),
          h("button", { type: "button", class: "danger", "data-action": "delete", onclick: () => remove(p) }, "Delete")));
    });
    listBox.replaceChildren(h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Pid", "Name", "URL", "Timeout", "State", "Circuit", "Timeouts", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows))));
  }

  function flash(text, kind) {
    for (const old of root.querySelectorAll(":scope > p.ok, :scope > p.error")) old.remove();
    // Focus follows the outcome, so that a keyboard user is not left on a removed button.
    const p = message(root, text, kind);
    p.setAttribute("tabindex", "-1");
    p.focus();
  }

  async function toggle(p) {
    // PUT replaces the whole object; the masked secret sent back keeps the stored one.
    const body = { ...p, enabled: !p.enabled };
    try {
      await api("PUT", "/v1/providers/" + p.pid, body);
      flash(p.name + (body.enabled ? " enabled." : " disabled."), "ok");
      await load();
    } catch (e) {
      flash(String(e.message || e), "error");
    }
  }

  async function remove(p) {
    if (!window.confirm("Delete provider " + p.name + " (" + p.pid + ")? Events stop calling it at once.")) return;
    try {
      await api("DELETE", "/v1/providers/" + p.pid);
      flash(p.name + " deleted.", "ok");
      formBox.replaceChildren();
      await load();
    } catch (e) {
      flash(String(e.message || e), "error");
    }
  }

  function field(id, label, input, hint) {
    return h("div", { class: "field", "data-field": id },
      h("label", { for: "provider-" + id }, label), input,
      hint ? h("p", { class: "muted hint", id: "provider-" + id + "-hint" }, hint) : null,
      h("p", { class: "error field-error", id: "provider-" + id + "-error", role: "alert" }));
  }

  function edit(p) {
    const isNew = !p;
    const v = p || { name: "", url: "", dataSourceId: "", timeoutMs: 80, cacheTtlSecs: 0, askFor: "all", enabled: true };
    const input = (id, attrs) => h("input", { id: "provider-" + id, name: id, ...attrs });
    const askFor = h("select", { id: "provider-askFor", name: "askFor" },
      h("option", { value: "all", selected: v.askFor !== "synced" }, "all visitors"),
      h("option", { value: "synced", selected: v.askFor === "synced" }, "only visitors with a synced id"));
    const hadSecret = !isNew && v.secret === MASK;
    const removeSecret = hadSecret ? h("input", { id: "provider-removeSecret", type: "checkbox", name: "removeSecret" }) : null;
    const form = h("form", { id: "provider-form", novalidate: true },
      h("h2", {}, isNew ? "New provider" : "Edit provider " + v.pid),
      isNew ? null : field("pid", "Pid", input("pid", { value: v.pid, readonly: true })),
      field("name", "Name", input("name", { value: v.name, required: true })),
      field("url", "URL", input("url", { value: v.url, type: "url", required: true })),
      field("dataSourceId", "Data source id", input("dataSourceId", { value: v.dataSourceId, type: "number", min: 1, required: true })),
      field("timeoutMs", "Timeout (ms)", input("timeoutMs", { value: v.timeoutMs, type: "number", min: 1, max: 10000 })),
      field("cacheTtlSecs", "Cache TTL (s, 0 = not cached)", input("cacheTtlSecs", { value: v.cacheTtlSecs, type: "number", min: 0, max: 604800 })),
      field("askFor", "Ask for", askFor),
      field("tcfVendorId", "IAB TCF vendor id (optional)", input("tcfVendorId", { value: v.tcfVendorId ?? "", type: "number", min: 1 })),
      h("div", { class: "field", "data-field": "enabled" },
        h("label", { for: "provider-enabled" },
          input("enabled", { type: "checkbox", checked: v.enabled !== false, class: "inline" }), " Enabled")),
      field("secret", isNew ? "Secret (optional)" : "Set a new secret",
        input("secret", { type: "password", autocomplete: "new-password", value: "" }),
        isNew ? "HMAC key for request signing; never shown again." : hadSecret ? "A secret is set. Leave empty to keep it." : "No secret is set."),
      removeSecret ? h("label", { for: "provider-removeSecret" }, removeSecret, " Remove the secret") : null,
      h("button", { type: "submit" }, isNew ? "Create" : "Save"),
      h("button", { type: "button", class: "secondary", onclick: () => formBox.replaceChildren() }, "Cancel"),
      h("p", { class: "error", id: "provider-form-error", role: "alert" }));

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      for (const e of form.querySelectorAll(".field-error")) e.textContent = "";
      form.querySelector("#provider-form-error").textContent = "";
      const get = (id) => form.querySelector("#provider-" + id).value.trim();
      const num = (id) => (get(id) === "" ? undefined : Number(get(id)));
      const body = {
        name: get("name"),
        url: get("url"),
        dataSourceId: num("dataSourceId"),
        timeoutMs: num("timeoutMs"),
        cacheTtlSecs: num("cacheTtlSecs"),
        askFor: get("askFor"),
        enabled: form.querySelector("#provider-enabled").checked,
      };
      if (get("tcfVendorId") !== "") body.tcfVendorId = num("tcfVendorId");
      const secret = form.querySelector("#provider-secret").value;
      // Only a typed secret is sent; the masked one keeps what is stored; none removes it.
      if (secret) body.secret = secret;
      else if (hadSecret && !(removeSecret && removeSecret.checked)) body.secret = MASK;
      for (const k of Object.keys(body)) if (body[k] === undefined) delete body[k];
      try {
        const saved = isNew ? await api("POST", "/v1/providers", body)
          : await api("PUT", "/v1/providers/" + v.pid, { pid: v.pid, ...body });
        formBox.replaceChildren();
        flash((saved && saved.name ? saved.name : body.name) + (isNew ? " created." : " saved."), "ok");
        await load();
      } catch (e) {
        const name = e instanceof ApiError && e.field ? String(e.field).split(/[.[]/)[0] : null;
        const slot = name && FIELDS.includes(name) ? form.querySelector("#provider-" + name + "-error") : null;
        if (slot) {
          slot.textContent = e.message;
          const control = form.querySelector("#provider-" + name);
          control.setAttribute("aria-invalid", "true");
          control.setAttribute("aria-describedby", slot.id);
          control.focus();
        } else {
          form.querySelector("#provider-form-error").textContent = String(e.message || e);
        }
      }
    });
    formBox.replaceChildren(form);
    form.querySelector(isNew ? "#provider-name" : "#provider-timeoutMs").focus();
  }

  await load();
  if (ctx.params[0]) {
    const p = providers.find((x) => String(x.pid) === ctx.params[0]);
    if (p) edit(p);
  }
}
