// The console's shell: sign-in, the admin API client, the router and a DOM builder. Each
// section is a module in pages/ exporting `render(root, ctx)`; it builds its DOM with `h`
// (never HTML from data) and talks to the server only through `api`. The token lives in this
// tab's session storage, never in a URL. docs/console.md says what each section does.

import { h } from "./dom.js";

const TOKEN_KEY = "tributary.adminToken";
const PAGES = ["overview", "providers", "traits", "segments", "destinations", "profiles", "try"];

export { h };

/** An error the admin API answered: `status`, and its `{error: {code, message, field, offset}}`. */
export class ApiError extends Error {
  constructor(status, error) {
    super((error && error.message) || "HTTP " + status);
    this.status = status;
    this.code = error && error.code;
    this.field = error && error.field;
    this.offset = error && error.offset;
  }
}

/** Calls the admin API; resolves with the parsed JSON (text for non-JSON), rejects with ApiError. */
export async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + (sessionStorage.getItem(TOKEN_KEY) || "") };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    signOut("The token was refused: sign in again.");
    throw new ApiError(401, { message: "missing or wrong bearer token" });
  }
  const type = response.headers.get("Content-Type") || "";
  const data = response.status === 204 ? null
    : type.includes("json") ? await response.json().catch(() => null)
    : await response.text();
  if (!response.ok) {
    throw new ApiError(response.status, data && data.error);
  }
  return data;
}

/** What pages share: the API, the DOM builder, and a way to show a message. */
const ctx = { api, h, ApiError, message: showMessage, navigate: (hash) => { location.hash = hash; } };

function showMessage(root, text, kind) {
  const p = h("p", { class: kind === "error" ? "error" : "ok", role: kind === "error" ? "alert" : "status" }, text);
  root.prepend(p);
  return p;
}

function signOut(why) {
  sessionStorage.removeItem(TOKEN_KEY);
  stopPage();
  showSignIn(why || "");
}

let stop = null;
let generation = 0;
function stopPage() {
  if (typeof stop === "function") stop();
  stop = null;
}

function showSignIn(why) {
  document.getElementById("nav").hidden = true;
  document.getElementById("page").replaceChildren();
  const form = document.getElementById("sign-in");
  form.hidden = false;
  document.getElementById("sign-in-error").textContent = why;
  document.getElementById("token").focus();
}

async function route() {
  stopPage();
  if (!sessionStorage.getItem(TOKEN_KEY)) {
    showSignIn("");
    return;
  }
  document.getElementById("sign-in").hidden = true;
  document.getElementById("nav").hidden = false;
  const [name, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  const page = PAGES.includes(name) ? name : "overview";
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === "#/" + page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  // Each visit renders into a container of its own: a render still running when the admin
  // moves on draws into a detached one, and its stop function is called at once.
  const mine = ++generation;
  const root = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  document.getElementById("page").replaceChildren(root);
  try {
    const module = await import("./pages/" + page + ".js");
    root.replaceChildren();
    const stopIt = await module.render(root, { ...ctx, params: rest.map(decodeURIComponent) });
    if (mine === generation) stop = stopIt;
    else if (typeof stopIt === "function") stopIt();
  } catch (e) {
    root.replaceChildren();
    showMessage(root, String(e.message || e), "error");
  }
  document.getElementById("main").focus({ preventScroll: true });
}

function start() {
  document.getElementById("sign-in").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = document.getElementById("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, token);
    try {
      await api("GET", "/v1/providers?page=0&pageSize=1");
      document.getElementById("token").value = "";
      route();
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      document.getElementById("sign-in-error").textContent =
        e.status === 401 ? "That token is not this server's admin token." : String(e.message || e);
    }
  });
  document.getElementById("sign-out").addEventListener("click", () => signOut(""));
  window.addEventListener("hashchange", route);
  route();
}

start();
