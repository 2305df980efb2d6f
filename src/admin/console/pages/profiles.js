// Profiles: what Tributary remembers about one visitor, looked up by AAM id, by declared id
// (<dataSourceId>:<id>: a customer id's authenticated profile, or the device synced to an id
// of another data source) or by ECID (4:<ecid>), and its erasure. `#/profiles/<id>` opens a
// profile directly.

const ECID_DATA_SOURCE = "4";

function date(seconds) {
  if (!seconds) return "–";
  return new Date(seconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

export async function render(root, ctx) {
  const { api, h, ApiError, navigate } = ctx;
  const result = h("div", { id: "profile-result", "aria-live": "polite" });
  const kind = h("select", { id: "profile-kind", name: "kind" },
    h("option", { value: "uuid" }, "AAM id (38 digits)"),
    h("option", { value: "declared" }, "Declared id (data source + id)"),
    h("option", { value: "ecid" }, "ECID"));
  const dpid = h("input", { id: "profile-dpid", name: "dpid", type: "number", min: 0, inputmode: "numeric" });
  const dpidField = h("div", { class: "field", hidden: true }, h("label", { for: "profile-dpid" }, "Data source id"), dpid);
  const id = h("input", { id: "profile-id", name: "id", required: true, autocomplete: "off", spellcheck: "false" });
  const form = h("form", { id: "profile-form", role: "search" },
    h("label", { for: "profile-kind" }, "Look up by"), kind, dpidField,
    h("label", { for: "profile-id" }, "Id"), id,
    h("button", { type: "submit" }, "Look up"));
  root.append(h("h1", {}, "Profiles"), form, result);

  kind.addEventListener("change", () => { dpidField.hidden = kind.value !== "declared"; });

  function error(text) {
    result.replaceChildren(h("p", { class: "error", role: "alert" }, text));
  }

  function table(caption, heads, rows) {
    if (!rows.length) return h("section", {}, h("h2", {}, caption), h("p", { class: "muted" }, "None."));
    return h("section", {}, h("h2", {}, caption), h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))))));
  }

  function traitRows(traits) {
    return traits.map((t) => [String(t.sid), date(t.firstRealization), date(t.lastRealization), String(t.count)]);
  }

  function profileLink(text) {
    return h("a", { href: "#/profiles/" + encodeURIComponent(text) }, text);
  }

  function show(p, key) {
    const erase = h("button", { type: "button", class: "danger", id: "profile-erase", onclick: () => eraseProfile(key) }, "Erase this profile");
    result.replaceChildren(
      h("h2", {}, "Profile ", h("code", { id: "profile-uuid" }, p.uuid)),
      h("dl", { class: "facts" },
        h("dt", {}, "First seen"), h("dd", {}, date(p.firstSeen)),
        h("dt", {}, "Last seen"), h("dd", {}, date(p.lastSeen)),
        p.ecid ? [h("dt", {}, "ECID"), h("dd", {}, p.ecid)] : null,
        p.authenticated ? [h("dt", {}, "Customer id"), h("dd", {}, p.authenticated.dataSourceId + ":" + p.authenticated.id)] : null),
      erase,
      table("Traits", ["Trait (sid)", "First realization", "Last realization", "Count"], traitRows(p.traits || [])),
      table("Segments", ["Segment (sid)"], (p.segments || []).map((s) => [String(s)])),
      table("Synced ids", ["Data source", "Id"], (p.syncedIds || []).map((s) => [String(s.dataSourceId), s.id])),
      table("Links", ["Data source", "Id", "Linked at"], (p.links || []).map((l) => [String(l.dataSourceId),
        // A device's customer ids and an authenticated profile's devices are profiles too.
        l.dataSourceId === 0 ? profileLink(l.id) : profileLink(l.dataSourceId + ":" + l.id), date(l.linkedAt)])),
      (p.authenticatedProfiles || []).length
        ? h("section", {}, h("h2", {}, "Authenticated profiles"), p.authenticatedProfiles.map((a) => h("div", { class: "card" },
          h("h3", {}, profileLink(a.dataSourceId + ":" + a.id)),
          table("Their traits", ["Trait (sid)", "First realization", "Last realization", "Count"], traitRows(a.traits || [])),
          h("p", {}, "Segments: ", (a.segments || []).join(", ") || "none"))))
        : null,
      table("Cached provider answers", ["Provider (pid)", "Segments", "Expires"], (p.providerAnswers || []).map((a) => [String(a.pid), a.segments.join(", "), date(a.expiresAt)])));
  }

  async function eraseProfile(key) {
    if (!window.confirm("Erase everything Tributary remembers about " + key + "? This cannot be undone.")) return;
    try {
      await api("DELETE", "/v1/profiles/" + encodeURIComponent(key));
    } catch (e) {
      error("Could not erase: " + (e.message || e));
      return;
    }
    // Read it again, so what the page says is what the server now has.
    try {
      await api("GET", "/v1/profiles/" + encodeURIComponent(key));
      error("The erasure was accepted but the profile is still there; try again.");
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        result.replaceChildren(h("p", { class: "ok", role: "status", id: "profile-erased" }, "Erased: " + key + " has no profile any more."));
      } else {
        error(String(e.message || e));
      }
    }
  }

  async function lookup(key) {
    result.replaceChildren(h("p", { class: "muted" }, "Looking up…"));
    try {
      show(await api("GET", "/v1/profiles/" + encodeURIComponent(key)), key);
    } catch (e) {
      error(e instanceof ApiError && e.status === 404 ? "No profile for " + key + "." : String(e.message || e));
    }
  }

  // The hash names the profile, so that it can be linked to; the same hash again changes
  // nothing, so that lookup is made here.
  function open(key) {
    const hash = "#/profiles/" + encodeURIComponent(key);
    if (location.hash === hash) lookup(key);
    else navigate(hash);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = id.value.trim();
    // An ECID is an id of data source 4: the admin API finds the device it is synced to.
    if (kind.value === "ecid") return open(ECID_DATA_SOURCE + ":" + value);
    if (kind.value === "declared") {
      if (!dpid.value.trim()) return error("Give the data source id.");
      return open(dpid.value.trim() + ":" + value);
    }
    if (!/^\d{38}$/.test(value)) return error("An AAM id is 38 digits.");
    open(value);
  });

  if (ctx.params[0]) {
    const key = ctx.params[0];
    id.value = key.includes(":") ? key.slice(key.indexOf(":") + 1) : key;
    if (key.includes(":")) {
      kind.value = "declared";
      dpidField.hidden = false;
      dpid.value = key.slice(0, key.indexOf(":"));
    }
    await lookup(key);
  }
}
