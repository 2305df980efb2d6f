/* The demo pages' display: the last answer, this site's cookies, the destinations fired. */
(function () {
  "use strict";
  function show(id, value) {
    document.getElementById(id).textContent = value;
  }
  function render(answer) {
    if (!answer) {
      show("uuid", "no answer (opted out, or the DCS is not reachable)");
      return;
    }
    show("uuid", answer.uuid || "(none: " + JSON.stringify(answer.errors || []) + ")");
    show("traits", JSON.stringify(answer.traits || []));
    show("segments", JSON.stringify(answer.segments || []));
    show("providers", JSON.stringify(answer.providers || {}));
    show("cookies", document.cookie || "(none)");
  }
  function poll() {
    fetch("/fired").then(function (r) { return r.json(); }).then(function (fired) {
      show("fired", fired.length ? fired.join("\n") : "none yet");
    });
  }
  setInterval(poll, 1000);
  window.demo = { render: render, show: show };
  if (window.tributary) {
    tributary.onAnswer(render);
    var buttons = document.querySelectorAll("button[data-page], button[data-section], button[data-basket]");
    Array.prototype.forEach.call(buttons, function (b) {
      b.addEventListener("click", function () {
        var signals = {};
        if (b.dataset.page) { signals.c_page = b.dataset.page; }
        if (b.dataset.section) { signals.c_section = b.dataset.section; }
        if (b.dataset.basket) { signals.c_basket = b.dataset.basket; }
        tributary.send(signals).then(render);
      });
    });
    document.getElementById("optout").addEventListener("click", function () {
      tributary.optOut().then(function () { render(null); });
    });
  }
})();
