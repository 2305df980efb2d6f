/* Tributary destination-publishing frame (GET /dest5.html); the wire contract is in
 * docs/dcs-api.md. Everything that reads the parent's message is a pure function, exported
 * for the Node tests (tests/js/) and the fuzz target (fuzz/js/); only start() touches the
 * page. The message is untrusted: nothing from it reaches the DOM except as the address of
 * an http(s) image or frame, and a message outside the limits is dropped whole. */
(function () {
  "use strict";

  var LIMITS = {
    post: 65536, // characters in one posted string
    messages: 100, // messages in one post
    urls: 200, // URLs in one post, all messages together
    urlsPerMessage: 20,
    field: 4096, // characters of one encoded field (one URL of a list)
    ttlMinutes: 527040, // 366 days; a longer ttl is shortened to this
    history: 1000 // sync ids remembered
  };
  var CLEAR = "---destpub-clear-dextp---";
  var COMBINED = "---destpub-combined---";
  var SEPARATOR = "%01";
  var TO_PARENT = "---destpub-to-parent---";
  var HISTORY_KEY = "tributary.destpub.syncs";
  var COOKIE_PROBE = "tributary_3pc";

  var ID = /^[A-Za-z0-9_.:-]{1,64}$/;
  var TTL = /^[0-9]{1,9}$/;
  // Whitespace, controls and backslashes are refused rather than left to the browser's URL
  // parser, which drops or reinterprets them ("java\tscript:", "/\host").
  var UNSAFE_CHAR = /[\u0000-\u0020\u007f-\u009f\\\u2028\u2029]/;
  var WEB_URL = /^(https?:)?\/\/[^\/?#]/i;
  var ORIGIN = /^https?:\/\/(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*|\[[0-9a-f:.]{2,45}\])(?::([0-9]{1,5}))?$/i;

  function decode(text) {
    if (text.length > LIMITS.field) {
      return null;
    }
    try {
      return decodeURIComponent(text);
    } catch (e) {
      return null; // malformed %-escape
    }
  }

  /* An http(s) URL to fire, or null. A scheme-less `//host/…` takes `scheme`, the frame's. */
  function webUrl(encoded, scheme) {
    var url = decode(encoded);
    if (url === null || url.length === 0 || UNSAFE_CHAR.test(url)) {
      return null;
    }
    var match = WEB_URL.exec(url);
    if (!match) {
      return null;
    }
    var full = match[1] ? url : scheme + url;
    // The pattern passes hosts no browser can load ("//>"); its own parser has the last
    // word, so what is fired is what was checked (the scheme is http(s) by the pattern).
    try {
      new URL(full);
    } catch (e) {
      return null;
    }
    return full;
  }

  function parseIbs(fields, scheme) {
    // ibs|<id>|<tag>|<url>,<url>…|<ttl>|||<fireURLSync> from the /id answer, or
    // ibs|<dpid>|img|<url>|<ttl>||,<dpid>,<dpuuid> from idSyncByURL: fields 5 on are the
    // parent's own bookkeeping.
    if (fields.length < 5 || fields.length > 8) {
      return null;
    }
    var id = decode(fields[1]);
    var tag = decode(fields[2]);
    var ttl = decode(fields[4]);
    if (id === null || !ID.test(id) || (tag !== "img" && tag !== "iframe") || ttl === null) {
      return null;
    }
    if (ttl !== "" && !TTL.test(ttl)) {
      return null;
    }
    var list = fields[3].split(",");
    if (list.length > LIMITS.urlsPerMessage) {
      return null;
    }
    var urls = [];
    for (var i = 0; i < list.length; i++) {
      var url = webUrl(list[i], scheme);
      if (url === null) {
        return null; // a sync fires as sent or not at all
      }
      urls.push(url);
    }
    return {
      kind: "ibs",
      id: id,
      tag: tag,
      urls: urls,
      ttl: Math.min(ttl === "" ? 0 : Number(ttl), LIMITS.ttlMinutes)
    };
  }

  function parseDest(fields, scheme) {
    // dests|<id>|<y>|<c>
    if (fields.length !== 4) {
      return null;
    }
    var id = decode(fields[1]);
    var tag = decode(fields[2]);
    var url = webUrl(fields[3], scheme);
    if (id === null || (id !== "" && !ID.test(id)) || (tag !== "img" && tag !== "iframe") || url === null) {
      return null;
    }
    return { kind: "dests", id: id, tag: tag, url: url };
  }

  /* The parent's post: {clear, messages: [ibs or dests, in order]}, or null when the post is
   * not a combined destination-publishing string or exceeds a limit. A single message that
   * cannot be read is skipped; the others stand. */
  function parse(data, scheme) {
    if (typeof data !== "string" || data.length > LIMITS.post) {
      return null;
    }
    if (scheme !== "http:" && scheme !== "https:") {
      scheme = "https:";
    }
    var rest = data;
    var clear = rest.indexOf(CLEAR) === 0;
    if (clear) {
      rest = rest.slice(CLEAR.length);
    }
    if (rest.indexOf(COMBINED) !== 0) {
      return null;
    }
    rest = rest.slice(COMBINED.length);
    var parts = rest === "" ? [] : rest.split(SEPARATOR);
    if (parts.length > LIMITS.messages) {
      return null;
    }
    var messages = [];
    var urls = 0;
    for (var i = 0; i < parts.length; i++) {
      var fields = parts[i].split("|");
      var message = null;
      if (fields[0] === "ibs") {
        message = parseIbs(fields, scheme);
      } else if (fields[0] === "dests") {
        message = parseDest(fields, scheme);
      }
      if (message === null) {
        continue;
      }
      urls += message.kind === "ibs" ? message.urls.length : 1;
      if (urls > LIMITS.urls) {
        return null;
      }
      messages.push(message);
    }
    return { clear: clear, messages: messages };
  }

  /* The parent origin named by the frame's fragment (`#<encoded origin>`), or null unless it
   * is a plain http(s) scheme://host[:port]. */
  function parentOrigin(hash) {
    if (typeof hash !== "string" || hash.length > 300) {
      return null;
    }
    var text = decode(hash.charAt(0) === "#" ? hash.slice(1) : hash);
    if (text === null) {
      return null;
    }
    var match = ORIGIN.exec(text);
    if (!match || (match[1] !== undefined && Number(match[1]) > 65535)) {
      return null;
    }
    return text.toLowerCase();
  }

  function emptyHistory() {
    return Object.create(null); // sync ids such as "__proto__" stay plain keys
  }

  /* The stored history (JSON of id → expiry in ms), without expired or malformed entries. */
  function readHistory(json, now) {
    var history = emptyHistory();
    var stored;
    try {
      stored = JSON.parse(json);
    } catch (e) {
      return history;
    }
    if (stored === null || typeof stored !== "object" || Array.isArray(stored)) {
      return history;
    }
    var ids = Object.keys(stored);
    for (var i = 0; i < ids.length; i++) {
      var expiry = stored[ids[i]];
      if (ID.test(ids[i]) && typeof expiry === "number" && isFinite(expiry) && expiry > now) {
        history[ids[i]] = expiry;
      }
    }
    return trimHistory(history);
  }

  function trimHistory(history) {
    var ids = Object.keys(history);
    if (ids.length <= LIMITS.history) {
      return history;
    }
    ids.sort(function (a, b) {
      return history[b] - history[a];
    });
    var kept = emptyHistory();
    for (var i = 0; i < LIMITS.history; i++) {
      kept[ids[i]] = history[ids[i]];
    }
    return kept;
  }

  /* What to fire for `post`, in order, as {tag, url}; records each fired sync in `history`
   * (which the clear marker has emptied first) and returns the history to store. */
  function plan(post, history, now) {
    var fires = [];
    if (post.clear) {
      history = emptyHistory();
    }
    for (var i = 0; i < post.messages.length; i++) {
      var message = post.messages[i];
      if (message.kind === "dests") {
        fires.push({ tag: message.tag, url: message.url });
        continue;
      }
      if (history[message.id] > now) {
        continue; // synced within its ttl
      }
      for (var j = 0; j < message.urls.length; j++) {
        fires.push({ tag: message.tag, url: message.urls[j] });
      }
      if (message.ttl > 0) {
        history[message.id] = now + message.ttl * 60000;
      } else {
        delete history[message.id];
      }
    }
    return { fires: fires, history: trimHistory(history) };
  }

  var api = {
    LIMITS: LIMITS,
    parse: parse,
    parentOrigin: parentOrigin,
    readHistory: readHistory,
    plan: plan
  };

  /* ---- the page ---- */

  function storage(win) {
    try {
      return win.localStorage; // throws where third-party storage is blocked
    } catch (e) {
      return null;
    }
  }

  function canSetCookies(doc) {
    try {
      // A cookie in a cross-site frame must be SameSite=None, hence Secure.
      doc.cookie = COOKIE_PROBE + "=1; Path=/; Max-Age=60; SameSite=None; Secure";
      var ok = (";" + doc.cookie.replace(/ /g, "")).indexOf(";" + COOKIE_PROBE + "=1") !== -1;
      doc.cookie = COOKIE_PROBE + "=; Path=/; Max-Age=0; SameSite=None; Secure";
      return ok;
    } catch (e) {
      return false;
    }
  }

  function fire(win, tag, url, pending) {
    var doc = win.document;
    if (tag === "img") {
      var img = new win.Image(1, 1);
      // Kept until done, so that the request is not dropped with the element.
      pending.push(img);
      img.onload = img.onerror = function () {
        var at = pending.indexOf(img);
        if (at !== -1) {
          pending.splice(at, 1);
        }
      };
      img.src = url;
      return;
    }
    var frame = doc.createElement("iframe");
    frame.setAttribute("sandbox", "allow-scripts allow-same-origin");
    frame.setAttribute("aria-hidden", "true");
    frame.setAttribute("tabindex", "-1");
    frame.width = "0";
    frame.height = "0";
    frame.style.display = "none";
    frame.src = url;
    (doc.body || doc.documentElement).appendChild(frame);
  }

  function start(win) {
    if (win.parent === win) {
      return; // opened on its own: nothing to talk to
    }
    var memory = emptyHistory(); // where storage is refused
    var pending = [];
    win.addEventListener("message", function (event) {
      if (event.source !== win.parent) {
        return;
      }
      var post = parse(event.data, win.location.protocol);
      if (post === null) {
        return;
      }
      var now = Date.now();
      var store = storage(win);
      var history = memory;
      if (store) {
        try {
          history = readHistory(store.getItem(HISTORY_KEY), now);
        } catch (e) {
          store = null;
        }
      }
      var planned = plan(post, history, now);
      memory = planned.history;
      if (store) {
        try {
          store.setItem(HISTORY_KEY, JSON.stringify(planned.history));
        } catch (e) {
          // full or refused: the history lives in memory for this frame
        }
      }
      for (var i = 0; i < planned.fires.length; i++) {
        fire(win, planned.fires[i].tag, planned.fires[i].url, pending);
      }
    });
    var origin = parentOrigin(win.location.hash);
    if (origin !== null) {
      var message = TO_PARENT + "canSetThirdPartyCookies|" + (canSetCookies(win.document) ? "true" : "false");
      try {
        win.parent.postMessage(message, origin);
      } catch (e) {
        // the parent went away
      }
    }
  }

  if (typeof module === "object" && module !== null && module.exports) {
    module.exports = api;
  } else if (typeof window === "object" && window !== null && window.document) {
    start(window);
  }
})();
