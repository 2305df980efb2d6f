// Fuzz target for the destination-publishing frame's parser (src/routes/assets/dest5.js):
// `node dest5.fuzz.js [seconds]` (after `npm ci` here). Inputs are arbitrary strings and
// posts built near the wire format (markers, `%01`, `|`, encoded and broken fields, hostile
// URLs), fed to parse(), parentOrigin(), readHistory() and plan(). No input may throw, and
// what parse() accepts must keep the frame's promises: http(s) URLs only, within the limits.
// A failure prints the (shrunk) input and exits non-zero.
"use strict";

const fc = require("fast-check");
const path = require("node:path");
const dest5 = require(path.join(__dirname, "..", "..", "src", "routes", "assets", "dest5.js"));

const { LIMITS } = dest5;
const COMBINED = "---destpub-combined---";
const CLEAR = "---destpub-clear-dextp---";
const ID = /^[A-Za-z0-9_.:-]{1,64}$/;

function fail(why, value) {
  throw new Error(why + ": " + JSON.stringify(value).slice(0, 500));
}

function checkUrl(url) {
  if (typeof url !== "string" || !/^https?:\/\/[^\/?#\\\s]/i.test(url)) {
    fail("not an http(s) URL", url);
  }
  const parsed = new URL(url);
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
    fail("the browser reads another scheme", url);
  }
}

// parse() must not throw, and what it returns must be safe to act on.
function checkPost(data, scheme, now, stored) {
  const post = dest5.parse(data, scheme);
  if (post === null) {
    return;
  }
  if (typeof data !== "string" || data.length > LIMITS.post) {
    fail("accepted over the size cap", data.length);
  }
  if (post.messages.length > LIMITS.messages) {
    fail("too many messages", post.messages.length);
  }
  let urls = 0;
  for (const m of post.messages) {
    if (m.tag !== "img" && m.tag !== "iframe") {
      fail("tag", m);
    }
    if (m.kind === "ibs") {
      if (!ID.test(m.id) || !Number.isInteger(m.ttl) || m.ttl < 0 || m.ttl > LIMITS.ttlMinutes) {
        fail("sync", m);
      }
      if (m.urls.length > LIMITS.urlsPerMessage) {
        fail("urls per message", m.urls.length);
      }
      m.urls.forEach(checkUrl);
      urls += m.urls.length;
    } else if (m.kind === "dests") {
      if (m.id !== "" && !ID.test(m.id)) {
        fail("destination id", m);
      }
      checkUrl(m.url);
      urls += 1;
    } else {
      fail("kind", m);
    }
  }
  if (urls > LIMITS.urls) {
    fail("too many URLs", urls);
  }
  const history = dest5.readHistory(stored, now);
  const planned = dest5.plan(post, history, now);
  planned.fires.forEach((f) => checkUrl(f.url));
  const again = dest5.readHistory(JSON.stringify(planned.history), now);
  if (Object.keys(again).length > LIMITS.history) {
    fail("history over its cap", Object.keys(again).length);
  }
}

function checkOrigin(hash) {
  const origin = dest5.parentOrigin(hash);
  if (origin === null) {
    return;
  }
  const parsed = new URL(origin);
  if (parsed.origin !== origin) {
    fail("not a plain origin", origin);
  }
}

// Pieces the parser looks for, so that random posts reach past its first checks.
const urlLike = fc.oneof(
  fc.webUrl({ withQueryParameters: true, withFragments: true }),
  fc.webUrl().map((u) => u.replace(/^https?:/, "")),
  fc
    .tuple(fc.constantFrom("javascript:", "JavaScript:", "data:", "vbscript:", "file:", "blob:", "ftp:", "http:", "https:", "", " ", "http:/"), fc.webUrl())
    .map(([s, u]) => s + u.replace(/^https?:/, "")),
  fc.constantFrom(
    "javascript:alert(1)", "JAVASCRIPT:x", "data:text/html,<b>", "java\tscript:x", " //a.example",
    "//", "///x", "/\\x", "http:\\\\x", "https:/x", "vbscript:x", "//a.example/\u2028", "%", "%E0%A4%A",
  ),
  fc.string(),
);
const field = fc.oneof(
  urlLike.map(encodeURIComponent),
  fc.string(),
  fc.string({ unit: "binary" }),
  fc.constantFrom("", "img", "iframe", "ibs", "dests", "%01", "|", ",", "%", "%ZZ", "%C0%80", "__proto__"),
);
const id = fc.oneof(fc.stringMatching(/^[A-Za-z0-9_.:-]{1,64}$/), fc.constantFrom("__proto__", "constructor"), fc.string());
const ttl = fc.oneof(fc.nat().map(String), fc.constantFrom("", "-1", "1e3", "0x10", "9999999999"), fc.string());
const ibs = fc
  .tuple(id, fc.constantFrom("img", "iframe", "js", ""), fc.array(urlLike, { maxLength: 25 }), ttl, fc.array(field, { maxLength: 5 }))
  .map(([i, tag, urls, t, extra]) =>
    ["ibs", encodeURIComponent(i), tag, urls.map(encodeURIComponent).join(","), t].concat(extra).join("|"));
const dests = fc
  .tuple(id, fc.constantFrom("img", "iframe", "x"), urlLike, fc.array(field, { maxLength: 2 }))
  .map(([i, y, c, extra]) => ["dests", encodeURIComponent(i), y, encodeURIComponent(c)].concat(extra).join("|"));
const message = fc.oneof(ibs, dests, fc.array(field, { maxLength: 9 }).map((f) => f.join("|")));
const post = fc
  .tuple(fc.boolean(), fc.boolean(), fc.array(message, { maxLength: 120 }), fc.constantFrom("", "%01", "|", "%0"))
  .map(([clear, combined, messages, tail]) => (clear ? CLEAR : "") + (combined ? COMBINED : "") + messages.join("%01") + tail);
const anyString = fc.oneof(fc.string(), fc.string({ unit: "binary" }), fc.string({ unit: "grapheme" }));
const data = fc.oneof(post, anyString, anyString.map((s) => COMBINED + s), fc.anything());
const scheme = fc.constantFrom("http:", "https:", "file:", "", undefined);
const stored = fc.oneof(fc.constant(null), fc.json(), anyString, fc.dictionary(id, fc.oneof(fc.double(), fc.integer(), fc.string())).map((d) => JSON.stringify(d)));
const hash = fc.oneof(
  anyString,
  fc.webUrl().map((u) => "#" + encodeURIComponent(u)),
  fc.webUrl().map((u) => "#" + encodeURIComponent(new URL(u).origin)),
  fc.anything(),
);

const seconds = Number(process.argv[2] || 60);
let runs = 0;
const property = fc.property(data, scheme, fc.integer({ min: 0, max: 4102444800000 }), stored, hash, (d, s, now, json, h) => {
  runs += 1;
  checkPost(d, s, now, json);
  checkOrigin(h);
});
const started = Date.now();
const result = fc.check(property, {
  numRuns: Number.MAX_SAFE_INTEGER,
  interruptAfterTimeLimit: seconds * 1000,
  markInterruptAsFailure: false,
});
const elapsed = ((Date.now() - started) / 1000).toFixed(1);
if (result.failed) {
  console.error(fc.defaultReportMessage(result));
  process.exit(1);
}
console.log(`dest5: ${runs} inputs in ${elapsed} s, no failure (seed ${result.seed})`);
