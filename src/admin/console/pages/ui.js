// Pieces the catalog pages (traits, segments, destinations) share: labelled fields, a pager,
// a delete that asks first and explains a refusal, a message carried across a navigation, and
// the searchable, paged list of traits and of segments.

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

/**
 * The list of a paged catalog kind (`traits`, `segments`): a heading, a "New" link, a search
 * that looks through every object (not just the page shown), paging otherwise, and a table.
 * `related()` is fetched on each draw (what the rows point to); `row(object, related,
 * {redraw, report})` draws one row, `report` showing a refused delete above the table.
 */
export async function catalogList(root, ctx, { kind, singular, view, columns, related, row }) {
  const { h, api } = ctx;
  const body = h("div", {});
  root.append(
    h("h1", {}, kind[0].toUpperCase() + kind.slice(1)),
    h("p", {}, h("a", { href: "#/" + kind + "/new", class: "button" }, "New " + singular)),
    searchBox(h, "Search " + kind, view.q, (q) => { view.q = q; view.page = 0; redraw(); }),
    body);
  showFlash(root, ctx);

  // Redraws after the first one happen outside the router, which would otherwise show a failure.
  const redraw = () => draw().catch((e) => ctx.message(body, "Could not load the list: " + e.message, "error"));
  const report = (text) => {
    body.querySelector(".delete-error")?.remove();
    body.prepend(h("p", { class: "error delete-error", role: "alert" }, text));
  };
  async function draw() {
    let rows;
    let paging = null;
    const others = await related();
    if (view.q) {
      rows = (await fetchAll(api, "/v1/" + kind)).filter((o) => matches(o, "sid", view.q));
    } else {
      paging = await api("GET", "/v1/" + kind + "?page=" + view.page + "&pageSize=" + view.pageSize);
      rows = paging.list;
    }
    const table = h("table", { id: kind + "-table" },
      h("thead", {}, h("tr", {}, columns.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.map((o) => row(o, others, { redraw, report }))));
    body.replaceChildren(
      rows.length ? h("div", { class: "table-wrap" }, table)
        : h("p", { class: "muted" }, view.q ? "No " + singular + " matches." : "No " + kind + " yet."),
      paging ? pager(h, paging, (page, pageSize) => { view.page = page; view.pageSize = pageSize; redraw(); }) : null);
    showFlash(body, ctx);
  }
  await draw();
}
