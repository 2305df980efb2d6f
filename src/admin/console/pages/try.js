// "Try an event": a real /event sent through POST /v1/events/try with the signals typed
// here (and a visitor, optionally), and its answer laid out: the visitor, the traits and
// segments, each provider's outcome, the destinations. It changes that visitor's profile.

export async function render(root, ctx) {
  const { h, api } = ctx;
  const rows = h("div", {});
  const addRow = (key, value) => {
    const row = h("div", { class: "signal-row" },
      h("label", {}, "Key", h("input", { name: "key", value: key || "", placeholder: "c_page" })),
      h("label", {}, "Value", h("input", { name: "value", value: value || "", placeholder: "cars" })),
      h("button", { type: "button", class: "secondary", onclick: () => row.remove() }, "Remove"));
    rows.append(row);
  };
  addRow("c_page", "cars");
  const uuid = h("input", { id: "try-uuid", name: "uuid", inputmode: "numeric", placeholder: "38 digits; empty = a new visitor" });
  const result = h("div", { id: "try-result", "aria-live": "polite" });
  const form = h("form", { id: "try-form" },
    h("h1", {}, "Try an event"),
    h("p", { class: "muted" }, "A real event, as a site sends it: the visitor's profile changes and providers are called."),
    rows,
    h("button", { type: "button", class: "secondary", onclick: () => addRow() }, "Add a signal"),
    h("label", { for: "try-uuid" }, "Visitor (optional)"), uuid,
    h("button", { type: "submit" }, "Send"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const signals = {};
    for (const row of rows.children) {
      const key = row.querySelector("[name=key]").value.trim();
      if (key) signals[key] = row.querySelector("[name=value]").value;
    }
    const body = { signals };
    if (uuid.value.trim()) body.uuid = uuid.value.trim();
    result.replaceChildren(h("p", { class: "muted" }, "Sending…"));
    try {
      result.replaceChildren(answerView(h, await api("POST", "/v1/events/try", body)));
    } catch (e) {
      result.replaceChildren(h("p", { class: "error", role: "alert" },
        (e.field ? e.field + ": " : "") + e.message));
    }
  });
  root.append(form, result);
}

function list(h, items) {
  return items && items.length ? items.join(", ") : "none";
}

function answerView(h, tried) {
  const a = tried.answer || {};
  const providers = Object.entries(a.providers || {});
  // Each provider's wait: given to the admin API's tries only.
  const waits = a.providerWaitMs || {};
  const errors = a.errors || [];
  return h("section", {},
    h("h2", {}, "Answer ", h("span", { class: "muted" }, "HTTP " + tried.status + " in " + tried.elapsedMs + " ms")),
    h("dl", { class: "answer" },
      h("dt", {}, "Visitor"), h("dd", {}, a.uuid ? h("a", { href: "#/profiles/" + a.uuid, id: "try-visitor" }, a.uuid) : "none"),
      h("dt", {}, "tid"), h("dd", {}, a.tid || ""),
      h("dt", {}, "Traits"), h("dd", { id: "try-traits" }, list(h, a.traits)),
      h("dt", {}, "Segments"), h("dd", { id: "try-segments" }, list(h, a.segments)),
      h("dt", {}, "Providers"), h("dd", { id: "try-providers" }, providers.length
        ? h("ul", {}, providers.map(([name, outcome]) => h("li", {}, name + ": " + outcome,
          waits[name] !== undefined ? " (" + waits[name] + " ms)" : "")))
        : "none called"),
      h("dt", {}, "Cookie destinations"), h("dd", {}, list(h, (a.stuff || []).map((s) => s.cn + "=" + s.cv))),
      h("dt", {}, "URL destinations"), h("dd", {}, list(h, (a.dests || []).map((d) => d.c))),
      errors.length ? [h("dt", {}, "Errors"), h("dd", { class: "error" }, list(h, errors.map((e) => e.code + " " + e.msg)))] : null),
    h("details", {}, h("summary", {}, "Request and raw answer"),
      h("pre", {}, tried.request), h("pre", {}, JSON.stringify(a, null, 2))));
}
