// Unit tests of the destination-publishing frame's parser and sync history
// (src/routes/assets/dest5.js), run with Node's test runner: `node --test tests/js/`.
// tests/it/dest5.rs runs them as part of `cargo test` when `node` is on the PATH.
"use strict";

const test = require("node:test");
const assert = require("node:assert/strict");
const path = require("node:path");

const dest5 = require(path.join(__dirname, "..", "..", "src", "routes", "assets", "dest5.js"));
const { parse, parentOrigin, readHistory, plan, LIMITS } = dest5;

const enc = encodeURIComponent;
const COMBINED = "---destpub-combined---";
const CLEAR = "---destpub-clear-dextp---";

// What VisitorAPI 5.5 posts for one `/id` ibs entry.
function ibs(id, tag, urls, ttl, fireURLSync) {
  return ["ibs", enc(id), enc(tag), urls.map(enc).join(","), enc(ttl), "", "", fireURLSync ? "true" : "false"].join("|");
}

// What DIL posts for one `/event` dests entry.
function dest(id, y, c) {
  return ["dests", enc(id), enc(y), enc(c)].join("|");
}

function post(...messages) {
  return COMBINED + messages.join("%01");
}

test("an /id sync with several URLs, scheme-less ones taking the frame's scheme", () => {
  const got = parse(post(ibs("411", "img", ["//a.example/s?x=1&y=%2C", "https://b.example/t,u"], "20160", true)), "https:");
  assert.deepEqual(got, {
    clear: false,
    messages: [
      { kind: "ibs", id: "411", tag: "img", urls: ["https://a.example/s?x=1&y=%2C", "https://b.example/t,u"], ttl: 20160 },
    ],
  });
  assert.equal(parse(post(ibs("1", "iframe", ["//a.example/"], "5")), "http:").messages[0].urls[0], "http://a.example/");
});

test("idSyncByURL's message (seven fields, the last with its dpid and dpuuid)", () => {
  const message = ["ibs", enc("1234"), "img", enc("//sync.example/p?uid=1"), "20160", "", ",1234,abc"].join("|");
  const got = parse(post(message), "https:");
  assert.deepEqual(got.messages, [
    { kind: "ibs", id: "1234", tag: "img", urls: ["https://sync.example/p?uid=1"], ttl: 20160 },
  ]);
});

test("a URL destination, fired as an image or a frame", () => {
  const got = parse(post(dest("77", "img", "http://px.example/s?a=1"), dest("78", "iframe", "//px.example/f")), "https:");
  assert.deepEqual(got.messages, [
    { kind: "dests", id: "77", tag: "img", url: "http://px.example/s?a=1" },
    { kind: "dests", id: "78", tag: "iframe", url: "https://px.example/f" },
  ]);
});

test("the clear marker comes before the combined marker", () => {
  assert.equal(parse(CLEAR + post(ibs("1", "img", ["//a.example/"], "1")), "https:").clear, true);
  assert.deepEqual(parse(CLEAR + COMBINED, "https:"), { clear: true, messages: [] });
  assert.equal(parse(COMBINED + CLEAR + ibs("1", "img", ["//a.example/"], "1"), "https:").messages.length, 0);
  assert.equal(parse(post(ibs("1", "img", ["//a.example/"], "1")) + CLEAR, "https:").clear, false);
});

test("anything but a combined post is not read", () => {
  for (const data of [
    undefined, null, 42, {}, ["---destpub-combined---"], "",
    ibs("1", "img", ["//a.example/"], "1"),
    "---destpub---" + ibs("1", "img", ["//a.example/"], "1"),
    "x" + post(ibs("1", "img", ["//a.example/"], "1")),
    enc(COMBINED).replace(/-/g, "%2D") + ibs("1", "img", ["//a.example/"], "1"),
  ]) {
    assert.equal(parse(data, "https:"), null, String(data));
  }
});

test("only http and https URLs, however they are disguised", () => {
  const hostile = [
    "javascript:alert(1)", "JavaScript:alert(1)", " javascript:alert(1)", "java\tscript:alert(1)",
    "data:text/html,<script>alert(1)</script>", "vbscript:x", "file:///etc/passwd", "blob:https://a.example/1",
    "about:blank", "/relative", "relative", "///a.example", "/\\a.example", "\\\\a.example", "http:\\\\a.example",
    "https:/a.example", "http://", "//", "", "https://a.example/\nx", "https://a.example/ x", "https://a.example/\u2028",
    "ftp://a.example/", "wss://a.example/",
  ];
  for (const url of hostile) {
    assert.deepEqual(parse(post(ibs("1", "img", [url], "1")), "https:").messages, [], JSON.stringify(url));
    assert.deepEqual(parse(post(dest("1", "img", url)), "https:").messages, [], JSON.stringify(url));
  }
  // One bad URL drops the whole sync, not only that URL.
  assert.deepEqual(parse(post(ibs("1", "img", ["//a.example/", "javascript:x"], "1")), "https:").messages, []);
});

