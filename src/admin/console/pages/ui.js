// Pieces the catalog pages (traits, segments, destinations) share: labelled fields, a pager,
// a delete that asks first and explains a refusal, and a message carried across a navigation.

let serial = 0;
let flashed = null;

/** A message for the next page rendered (the router replaces the page on navigation). */
export function flash(text) {
  flashed = text;
}

/** Shows and forgets the flashed message, if any. */
export function showFlash(root, ctx) {
  if (flashed) ctx.message(root, flashed, "ok");
  flashed = null;
}

/** A label and its control, linked by id. `input` may be any element with a `name`. */
export function field(h, label, input, hint) {
  const id = "f-" + ++serial;
  input.id = id;
  const parts = [h("label", { for: id }, label), input];
  if (hint) {
    const hintId = id + "-hint";
    input.setAttribute("aria-describedby", hintId);
    parts.push(h("small", { id: hintId, class: "muted hint" }, hint));
  }
  return h("div", { class: "field" }, parts);
}

export function select(h, name, options, value) {
  const el = h("select", { name }, options.map(([v, text]) => h("option", { value: v }, text)));
  el.value = value;
  return el;
}

/** Every object of `path` (its plain GET is the whole list, in id order). */
export async function fetchAll(api, path) {
  const all = await api("GET", path);
  return Array.isArray(all) ? all : [];
}

/** Prev/next buttons and a page size choice; `go(page, pageSize)` re-renders. */
export function pager(h, { page, pageSize, total }, go) {
  const pages = Math.max(1, Math.ceil(total / pageSize));
  const size = select(h, "pageSize", [10, 20, 50, 100].map((n) => [String(n), n + " a page"]), String(pageSize));
  size.setAttribute("aria-label", "Page size");
  size.addEventListener("change", () => go(0, Number(size.value)));
  return h("nav", { class: "pager", "aria-label": "Pages" },
    h("button", { type: "button", class: "secondary", disabled: page <= 0, onclick: () => go(page - 1, pageSize) }, "‹ Previous"),
    h("span", { class: "muted" }, "Page " + (page + 1) + " of " + pages + " (" + total + " in all)"),
    h("button", { type: "button", class: "secondary", disabled: page + 1 >= pages, onclick: () => go(page + 1, pageSize) }, "Next ›"),
    size);
}

/**
 * A Delete button that first asks, in place (no blocking dialog), then calls
 * `DELETE path`. `explain(error)` turns a 409 into plain words; `done()` runs after a delete.
 */
export function deleteButton(ctx, { path, what, explain, done, report }) {
  const { h, api } = ctx;
  const box = h("span", { class: "delete" });
  const ask = h("button", { type: "button", class: "danger", onclick: confirm }, "Delete");
  box.append(ask);
  function confirm() {
    const yes = h("button", { type: "button", class: "danger confirm-delete", onclick: remove }, "Yes, delete " + what);
    const no = h("button", { type: "button", class: "secondary", onclick: () => { box.replaceChildren(ask); ask.focus(); } }, "Cancel");
    box.replaceChildren(h("span", { class: "ask" }, "Delete " + what + "? "), yes, no);
    yes.focus();
  }
  async function remove() {
    try {
      await api("DELETE", path);
      done();
    } catch (e) {
      box.replaceChildren(ask);
      report(e.status === 409 && explain ? explain(e) : "Could not delete " + what + ": " + e.message);
      ask.focus();
    }
  }
  return box;
}

/** Numbers from a form field: empty → undefined (the server's default applies). */
export function num(value) {
  const s = String(value).trim();
  return s === "" ? undefined : Number(s);
}

/** Whether segment `rule` names trait `sid` (as `<sid>T`, a word of its own). */
export function namesTrait(rule, sid) {
  return new RegExp("(^|[\\s()\\[\\],=!<>])" + sid + "T(?=$|[\\s()\\[\\],=!<>])", "i").test(rule || "");
}

/** A search box filtering by name or id; `onSearch(text)` is called as it is typed. */
export function searchBox(h, label, value, onSearch) {
  const input = h("input", { type: "search", name: "q", placeholder: "Name or id", autocomplete: "off" });
  input.value = value || "";
  let timer = null;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => onSearch(input.value.trim()), 200);
  });
  return field(h, label, input);
}

export function matches(object, idField, q) {
  if (!q) return true;
  const needle = q.toLowerCase();
  return String(object[idField]) === q || (object.name || "").toLowerCase().includes(needle);
}
