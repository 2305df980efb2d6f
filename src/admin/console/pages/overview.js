// Overview: the server's own metrics (GET /v1/metrics), polled every 3 s. Counters become
// rates from the difference between two polls, so the page shows what happens now, not
// since the server started; each card keeps the last few minutes as a sparkline.

const POLL_MS = 3000;
const KEEP = 100; // points per sparkline: 5 minutes at one poll every 3 s
const SVG = "http://www.w3.org/2000/svg";

/** Prometheus text → [{name, labels: {k: v}, value}]. Comments and malformed lines are skipped. */
export function parseMetrics(text) {
  const out = [];
  for (const line of String(text).split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
    let l;
    while ((l = re.exec(m[2] || "")) !== null) {
      labels[l[1]] = l[2].replace(/\\n/g, "\n").replace(/\\"/g, '"').replace(/\\\\/g, "\\");
    }
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/** Sum of the series named `name`, grouped by `label` (or "" for all). */
export function byLabel(samples, name, label) {
  const groups = {};
  for (const s of samples) {
    if (s.name !== name) continue;
    const key = label ? s.labels[label] || "" : "";
    groups[key] = (groups[key] || 0) + s.value;
  }
  return groups;
}

/** Rows keyed by two labels: {provider: {outcome: value}}. */
export function byTwo(samples, name, outer, inner) {
  const groups = {};
  for (const s of samples) {
    if (s.name !== name) continue;
    const a = s.labels[outer] || "";
    const b = s.labels[inner] || "";
    groups[a] = groups[a] || {};
    groups[a][b] = (groups[a][b] || 0) + s.value;
  }
  return groups;
}

/** A polyline sparkline of `points` (numbers), scaled to its own maximum. */
export function sparkline(points, label) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "chart");
  svg.setAttribute("viewBox", "0 0 100 30");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  // One reading is drawn as a flat line, so that the chart is there from the start.
  if (points.length === 1) points = [points[0], points[0]];
  const max = Math.max(1e-9, ...points);
  const step = points.length > 1 ? 100 / (points.length - 1) : 100;
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.map((v, i) => (i * step).toFixed(2) + "," + (29 - (v / max) * 28).toFixed(2)).join(" "));
  line.setAttribute("vector-effect", "non-scaling-stroke");
  svg.append(line);
  return svg;
}

function fmt(n, digits) {
  if (!Number.isFinite(n)) return "–";
  return n.toLocaleString("en", { maximumFractionDigits: digits === undefined ? 1 : digits });
}

// What `tributary_events_total{result}` results mean to an admin.
const RESULT_NAMES = { ok: "ok", timeout: "timeout", error: "error", opted_out: "opted out", no_consent: "no consent", coppa: "child-directed", ignored: "ignored" };

