/* tributary.js: Tributary's site tag (GET /tributary.js). Sends the page's signals, declared
 * ids and consent to /event, keeps the visitor id first-party, writes cookie destinations,
 * fires URL destinations through /dest5.html and hands the segments to targeting. No
 * dependencies; docs/site-tag.md says how to use it. */
(function (w, d) {
  "use strict";
  var VERSION = "1";
  if (w.tributary && w.tributary.version) {
    return; // loaded twice: the first copy stays in charge
  }
  var script = d.currentScript;
  var config = w.tributaryConfig || {};
  var ID_COOKIE = "tributary_uuid";
  var OPTED_OUT = "NOTARGET";
  var CMP_WAIT_MS = 500;
  var KEY = /^[A-Za-z0-9_.-]{1,255}$/;

  function attr(name) {
    return script ? script.getAttribute("data-" + name) : null;
  }

  /* The DCS: `server` in the config, else data-server, else where this script came from. */
  function serverBase() {
    var base = config.server || attr("server");
    if (!base && script && script.src) {
      base = script.src.replace(/\/tributary\.js(?:[?#].*)?$/, "");
    }
    return String(base || "").replace(/\/+$/, "");
  }

  /* Page signals: data-signal-<key> attributes of the script, then config.signals. */
  function pageSignals(extra) {
    var out = {};
    var i;
    if (script) {
      for (i = 0; i < script.attributes.length; i++) {
        var name = script.attributes[i].name;
        if (name.indexOf("data-signal-") === 0) {
          out[name.slice(12)] = script.attributes[i].value;
        }
      }
    }
    var sources = [config.signals, extra];
    for (i = 0; i < sources.length; i++) {
      var source = sources[i];
      if (source && typeof source === "object") {
        for (var key in source) {
          if (Object.prototype.hasOwnProperty.call(source, key)) {
            out[key] = source[key];
          }
        }
      }
    }
    return out;
  }

  function readCookie(name) {
    var parts = d.cookie ? d.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (eq > 0 && parts[i].slice(0, eq) === name) {
        try {
          return decodeURIComponent(parts[i].slice(eq + 1));
        } catch (e) {
          return null;
        }
      }
    }
    return null;
  }

  function writeCookie(name, value, days, domain) {
    var text = name + "=" + encodeURIComponent(value) + "; path=/; SameSite=Lax";
    if (days > 0) {
      text += "; max-age=" + Math.round(days * 86400);
    }
    if (domain) {
      text += "; domain=" + domain;
    }
    if (w.location.protocol === "https:") {
      text += "; Secure";
    }
    d.cookie = text;
  }

  /* The visitor id this site keeps for itself (first-party), so a browser that blocks
   * third-party cookies stays the same visitor. */
  function storedVisitor() {
    var id = readCookie(ID_COOKIE);
    return id && (/^[0-9]{38}$/.test(id) || id === OPTED_OUT) ? id : null;
  }

  /* The page's TCF v2 consent, when it has a CMP: {gdpr, consent}, or null. */
  function tcfConsent() {
    return new Promise(function (resolve) {
      if (typeof w.__tcfapi !== "function") {
        resolve(null);
        return;
      }
      var done = false;
      var finish = function (value) {
        if (!done) {
          done = true;
          resolve(value);
        }
      };
      setTimeout(function () {
        finish(null);
      }, CMP_WAIT_MS);
      try {
        w.__tcfapi("getTCData", 2, function (data, ok) {
          if (!ok || !data) {
            finish(null);
          } else if (data.gdprApplies === false) {
            finish({ gdpr: "0", consent: "" });
          } else {
            finish({ gdpr: "1", consent: String(data.tcString || "") });
          }
        });
      } catch (e) {
        finish(null);
      }
    });
  }

  function addParam(parts, key, value) {
    parts.push(encodeURIComponent(key) + "=" + encodeURIComponent(String(value)));
  }

  /* The form body of one /event call. */
  function eventBody(signals, options, consent, visitor) {
    var parts = [];
    addParam(parts, "d_rtbd", "json");
    addParam(parts, "d_cts", "2");
    if (options.dests !== false) {
      addParam(parts, "d_dst", "1");
    }
    if (visitor && visitor !== OPTED_OUT) {
      addParam(parts, "d_uuid", visitor);
    }
    for (var key in signals) {
      if (!Object.prototype.hasOwnProperty.call(signals, key) || !KEY.test(key)) {
        continue;
      }
      var value = signals[key];
      var values = Object.prototype.toString.call(value) === "[object Array]" ? value : [value];
      for (var i = 0; i < values.length; i++) {
        if (values[i] !== null && values[i] !== undefined) {
          addParam(parts, key, values[i]);
        }
      }
    }
    var ids = options.declaredIds || config.declaredIds || [];
    for (var j = 0; j < ids.length && j < 10; j++) {
      var id = ids[j];
      if (!id || id.id === undefined) {
        continue;
      }
      var auth = id.authState === undefined ? "" : "\u0001" + id.authState;
      if (id.dpid !== undefined) {
        addParam(parts, "d_cid", id.dpid + "\u0001" + id.id + auth);
      } else if (id.code !== undefined) {
        addParam(parts, "d_cid_ic", id.code + "\u0001" + id.id + auth);
      }
    }
    if (consent) {
      addParam(parts, "gdpr", consent.gdpr);
      if (consent.gdpr === "1") {
        addParam(parts, "gdpr_consent", consent.consent);
      }
    }
    if (config.coppa) {
      addParam(parts, "d_coppa", "1");
    }
    return parts.join("&");
  }

  /* POST /event with credentials; an image GET where fetch is missing (no answer then). */
  function post(base, body) {
    var url = base + "/event";
    if (typeof w.fetch === "function") {
      return w
        .fetch(url, {
          method: "POST",
          credentials: "include",
          keepalive: true,
          // The page's address is what h_referer carries: with the browser's default policy a
          // cross-origin call would send only its origin.
          referrerPolicy: "no-referrer-when-downgrade",
          headers: { "Content-Type": "application/x-www-form-urlencoded" },
          body: body
        })
        .then(function (response) {
          if (!response.ok) {
            throw new Error("tributary: /event answered " + response.status);
          }
          return response.json();
        });
    }
    new Image().src = url + "?" + body.replace("d_rtbd=json&", "");
    return Promise.resolve(null);
  }

  /* Cookie destinations: `cn=cv` on this site, for `ttl` days (0: this session). */
  function writeStuff(stuff) {
    for (var i = 0; stuff && i < stuff.length; i++) {
      var s = stuff[i];
      if (s && typeof s.cn === "string" && KEY.test(s.cn) && s.cn !== ID_COOKIE) {
        writeCookie(s.cn, String(s.cv), Number(s.ttl) || 0, s.dmn || config.cookieDomain);
      }
    }
  }

  var frame = null;
  var frameReady = null;

  /* URL destinations go through the DCS's destination-publishing frame, as Adobe's DIL sends
   * them, so they are fired from the DCS's origin and the page's address is not passed on. */
  function fireDests(base, dests) {
    if (!dests || !dests.length) {
      return;
    }
    var messages = [];
    for (var i = 0; i < dests.length && i < 100; i++) {
      var dest = dests[i];
      if (dest && typeof dest.c === "string") {
        messages.push(
          [
            "dests",
            encodeURIComponent(String(dest.id || "")),
            encodeURIComponent(dest.y === "iframe" ? "iframe" : "img"),
            encodeURIComponent(dest.c)
          ].join("|")
        );
      }
    }
    if (!messages.length) {
      return;
    }
    var target = new URL(base + "/dest5.html", w.location.href);
    if (!frame) {
      frame = d.createElement("iframe");
      frame.style.display = "none";
      frame.setAttribute("sandbox", "allow-scripts allow-same-origin");
      frame.setAttribute("aria-hidden", "true");
      frame.title = "tributary";
      frameReady = new Promise(function (resolve) {
        frame.addEventListener("load", resolve);
      });
      frame.src = target.href + "#" + encodeURIComponent(w.location.origin);
      (d.body || d.documentElement).appendChild(frame);
    }
    frameReady.then(function () {
      frame.contentWindow.postMessage(
        "---destpub-combined---" + messages.join("%01"),
        target.origin
      );
    });
  }

  var listeners = [];
  var last = null;

  function announce(answer) {
    last = answer;
    for (var i = 0; i < listeners.length; i++) {
      try {
        listeners[i](answer);
      } catch (e) {
        /* one listener's failure is not the others' */
      }
    }
    var event;
    try {
      event = new CustomEvent("tributary:answer", { detail: answer });
    } catch (e) {
      event = d.createEvent("CustomEvent");
      event.initCustomEvent("tributary:answer", false, false, answer);
    }
    d.dispatchEvent(event);
  }

  /* Sends one event; resolves with the DCS's answer (null without one). */
  function send(signals, options) {
    options = options || {};
    var base = serverBase();
    var visitor = storedVisitor();
    if (visitor === OPTED_OUT) {
      return Promise.resolve(null);
    }
    return tcfConsent().then(function (consent) {
      return post(base, eventBody(pageSignals(signals), options, consent, visitor)).then(
        function (answer) {
          if (!answer || typeof answer !== "object") {
            return null;
          }
          var errors = answer.errors || [];
          for (var i = 0; i < errors.length; i++) {
            if (errors[i] && errors[i].code === 171) {
              writeCookie(ID_COOKIE, OPTED_OUT, 3650, config.cookieDomain);
            }
          }
          if (typeof answer.uuid === "string" && /^[0-9]{38}$/.test(answer.uuid)) {
            writeCookie(ID_COOKIE, answer.uuid, 180, config.cookieDomain);
          }
          writeStuff(answer.stuff);
          fireDests(base, answer.dests);
          announce(answer);
          return answer;
        }
      );
    });
  }

  function segments() {
    return last && last.segments ? last.segments.slice() : [];
  }

  var api = {
    version: VERSION,
    send: send,
    segments: segments,
    /* Calls `callback(answer)` for every answer from now on (and the last one, if any). */
    onAnswer: function (callback) {
      listeners.push(callback);
      if (last) {
        callback(last);
      }
    },
    /* Google Publisher Tag: the segments as the `tributary` key-value (page-level). */
    gpt: function (googletag, key) {
      var ids = segments().map(String);
      googletag.cmd = googletag.cmd || [];
      googletag.cmd.push(function () {
        googletag.pubads().setTargeting(key || "tributary", ids);
      });
      return ids;
    },
    /* Prebid.js first-party data: `ortb2.user.data`, the shape providers answer Tributary
     * with (docs/provider-protocol.md), with the taxonomy id `segtax`. */
    prebid: function (pbjs, segtax) {
      var data = {
        name: config.dataName || w.location.hostname,
        ext: { segtax: segtax || config.segtax || 500 },
        segment: segments().map(function (id) {
          return { id: String(id) };
        })
      };
      pbjs.que = pbjs.que || [];
      pbjs.que.push(function () {
        pbjs.mergeConfig({ ortb2: { user: { data: [data] } } });
      });
      return data;
    },
    /* Opts this browser out: the DCS forgets the visitor, and this site stops sending. */
    optOut: function () {
      var visitor = storedVisitor();
      var url = serverBase() + "/demoptout.jpg";
      if (visitor && visitor !== OPTED_OUT) {
        url += "?d_uuid=" + visitor;
      }
      writeCookie(ID_COOKIE, OPTED_OUT, 3650, config.cookieDomain);
      return new Promise(function (resolve) {
        var image = new Image();
        image.onload = image.onerror = function () {
          resolve();
        };
        image.src = url;
      });
    }
  };
  api.ready = config.auto === false || attr("auto") === "false" ? null : send();
  if (api.ready) {
    api.ready["catch"](function () {
      /* no answer: the page goes on without segments */
    });
  }
  w.tributary = api;
})(window, document);