test("a URL whose host no browser can parse is refused, as the browser's URL parser says", () => {
  for (const url of ["//>", "http://>", "https://a b/", "//a.example:99999/", "//[::1/", "//%zz/"]) {
    assert.deepEqual(parse(post(dest(":", "img", url)), "http:").messages, [], JSON.stringify(url));
    assert.deepEqual(parse(post(ibs("1", "img", [url], "1")), "https:").messages, [], JSON.stringify(url));
  }
  assert.equal(parse(post(dest(":", "img", "//a.example:8080/x")), "http:").messages[0].url, "http://a.example:8080/x");
});

test("a message that cannot be read is skipped, the others stand", () => {
  const good = ibs("9", "img", ["//ok.example/"], "60");
  const bad = [
    ["ibs", "1", "img", "%E0%A4%A", "1"].join("|"), // malformed escape
    ["ibs", "1", "script", enc("//a.example/"), "1"].join("|"), // unknown tag
    ["ibs", "1", "js", enc("//a.example/"), "1"].join("|"),
    ["ibs", "", "img", enc("//a.example/"), "1"].join("|"), // no id
    ["ibs", enc("a b"), "img", enc("//a.example/"), "1"].join("|"),
    ["ibs", "1", "img", enc("//a.example/"), "-1"].join("|"), // ttl not a count of minutes
    ["ibs", "1", "img", enc("//a.example/"), "1.5"].join("|"),
    ["ibs", "1", "img", enc("//a.example/"), "1e3"].join("|"),
    ["ibs", "1", "img", enc("//a.example/"), "1234567890"].join("|"),
    ["ibs", "1", "img", enc("//a.example/")].join("|"), // too few fields
    ["ibs", "1", "img", enc("//a.example/"), "1", "", "", "true", "extra"].join("|"),
    ["dests", "1", "img"].join("|"),
    ["dests", "1", "img", enc("//a.example/"), "x"].join("|"),
    ["dests", "1", "frame", enc("//a.example/")].join("|"),
    "unknown|1|img|" + enc("//a.example/"),
    "", "|||", "ibs",
  ];
  const got = parse(post(...bad, good), "https:");
  assert.deepEqual(got.messages.map((m) => m.id), ["9"]);
});

test("an empty ttl fires without remembering; a long one is shortened", () => {
  assert.equal(parse(post(ibs("1", "img", ["//a.example/"], "")), "https:").messages[0].ttl, 0);
  assert.equal(parse(post(ibs("1", "img", ["//a.example/"], "999999999")), "https:").messages[0].ttl, LIMITS.ttlMinutes);
});

test("limits: a post over the size cap, too many messages or URLs is dropped whole", () => {
  const one = ibs("1", "img", ["//a.example/"], "1");
  const padded = post(one, dest("2", "img", "//a.example/?" + "x".repeat(LIMITS.post)));
  assert.equal(parse(padded, "https:"), null);
  assert.equal(parse(post(...Array(LIMITS.messages + 1).fill(one)), "https:"), null);
  assert.equal(parse(post(...Array(LIMITS.messages).fill(one)), "https:").messages.length, LIMITS.messages);
  // 20 URLs per message is the most; 11 messages of 20 are 220 URLs, over the post's 200.
  const twenty = ibs("1", "img", Array(LIMITS.urlsPerMessage).fill("//a.example/"), "1");
  assert.equal(parse(post(twenty), "https:").messages[0].urls.length, LIMITS.urlsPerMessage);
  assert.deepEqual(parse(post(ibs("1", "img", Array(LIMITS.urlsPerMessage + 1).fill("//a.example/"), "1")), "https:").messages, []);
  assert.equal(parse(post(...Array(11).fill(twenty)), "https:"), null);
});

test("limits: an overlong field drops its message", () => {
  const long = "//a.example/?" + "x".repeat(LIMITS.field);
  const got = parse(post(ibs("1", "img", [long], "1"), ibs("2", "img", ["//b.example/"], "1")), "https:");
  assert.deepEqual(got.messages.map((m) => m.id), ["2"]);
  assert.deepEqual(parse(post(ibs("x".repeat(65), "img", ["//a.example/"], "1")), "https:").messages, []);
});

test("the frame's scheme is http: or https:, else https:", () => {
  for (const scheme of ["file:", "javascript:", "", undefined, "about:"]) {
    assert.equal(parse(post(ibs("1", "img", ["//a.example/"], "1")), scheme).messages[0].urls[0], "https://a.example/");
  }
});