export async function render(root, ctx) {
  const { api, h } = ctx;
  const status = h("p", { class: "muted", role: "status" }, "Reading metrics…");
  const cards = h("div", { class: "cards", id: "overview-cards" });
  const providers = h("div", { id: "overview-providers" });
  root.append(h("h1", {}, "Overview"), status, cards, h("h2", {}, "Providers"), providers);

  const history = {}; // card key → numbers
  let last = null; // {at, samples}
  let timer = null;
  let stopped = false;

  function push(key, value) {
    const points = (history[key] = history[key] || []);
    points.push(Number.isFinite(value) ? value : 0);
    if (points.length > KEEP) points.shift();
    return points;
  }

  function card(key, title, value, unit, chartValue) {
    const points = push(key, chartValue === undefined ? value : chartValue);
    return h("section", { class: "card", "data-metric": key, "aria-label": title },
      h("h3", {}, title),
      h("div", { class: "value" }, fmt(value), unit ? h("span", { class: "muted" }, " " + unit) : null),
      sparkline(points, title + ", last " + points.length + " readings"));
  }

  function delta(now, before, key) {
    return Math.max(0, (now[key] || 0) - ((before && before[key]) || 0));
  }

  function draw(samples, at) {
    const prev = last;
    const seconds = prev ? Math.max(0.001, (at - prev.at) / 1000) : 0;
    const events = byLabel(samples, "tributary_events_total", "result");
    const shed = byLabel(samples, "tributary_events_shed_total", "");
    const prevEvents = prev ? byLabel(prev.samples, "tributary_events_total", "result") : null;
    const prevShed = prev ? byLabel(prev.samples, "tributary_events_shed_total", "") : null;
    const total = Object.values(events).reduce((a, b) => a + b, 0) + (shed[""] || 0);
    const prevTotal = prev ? Object.values(prevEvents).reduce((a, b) => a + b, 0) + (prevShed[""] || 0) : total;
    // No rate before a second reading: "–", not a misleading 0.
    const rate = prev ? Math.max(0, total - prevTotal) / seconds : NaN;
    const gauge = (name) => byLabel(samples, name, "")[""] || 0;

    const list = [
      card("events_rate", "Events / s", rate, "", rate),
      card("events_total", "Events since start", total, "", prev ? Math.max(0, total - prevTotal) : 0),
    ];
    // Results by kind, with 429s (shed) counted in the same place the admin looks for them.
    const results = { ...events, "429": shed[""] || 0 };
    const prevResults = prev ? { ...prevEvents, "429": prevShed[""] || 0 } : null;
    for (const key of Object.keys(results).sort()) {
      const name = key === "429" ? "429 (shed)" : RESULT_NAMES[key] || key;
      list.push(card("result_" + key, "Result: " + name, results[key], "", prev ? delta(results, prevResults, key) : 0));
    }
    list.push(
      card("store_pending_writes", "Store backlog (pending writes)", gauge("tributary_store_pending_writes")),
      card("sessions_active", "Sessions active", gauge("tributary_sessions_active")),
      card("events_in_flight", "Events in flight", gauge("tributary_events_in_flight")),
    );
    cards.replaceChildren(...list);

    // Providers: outcomes, share of timeouts and mean wait over the last poll interval (or
    // since start on the first poll).
    const calls = byTwo(samples, "tributary_provider_calls_total", "provider", "outcome");
    const prevCalls = prev ? byTwo(prev.samples, "tributary_provider_calls_total", "provider", "outcome") : {};
    const sum = byLabel(samples, "tributary_provider_wait_seconds_sum", "provider");
    const count = byLabel(samples, "tributary_provider_wait_seconds_count", "provider");
    const prevSum = prev ? byLabel(prev.samples, "tributary_provider_wait_seconds_sum", "provider") : {};
    const prevCount = prev ? byLabel(prev.samples, "tributary_provider_wait_seconds_count", "provider") : {};
    const names = Object.keys(calls).sort();
    if (!names.length) {
      providers.replaceChildren(h("p", { class: "muted" }, "No provider has been called yet."));
    } else {
      const outcomes = [...new Set(names.flatMap((n) => Object.keys(calls[n])))].sort();
      const rows = names.map((name) => {
        const c = calls[name];
        const all = Object.values(c).reduce((a, b) => a + b, 0);
        const recent = {};
        for (const o of Object.keys(c)) recent[o] = delta(c, prevCalls[name], o);
        const recentAll = Object.values(recent).reduce((a, b) => a + b, 0);
        // The share of timeouts among recent calls, or since start when nothing happened lately.
        const share = recentAll ? (recent.timeout || 0) / recentAll : all ? (c.timeout || 0) / all : 0;
        const n = delta(count, prevCount, name);
        const wait = n ? delta(sum, prevSum, name) / n : count[name] ? (sum[name] || 0) / count[name] : NaN;
        const shareKey = "provider_timeouts_" + name;
        const points = push(shareKey, share * 100);
        return h("tr", { "data-provider": name },
          h("th", { scope: "row" }, name),
          outcomes.map((o) => h("td", { "data-outcome": o }, fmt(c[o] || 0, 0))),
          h("td", { class: "timeout-share" }, fmt(share * 100, 1) + " %"),
          h("td", {}, Number.isFinite(wait) ? fmt(wait * 1000, 1) + " ms" : "–"),
          h("td", {}, sparkline(points, name + " share of timeouts")));
      });
      providers.replaceChildren(h("div", { class: "table-wrap" }, h("table", {},
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Provider"),
          outcomes.map((o) => h("th", { scope: "col" }, o)),
          h("th", { scope: "col" }, "Timeouts"), h("th", { scope: "col" }, "Mean wait"),
          h("th", { scope: "col" }, "Timeouts, recent"))),
        h("tbody", {}, rows))));
    }
    status.textContent = "Updated " + new Date(at).toLocaleTimeString() + (prev ? "; rates over the last " + fmt(seconds, 0) + " s." : "; rates from the next reading.");
    last = { at, samples };
  }

  async function poll() {
    try {
      const text = await api("GET", "/v1/metrics");
      if (stopped) return;
      draw(parseMetrics(text), Date.now());
      status.classList.remove("error");
    } catch (e) {
      if (stopped) return;
      status.textContent = "Could not read the metrics: " + (e.message || e);
      status.classList.add("error");
    }
    // A page the admin has left stops even if its stop function was lost on the way (the
    // router can be asked for another page while this one is still rendering).
    if (!cards.isConnected) stopped = true;
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }
  // Not awaited: the page (and its stop function) is handed to the router at once.
  poll();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
