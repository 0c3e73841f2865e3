// Tails a job's log and state on the job page (polls the JSON API; no dependencies).
(function () {
  "use strict";
  var log = document.getElementById("job-log");
  if (!log) return;
  var jobId = log.dataset.job, attempt = log.dataset.attempt, after = 0, stateEl = document.getElementById("job-state");
  var ended = ["succeeded", "failed", "cancelled"];

  function get(url) {
    return fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}}).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) throw new Error((body.error && body.error.message) || r.statusText);
        return body;
      });
    });
  }

  function tick() {
    var q = "/api/v1/jobs/" + jobId + "/logs?after=" + after + (attempt && attempt !== "0" ? "&attempt=" + attempt : "");
    get(q).then(function (body) {
      var stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      body.lines.forEach(function (l) {
        var span = document.createElement("span");
        span.className = "line " + l.stream;
        span.textContent = l.line + "\n";
        log.appendChild(span);
      });
      if (stick) log.scrollTop = log.scrollHeight;
      after = body.next;
      if (!attempt || attempt === "0") attempt = String(body.attempt);
      if (stateEl && stateEl.textContent !== body.state) {
        stateEl.textContent = body.state;
        stateEl.className = "state " + body.state;
        // the run exists once the job has started: reload once to show its link
        if (!document.querySelector("a.run-link") && ["queued", "admitted"].indexOf(body.state) < 0 &&
            ended.indexOf(body.state) < 0) { location.reload(); return; }
      }
      if (ended.indexOf(body.state) >= 0 && body.lines.length === 0) {
        log.dataset.done = "1";
        if (!document.getElementById("job-reload-done")) location.reload();  // show the final events
        return;
      }
      setTimeout(tick, body.lines.length ? 200 : 1000);
    }).catch(function (err) {
      var e = document.createElement("span");
      e.className = "line system";
      e.textContent = "(" + err.message + ")\n";
      log.appendChild(e);
      setTimeout(tick, 3000);
    });
  }
  if (ended.indexOf(stateEl.textContent) >= 0) {
    // an ended job: load the whole log once, no reload loop
    var marker = document.createElement("span"); marker.id = "job-reload-done"; marker.hidden = true;
    document.body.appendChild(marker);
  }
  tick();
})();
