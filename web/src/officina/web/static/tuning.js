// Tuning console: the New study form's default search spaces, and a study's page (polls the JSON API
// while the study runs and redraws its header, best trial, trials table, the optimisation history
// (uPlot), parallel coordinates (plain SVG) and parameter importances). No other dependency.
(function () {
  "use strict";
  var REFRESH_MS = 3000, SVG = "http://www.w3.org/2000/svg";
  var COLORS = {complete: "#3b5bdb", pruned: "#e8590c", best: "#2b8a3e"};

  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v !== "number") return typeof v === "string" ? v : JSON.stringify(v);
    if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
    var a = Math.abs(v), short = Number(v.toPrecision(4));  // 4 significant digits, no trailing zeros
    return (a !== 0 && (a < 1e-4 || a >= 1e6)) ? short.toExponential() : String(short);
  }
  function cell(v) { return v === null || v === undefined ? "" : fmt(v); }
  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function span(secs) {
    var pad = function (n) { return String(n).padStart(2, "0"); };
    if (secs >= 3600) return Math.floor(secs / 3600) + "h " + pad(Math.floor(secs % 3600 / 60)) + "m";
    if (secs >= 60) return Math.floor(secs / 60) + "m " + pad(secs % 60) + "s";
    return secs + "s";
  }
  function took(start, end) {
    if (!start) return "";
    var secs = Math.round(((end ? Date.parse(end) : Date.now()) - Date.parse(start)) / 1000);
    return span(Math.max(0, secs));
  }
  function utc(iso) { return iso ? iso.slice(0, 19).replace("T", " ") + " UTC" : ""; }
  function api(url) {
    return fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}}).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (r.ok) return body;
        throw new Error((body.error && body.error.message) || r.status + " " + r.statusText + " (" + url + ")");
      });
    });
  }

  // ---- the New study form: each trainer's default space, unless the user edited it -------------------
  function initForm(form) {
    var trainer = document.getElementById("study-trainer"), space = document.getElementById("study-space");
    var defaults = JSON.parse(document.getElementById("default-spaces").textContent);
    trainer.addEventListener("change", function () {
      var untouched = Object.keys(defaults).some(function (k) { return defaults[k].trim() === space.value.trim(); });
      if (untouched && defaults[trainer.value]) space.value = defaults[trainer.value];
    });
  }

  // ---- a study's page ---------------------------------------------------------------------------------
  function initStudy(box) {
    var data = JSON.parse(document.getElementById("study-data").textContent);
    var studyId = box.dataset.study, errorBox = document.getElementById("tuning-error");
    var jobUrl = function (id) { return box.dataset.jobUrl.replace("ID", id); };
    var runUrl = function (id) { return box.dataset.runUrl.replace("ID", id); };
    var history = null, importanceFor = -1, lastParallel = "", keys = data.keys;  // the table's param order

    function showError(message) { errorBox.textContent = message; errorBox.hidden = false; }
    function clearError() { errorBox.hidden = true; errorBox.textContent = ""; }

    function counts(trials) {
      var c = {done: 0, complete: 0, pruned: 0, failed: 0, running: 0};
      trials.forEach(function (t) {
        if (t.state === "complete" || t.state === "pruned" || t.state === "failed") { c.done++; c[t.state]++; }
        else c.running++;
      });
      return c;
    }

    function renderHead(study, trials) {
      var state = document.getElementById("study-state"), reason = document.getElementById("study-reason");
      state.textContent = study.state;
      state.className = "state " + study.state;
      box.dataset.state = study.state;
      reason.textContent = study.reason || "";
      reason.hidden = !study.reason;
      reason.className = "study-reason " + study.state;
      var c = counts(trials);
      document.getElementById("study-progress").textContent = c.done + " of " + study.spec.trials + " done (" +
        c.complete + " complete, " + c.pruned + " pruned, " + c.failed + " failed, " + c.running + " running)";
      document.getElementById("study-ended").textContent = study.finished_at ?
        "· ended " + utc(study.finished_at) + " · took " + took(study.created_at, study.finished_at) : "";
      document.getElementById("stop-form").hidden = study.state !== "running";
      document.getElementById("study-live").textContent = study.state === "running" ? "live, refreshed every 3 s" : "";
    }

    function renderBest(study) {
      var card = document.getElementById("best"), b = study.best;
      var keep = document.getElementById("register-best");  // the server-rendered register form stays
      Array.prototype.slice.call(card.children, 1).forEach(function (n) { if (n !== keep) n.remove(); });
      if (!b) { card.appendChild(el("p", {"class": "muted", id: "best-none"}, "No trial has completed yet.")); return; }
      var head = el("div", {"class": "best-value"});
      head.appendChild(el("span", {"class": "big", id: "best-value"}, fmt(b.value)));
      var note = el("span", {"class": "muted"}, " " + study.spec.metric + " · trial #");
      note.appendChild(el("span", {id: "best-number"}, String(b.number)));
      head.appendChild(document.createTextNode(" "));
      head.appendChild(note);
      card.appendChild(head);
      var table = el("table", {"class": "kv", id: "best-params"});
      keys.forEach(function (k) {
        var tr = el("tr");
        tr.appendChild(el("th", {}, k));
        tr.appendChild(el("td", {"class": "mono"}, cell(b.params[k])));
        table.appendChild(tr);
      });
      card.appendChild(table);
      var links = el("div", {"class": "best-links"});
      if (b.job_id) links.appendChild(el("a", {href: jobUrl(b.job_id), id: "best-job"}, "job"));
      if (b.run_id) {
        links.appendChild(document.createTextNode(" · "));
        links.appendChild(el("a", {href: runUrl(b.run_id), id: "best-run"}, "run"));
      }
      card.appendChild(links);
      if (keep) card.appendChild(keep);
    }

    function renderTrials(study, trials) {
      var body = document.querySelector("#trials tbody");
      var best = study.best ? study.best.number : null;
      document.getElementById("trials-count").textContent = String(trials.length);
      body.textContent = "";
      if (!trials.length) {
        body.appendChild(el("tr")).appendChild(el("td", {colspan: String(6 + keys.length), "class": "muted"},
                                                    "No trials yet."));
        return;
      }
      trials.forEach(function (t) {
        var tr = el("tr", {"data-number": String(t.number), "data-state": t.state,
                           "class": "trial-" + t.state + (t.number === best ? " best" : "")});
        tr.appendChild(el("td", {"class": "num"}, String(t.number)));
        var st = el("td");
        st.appendChild(el("span", {"class": "state " + t.state}, t.state));
        if (t.state === "running" && t.job_state && t.job_state !== "running")
          st.appendChild(el("span", {"class": "muted small"}, " job " + t.job_state));
        if (t.reason) st.appendChild(el("div", {"class": "trial-reason small"}, t.reason));
        tr.appendChild(st);
        keys.forEach(function (k) { tr.appendChild(el("td", {"class": "mono"}, cell(t.params[k]))); });
        tr.appendChild(el("td", {"class": "num value"}, cell(t.value)));
        tr.appendChild(el("td", {"class": "num muted"}, t.last_step === null ? "" : String(t.last_step)));
        var links = el("td", {"class": "nowrap"});
        if (t.job_id) links.appendChild(el("a", {href: jobUrl(t.job_id), "class": "job-link"}, "job"));
        if (t.run_id) {
          links.appendChild(document.createTextNode(" · "));
          links.appendChild(el("a", {href: runUrl(t.run_id), "class": "run-link"}, "run"));
        }
        tr.appendChild(links);
        tr.appendChild(el("td", {"class": "muted nowrap"}, took(t.created_at, t.finished_at)));
        body.appendChild(tr);
      });
    }

    // -- optimisation history: complete and pruned trials' values by number, and the best so far --------
    var INCRS = [];
    for (var e = 0; e < 8; e++) [1, 2, 5].forEach(function (m) { INCRS.push(m * Math.pow(10, e)); });

    function historyData(study, trials) {
      var max = study.spec.mode === "max", best = null, xs = [], done = [], pruned = [], bests = [];
      trials.forEach(function (t) {
        var hasValue = t.value !== null && t.value !== undefined;
        if (!(hasValue && (t.state === "complete" || t.state === "pruned"))) return;
        xs.push(t.number);
        done.push(t.state === "complete" ? t.value : null);
        pruned.push(t.state === "pruned" ? t.value : null);
        if (t.state === "complete" && (best === null || (max ? t.value > best : t.value < best))) best = t.value;
        bests.push(best);
      });
      return [xs, done, pruned, bests];
    }

    // A series' value under the cursor, or its last value when the cursor is elsewhere.
    function legendValue(u, v, si, idx) {
      if (idx === null || idx === undefined) {
        var ys = u.data[si];
        for (var i = ys.length - 1; i >= 0; i--) if (ys[i] !== null && ys[i] !== undefined) return fmt(ys[i]);
        return "–";
      }
      return fmt(v);
    }

    function renderHistory(study, trials) {
      var chart = document.getElementById("history"), bodyEl = document.getElementById("history-body");
      var data = historyData(study, trials);
      chart.dataset.points = String(data[0].length);
      chart.dataset.complete = String(data[1].filter(function (v) { return v !== null; }).length);
      chart.dataset.pruned = String(data[2].filter(function (v) { return v !== null; }).length);
      if (!data[0].length) {
        if (history) { history.destroy(); history = null; }
        bodyEl.textContent = "";
        bodyEl.appendChild(el("p", {"class": "muted charts-empty"}, "No trial has reported " + study.spec.metric + " yet."));
        return;
      }
      if (!window.uPlot) { bodyEl.textContent = "The chart library did not load."; return; }
      if (history) { history.setData(data); return; }
      bodyEl.textContent = "";
      var stepped = window.uPlot.paths && window.uPlot.paths.stepped ? window.uPlot.paths.stepped({align: 1}) : undefined;
      history = new window.uPlot({
        width: bodyEl.clientWidth || 600, height: 240,
        scales: {x: {time: false}},
        legend: {live: true},
        axes: [{label: "trial", size: 44, incrs: INCRS, values: function (u, vals) { return vals.map(fmt); }},
               {size: 60, values: function (u, vals) { return vals.map(fmt); }}],
        series: [
          {label: "trial", value: function (u, v, si, idx) {
            var xs = u.data[0];
            if (idx === null || idx === undefined) return xs.length ? "#" + xs[xs.length - 1] : "–";
            return "#" + v;
          }},
          {label: "complete", stroke: COLORS.complete, fill: COLORS.complete, paths: function () { return null; },
           points: {show: true, size: 9, fill: COLORS.complete, stroke: COLORS.complete},
           value: legendValue},
          {label: "pruned", stroke: COLORS.pruned, paths: function () { return null; },
           points: {show: true, size: 9, fill: "#fff", stroke: COLORS.pruned, width: 2},
           value: legendValue},
          {label: "best so far", stroke: COLORS.best, width: 2, spanGaps: true, paths: stepped,
           points: {show: false}, value: legendValue}
        ]
      }, data, bodyEl);
      var pending = null;
      window.addEventListener("resize", function () {
        clearTimeout(pending);
        pending = setTimeout(function () { if (history) history.setSize({width: bodyEl.clientWidth, height: 240}); }, 150);
      });
    }

    // -- parallel coordinates: one axis per searched parameter (from the space), then the metric ------------
    function dims(study, trials) {
      var out = [], space = study.spec.space;
      keys.forEach(function (k) {
        var d = space[k], dim = {key: k, kind: d.type};
        if (d.type === "choice") {
          dim.categories = d.choices.map(function (c) { return JSON.stringify(c); });
          dim.labels = d.choices.map(function (c) { return typeof c === "string" ? c : JSON.stringify(c); });
        } else {
          dim.min = d.low; dim.max = d.high; dim.log = !!d.log;
        }
        out.push(dim);
      });
      var values = trials.map(function (t) { return t.value; }).filter(function (v) { return typeof v === "number"; });
      var metric = {key: study.spec.metric, kind: "metric", metric: true, flip: study.spec.mode === "min"};
      metric.min = values.length ? Math.min.apply(null, values) : 0;
      metric.max = values.length ? Math.max.apply(null, values) : 1;
      out.push(metric);
      return out;
    }
    function position(dim, v) {  // 0 (bottom) .. 1 (top), or null
      if (v === null || v === undefined) return null;
      if (dim.categories) {
        var i = dim.categories.indexOf(JSON.stringify(v));
        if (i < 0) return null;
        return dim.categories.length > 1 ? i / (dim.categories.length - 1) : 0.5;
      }
      if (typeof v !== "number") return null;
      var t;
      if (dim.log) t = Math.log(v / dim.min) / Math.log(dim.max / dim.min);
      else t = dim.max === dim.min ? 0.5 : (v - dim.min) / (dim.max - dim.min);
      t = Math.min(1, Math.max(0, t));
      return dim.flip ? 1 - t : t;
    }
    function ticks(dim) {
      if (dim.categories) return dim.categories.map(function (c, i) { return {pos: position(dim, JSON.parse(c)), label: dim.labels[i]}; });
      var vs = [];
      if (dim.log) {
        vs.push(dim.min);
        for (var p = Math.ceil(Math.log10(dim.min)); Math.pow(10, p) < dim.max; p++) {
          var d = Math.pow(10, p);
          if (d / dim.min > 1.5 && dim.max / d > 1.5) vs.push(d);
        }
        vs.push(dim.max);
      } else if (dim.max === dim.min) {
        vs.push(dim.min);
      } else {
        for (var i = 0; i <= 4; i++) vs.push(dim.min + (dim.max - dim.min) * i / 4);
      }
      return vs.map(function (v) { return {pos: position(dim, v), label: fmt(Number(v.toPrecision(3)))}; });
    }
    function shade(t) {  // 0 worst .. 1 best: light grey-blue to the brand's blue
      var a = [173, 184, 214], b = [34, 62, 190];
      return "rgb(" + a.map(function (x, i) { return Math.round(x + (b[i] - x) * t); }).join(",") + ")";
    }

    function renderParallel(study, trials) {
      var boxEl = document.getElementById("study-parallel");
      var shown = trials.filter(function (t) {
        return (t.state === "complete" || t.state === "pruned") && typeof t.value === "number";
      });
      var key = JSON.stringify([boxEl.clientWidth, study.best && study.best.number, shown.map(function (t) {
        return [t.number, t.state, t.value];
      })]);
      if (key === lastParallel) return;
      lastParallel = key;
      boxEl.textContent = "";
      boxEl.dataset.lines = String(shown.length);
      if (!shown.length) {
        boxEl.appendChild(el("p", {"class": "muted"}, "Lines appear here as trials report " + study.spec.metric + "."));
        return;
      }
      var ds = dims(study, shown), metric = ds[ds.length - 1];
      var width = Math.max(boxEl.clientWidth, 130 * ds.length), height = 300;
      var top = 46, bottom = 24, left = 60, right = 90, step = (width - left - right) / Math.max(1, ds.length - 1);
      var root = svg("svg", {width: width, height: height, viewBox: "0 0 " + width + " " + height,
                             "class": "parallel-svg study-parallel-svg", role: "img", "aria-label": "parallel coordinates"});
      function x(i) { return left + i * step; }
      function y(t) { return top + (1 - t) * (height - top - bottom); }
      var lines = svg("g", {"class": "lines"}), best = study.best ? study.best.number : null;
      // worst first, so the best lines are drawn on top; the best trial last
      shown.slice().sort(function (a, b) {
        if (a.number === best) return 1;
        if (b.number === best) return -1;
        return position(metric, a.value) - position(metric, b.value);
      }).forEach(function (t) {
        var pts = [];
        ds.forEach(function (dim, i) {
          var p = position(dim, dim.metric ? t.value : t.params[dim.key]);
          if (p !== null) pts.push(x(i).toFixed(1) + "," + y(p).toFixed(1));
        });
        var isBest = t.number === best, pruned = t.state === "pruned";
        var color = isBest ? COLORS.best : pruned ? COLORS.pruned : shade(position(metric, t.value));
        var line = svg("polyline", {points: pts.join(" "), stroke: color, "data-trial": String(t.number),
                                    "class": "run-line trial-line" + (pruned ? " pruned" : "") + (isBest ? " best" : "")});
        line.appendChild(svg("title", {}, "trial #" + t.number + (pruned ? " (pruned)" : "") + ": " +
                                          study.spec.metric + " = " + fmt(t.value)));
        line.addEventListener("mouseenter", function () { root.classList.add("hovering"); line.classList.add("hot"); });
        line.addEventListener("mouseleave", function () { root.classList.remove("hovering"); line.classList.remove("hot"); });
        lines.appendChild(line);
      });
      root.appendChild(lines);
      var axes = svg("g", {"class": "axes"});
      ds.forEach(function (dim, i) {
        var g = svg("g", {"class": "axis " + (dim.metric ? "metric" : "param"), "data-key": dim.key});
        g.appendChild(svg("line", {x1: x(i), x2: x(i), y1: top, y2: height - bottom}));
        var name = dim.key.length > 18 ? dim.key.slice(0, 17) + "…" : dim.key;
        g.appendChild(svg("text", {x: x(i), y: 16, "text-anchor": "middle", "class": "axis-label"}, name));
        var kind = dim.metric ? (dim.flip ? "lower is better ↑" : "higher is better ↑") :
          dim.categories ? "choice" : dim.kind + (dim.log ? " · log" : "");
        g.appendChild(svg("text", {x: x(i), y: 31, "text-anchor": "middle", "class": "axis-kind"}, kind));
        ticks(dim).forEach(function (tk) {
          if (tk.pos === null) return;
          var yy = y(tk.pos);
          g.appendChild(svg("line", {x1: x(i) - 4, x2: x(i) + 4, y1: yy, y2: yy}));
          var label = tk.label.length > 12 ? tk.label.slice(0, 11) + "…" : tk.label;
          g.appendChild(svg("text", {x: x(i) + 7, y: yy + 4, "class": "tick"}, label));
        });
        axes.appendChild(g);
      });
      root.appendChild(axes);
      boxEl.appendChild(root);
      var legend = el("div", {"class": "parallel-legend muted small"});
      [["best trial", COLORS.best], ["complete (darker is better)", shade(1)], ["pruned", COLORS.pruned]]
        .forEach(function (item) {
          var s = el("span", {"class": "swatch"});
          s.style.background = item[1];
          legend.appendChild(s);
          legend.appendChild(document.createTextNode(item[0] + "  "));
        });
      boxEl.appendChild(legend);
    }

    function renderImportance(importance, complete) {
      var box = document.getElementById("importance"), keys = Object.keys(importance);
      box.textContent = "";
      if (!keys.length) {
        box.appendChild(el("p", {"class": "muted"}, "Importances need at least 3 complete trials with differing values (" +
                                                    complete + " so far)."));
        return;
      }
      keys.sort(function (a, b) { return importance[b] - importance[a]; });
      var top = importance[keys[0]];
      keys.forEach(function (k) {
        var row = el("div", {"class": "imp-row", "data-param": k});
        row.appendChild(el("span", {"class": "imp-name"}, k));
        var bar = el("span", {"class": "imp-bar"}), fill = el("span");
        fill.style.width = (top > 0 ? 100 * importance[k] / top : 0) + "%";
        bar.appendChild(fill);
        row.appendChild(bar);
        row.appendChild(el("span", {"class": "imp-value"}, fmt(importance[k])));
        box.appendChild(row);
      });
    }

    function render(study, trials) {
      renderHead(study, trials);
      renderBest(study);
      renderTrials(study, trials);
      renderHistory(study, trials);
      renderParallel(study, trials);
    }

    function refreshImportance(trials) {
      var complete = counts(trials).complete;
      if (complete === importanceFor) return Promise.resolve();
      return api("/api/v1/studies/" + studyId + "/importance").then(function (body) {
        importanceFor = complete;
        renderImportance(body.importance, complete);
      });
    }

    function tick() {
      api("/api/v1/studies/" + studyId).then(function (body) {
        data.study = body.study; data.trials = body.trials;
        render(body.study, body.trials);
        clearError();
        return refreshImportance(body.trials).then(function () { return body.study.state; });
      }).then(function (state) {
        if (state === "running") setTimeout(tick, REFRESH_MS);
      }).catch(function (err) {
        showError(err.message);
        setTimeout(tick, REFRESH_MS * 2);
      });
    }

    render(data.study, data.trials);
    importanceFor = counts(data.trials).complete;  // the server drew these importances
    var pending = null;
    window.addEventListener("resize", function () {
      clearTimeout(pending);
      pending = setTimeout(function () { renderParallel(data.study, data.trials); }, 150);
    });
    if (data.study.state === "running") setTimeout(tick, REFRESH_MS);
  }

  var form = document.getElementById("new-study"), study = document.getElementById("study");
  if (form) initForm(form);
  if (study) initStudy(study);
})();
