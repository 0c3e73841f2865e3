// Models console: the model page reloads when a pending evaluation or export of the shown version ends
// (it polls a small state digest), and the alias picker shows the custom alias field for "other…".
(function () {
  "use strict";
  var POLL_MS = 2000;

  function watch(panel) {
    if (!panel || panel.dataset.pending !== "true") return;
    var url = panel.dataset.stateUrl, digest = panel.dataset.digest;
    function tick() {
      fetch(url, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (body) {
          if (body && body.digest !== digest) { window.location.reload(); return; }
          window.setTimeout(tick, POLL_MS);
        })
        .catch(function () { window.setTimeout(tick, POLL_MS * 2); });
    }
    window.setTimeout(tick, POLL_MS);
  }

  function aliasPicker(select) {
    var custom = document.getElementById("custom-alias");
    if (!select || !custom) return;
    select.addEventListener("change", function () {
      custom.hidden = select.value !== "custom";
      if (!custom.hidden) custom.querySelector("input").focus();
    });
  }

  watch(document.getElementById("version-panel"));
  aliasPicker(document.getElementById("alias-select"));
})();