test("the parent origin: a plain scheme://host[:port], else nothing", () => {
  assert.equal(parentOrigin("#" + enc("https://www.example.com")), "https://www.example.com");
  assert.equal(parentOrigin("#" + enc("http://localhost:8080")), "http://localhost:8080");
  assert.equal(parentOrigin("#" + enc("http://127.0.0.1:65535")), "http://127.0.0.1:65535");
  assert.equal(parentOrigin("#" + enc("https://[::1]:8443")), "https://[::1]:8443");
  assert.equal(parentOrigin("#HTTPS%3A%2F%2FShop.Example"), "https://shop.example");
  assert.equal(parentOrigin("https://a.example"), "https://a.example");
  for (const hash of [
    "", "#", "#*", "#null", "#" + enc("javascript:alert(1)"), "#" + enc("https://a.example/"),
    "#" + enc("https://a.example/path"), "#" + enc("https://a.example?x"), "#" + enc("https://a.example#x"),
    "#" + enc("https://user@a.example"), "#" + enc("https://a.example:99999"), "#" + enc("https://a.example:"),
    "#" + enc("ftp://a.example"), "#" + enc("data:text/html,x"), "#" + enc(" https://a.example"),
    "#" + enc("https://a.example\n"), "#" + enc("https://-a.example"), "#" + enc("https://a..example"),
    "#%E0%A4%A", "#" + "a".repeat(400), undefined, null, 5,
    "#" + enc(location()),
  ]) {
    assert.equal(parentOrigin(hash), null, String(hash));
  }
  function location() {
    return "https://shop.example/cart?x=1"; // dpIframeSrc sends location.href: no origin taken from it
  }
});

test("plan: fires every URL of a sync once, then not within its ttl", () => {
  const now = 1_000_000_000_000;
  const first = plan(parse(post(ibs("5", "img", ["//a.example/1", "//a.example/2"], "10"), dest("6", "iframe", "//d.example/")), "https:"), readHistory(null, now), now);
  assert.deepEqual(first.fires, [
    { tag: "img", url: "https://a.example/1" },
    { tag: "img", url: "https://a.example/2" },
    { tag: "iframe", url: "https://d.example/" },
  ]);
  assert.equal(first.history["5"], now + 10 * 60000);
  const stored = JSON.stringify(first.history);

  const again = plan(parse(post(ibs("5", "img", ["//a.example/1"], "10"), dest("6", "iframe", "//d.example/")), "https:"), readHistory(stored, now + 1), now + 1);
  assert.deepEqual(again.fires, [{ tag: "iframe", url: "https://d.example/" }], "the destination has no ttl");

  const later = now + 10 * 60000;
  const expired = plan(parse(post(ibs("5", "img", ["//a.example/1"], "10")), "https:"), readHistory(stored, later), later);
  assert.deepEqual(expired.fires, [{ tag: "img", url: "https://a.example/1" }]);
});

test("plan: the same sync twice in one post fires once", () => {
  const now = 5000;
  const got = plan(parse(post(ibs("5", "img", ["//a.example/"], "1"), ibs("5", "img", ["//a.example/"], "1")), "https:"), readHistory(null, now), now);
  assert.equal(got.fires.length, 1);
});

test("plan: the clear marker forgets every sync", () => {
  const now = 5000;
  const stored = JSON.stringify({ 5: now + 60000, 6: now + 60000 });
  const got = plan(parse(CLEAR + post(ibs("5", "img", ["//a.example/"], "1")), "https:"), readHistory(stored, now), now);
  assert.equal(got.fires.length, 1);
  assert.deepEqual(Object.keys(got.history), ["5"]);
});

test("plan: a sync with no ttl fires every time and leaves no entry", () => {
  const now = 5000;
  const stored = JSON.stringify({ 5: now + 60000 });
  const got = plan(parse(post(ibs("5", "img", ["//a.example/"], "")), "https:"), readHistory("{}", now), now);
  assert.equal(got.fires.length, 1);
  assert.deepEqual(Object.keys(got.history), []);
  // An entry left by an earlier ttl still holds until it expires.
  assert.equal(plan(parse(post(ibs("5", "img", ["//a.example/"], "")), "https:"), readHistory(stored, now), now).fires.length, 0);
});

test("history: malformed storage is an empty history; ids like __proto__ stay plain keys", () => {
  const now = 100;
  for (const json of [null, "", "x", "[]", "[1]", "null", "5", "\"s\"", "{\"a b\":500}", "{\"1\":\"500\"}", "{\"1\":50}", "{\"1\":null}"]) {
    assert.deepEqual(Object.keys(readHistory(json, now)), [], String(json));
  }
  const history = readHistory(JSON.stringify({ __proto__: 500, constructor: 500, "1": 500 }), now);
  assert.deepEqual(Object.keys(history).sort(), ["1", "constructor"]);
  const withProto = readHistory("{\"__proto__\":500}", now);
  assert.deepEqual(Object.keys(withProto), ["__proto__"]);
  const got = plan(parse(post(ibs("__proto__", "img", ["//a.example/"], "1")), "https:"), withProto, now);
  assert.equal(got.fires.length, 0, "__proto__ was synced within its ttl");
  assert.equal(Object.getPrototypeOf(got.history), null);
});

test("history: at most LIMITS.history ids, the longest-lived kept", () => {
  const now = 0;
  const many = {};
  for (let i = 0; i < LIMITS.history + 50; i++) {
    many[String(i)] = 1000 + i;
  }
  const history = readHistory(JSON.stringify(many), now);
  const ids = Object.keys(history);
  assert.equal(ids.length, LIMITS.history);
  assert.ok(!("0" in history) && String(LIMITS.history + 49) in history);
});

test("the module starts nothing outside a browser", () => {
  assert.equal(typeof dest5.parse, "function");
  assert.equal(typeof globalThis.window, "undefined");
});
