// Experiments console: the runs table's controls, live metric charts (uPlot) on a run's page and on the
// comparison page, and the comparison's parallel-coordinates view (plain SVG). No other dependency.
(function () {
  "use strict";
  var REFRESH_MS = 2000, MAX_POINTS = 1000, SVG = "http://www.w3.org/2000/svg";
  var errorBox = document.getElementById("exp-error");

  function showError(message) {
    if (!errorBox) return;
    errorBox.textContent = message;
    errorBox.hidden = false;
  }
  function clearError() {
    if (errorBox && errorBox.dataset.js) { errorBox.hidden = true; errorBox.textContent = ""; }
  }
  function api(url) {
    return fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}}).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (body) {
        if (r.ok) return body;
        throw new Error((body.error && body.error.message) || r.status + " " + r.statusText + " (" + url + ")");
      });
    });
  }
  function fmt(v) {
    if (v === null || v === undefined) return "–";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
    var a = Math.abs(v);
    var short = Number(v.toPrecision(4));  // 4 significant digits, no trailing zeros
    return (a !== 0 && (a < 1e-4 || a >= 1e6)) ? short.toExponential() : String(short);
  }
  function bytes(n) {
    var units = ["Bytes", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return i === 0 ? n + " Bytes" : n.toFixed(1) + " " + units[i];
  }
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
  // Nested params as one level with dotted keys, as the server shows them.
  function flatten(obj, prefix, out) {
    out = out || {};
    Object.keys(obj).forEach(function (k) {
      var v = obj[k], name = (prefix || "") + k;
      if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length) flatten(v, name + ".", out);
      else out[name] = v;
    });
    return out;
  }
  function time(iso) { return iso ? iso.slice(11, 19) : ""; }
  function enc(path) { return path.split("/").map(encodeURIComponent).join("/"); }

  // ---- the runs table -------------------------------------------------------------------------------
  function initRunsTable(table) {
    var form = document.getElementById("run-filters"), picker = document.getElementById("column-picker");
    Array.prototype.forEach.call(form.querySelectorAll("[data-autosubmit]"), function (s) {
      s.addEventListener("change", function () { form.submit(); });
    });
    picker.addEventListener("toggle", function () {  // open the list leftwards when it would leave the window
      var list = picker.querySelector(".column-lists");
      picker.classList.remove("leftwards");
      if (picker.open && list.getBoundingClientRect().right > document.documentElement.clientWidth - 8)
        picker.classList.add("leftwards");
    });
    if (sessionStorage.getItem("officina.columns-open")) {
      sessionStorage.removeItem("officina.columns-open");
      picker.open = true;
    }
    Array.prototype.forEach.call(picker.querySelectorAll("input[type=checkbox]"), function (c) {
      c.addEventListener("change", function () {
        sessionStorage.setItem("officina.columns-open", "1");
        form.submit();
      });
    });
    var button = document.getElementById("compare-button"), hint = document.getElementById("compare-hint");
    var max = Number(button.dataset.max), boxes = table.querySelectorAll("input[name=run]");
    function picked() {
      return Array.prototype.filter.call(boxes, function (b) { return b.checked; })
        .map(function (b) { return b.value; });
    }
    function sync() {
      var n = picked().length;
      button.disabled = n < 2 || n > max;
      var why = n > max ? " (at most " + max + ")" : n < 2 ? " (tick at least 2)" : "";
      hint.textContent = n === 0 ? "Tick 2–" + max + " runs to compare them." :
        n + " run" + (n === 1 ? "" : "s") + " ticked" + why;
      Array.prototype.forEach.call(boxes, function (b) { b.closest("tr").classList.toggle("picked", b.checked); });
    }
    Array.prototype.forEach.call(boxes, function (b) { b.addEventListener("change", sync); });
    document.getElementById("compare-form").addEventListener("submit", function (e) {
      e.preventDefault();
      var ids = picked();
      if (ids.length >= 2 && ids.length <= max) location.href = this.action + "?runs=" + ids.join(",");
    });
    sync();
  }

  // ---- charts ---------------------------------------------------------------------------------------
  // Steps of ``n`` runs' points on one x axis; a run without a point at a step (or without the metric:
  // ``lists[i]`` undefined) gets null there.
  function merge(lists, n) {
    var seen = {}, steps = [], i;
    for (i = 0; i < n; i++) {
      (lists[i] || []).forEach(function (p) { if (!(p[0] in seen)) { seen[p[0]] = true; steps.push(p[0]); } });
    }
    steps.sort(function (a, b) { return a - b; });
    var index = {};
    steps.forEach(function (s, j) { index[s] = j; });
    var data = [steps];
    for (i = 0; i < n; i++) {
      var ys = new Array(steps.length).fill(null);
      (lists[i] || []).forEach(function (p) { ys[index[p[0]]] = p[1]; });
      data.push(ys);
    }
    return data;
  }

  // Steps are whole numbers: ticks at 1, 2, 5 × 10^n.
  var STEP_INCRS = [];
  for (var e = 0; e < 16; e++) [1, 2, 5].forEach(function (m) { STEP_INCRS.push(m * Math.pow(10, e)); });

  // A series' value under the cursor, or its last value when the cursor is elsewhere.
  function legendValue(u, v, si, idx) {
    if (idx === null || idx === undefined) {
      var ys = u.data[si];
      for (var i = ys.length - 1; i >= 0; i--) if (ys[i] !== null && ys[i] !== undefined) return fmt(ys[i]);
      return "–";
    }
    return fmt(v);
  }

  function ChartSet(main, system, systemSection, runs) {
    this.main = main; this.system = system; this.systemSection = systemSection; this.runs = runs;
    this.charts = {};
    var self = this, pending = null;
    window.addEventListener("resize", function () {
      clearTimeout(pending);
      pending = setTimeout(function () {
        Object.keys(self.charts).forEach(function (k) {
          var c = self.charts[k];
          if (c.plot) c.plot.setSize({width: c.body.clientWidth, height: c.plot.height});
        });
      }, 150);
    });
  }
  ChartSet.prototype.draw = function (key, lists, note) {
    var chart = this.charts[key] || this.create(key);
    var data = merge(lists, this.runs.length), counts = data.slice(1).map(function (ys) {
      return ys.filter(function (v) { return v !== null; }).length;
    });
    chart.box.dataset.series = String(this.runs.length);
    chart.box.dataset.points = String(Math.max.apply(null, counts.concat([0])));
    chart.note.textContent = note || "";
    if (!window.uPlot) { chart.body.textContent = "The chart library did not load."; return; }
    if (!chart.plot) {
      var single = this.runs.length === 1;
      chart.plot = new window.uPlot({
        width: chart.body.clientWidth || 480, height: 210,
        scales: {x: {time: false}},
        cursor: {sync: {key: "officina-metrics"}},
        hooks: {setScale: [function (u, scale) {  // what the x axis shows, for people and for tests
          if (scale === "x") chart.box.dataset.xMax = String(u.scales.x.max);
        }]},
        legend: {live: true},
        axes: [{size: 32, incrs: STEP_INCRS, values: function (u, vals) { return vals.map(fmt); }},
               {size: 60, values: function (u, vals) { return vals.map(fmt); }}],
        series: [{label: "step", value: function (u, v, si, idx) {  // the last step when not hovering
          var xs = u.data[0];
          return idx === null || idx === undefined ? (xs.length ? String(xs[xs.length - 1]) : "–") : String(v);
        }}]
          .concat(this.runs.map(function (r) {
            return {label: single ? key : r.name, stroke: r.color, width: 1.6, spanGaps: true,
                    points: {size: 5, fill: r.color}, value: legendValue};
          }))
      }, data, chart.body);
    } else {
      chart.plot.setData(data);  // uPlot shows dots by itself while the points are few
    }
  };
  ChartSet.prototype.create = function (key) {
    var isSystem = key.indexOf("system/") === 0, parent = isSystem ? this.system : this.main;
    if (isSystem && this.systemSection) this.systemSection.hidden = false;
    var empty = parent.querySelector(".charts-empty");
    if (empty) empty.remove();
    var box = el("div", {"class": "chart", "data-key": key});
    var head = el("div", {"class": "chart-title"});
    head.appendChild(el("span", {"class": "chart-key"}, isSystem ? key.slice(7) : key));
    var note = el("span", {"class": "muted chart-note"});
    head.appendChild(note);
    var body = el("div", {"class": "chart-body"});
    box.appendChild(head); box.appendChild(body);
    var after = Array.prototype.find.call(parent.children, function (c) { return c.dataset.key > key; });
    parent.insertBefore(box, after || null);
    return (this.charts[key] = {box: box, body: body, note: note, plot: null});
  };
  ChartSet.prototype.empty = function () {
    if (this.main.children.length === 0 && this.main.dataset.empty)
      this.main.appendChild(el("p", {"class": "muted charts-empty"}, this.main.dataset.empty));
  };

  // Polls runs' metrics; refetches a metric's history when its point count changed. Runs are
  // [{id, name, color, status}]; onTick(run, summaries, body) lets a page update its own parts.
  function Tracker(runs, charts, onTick) {
    this.runs = runs; this.charts = charts; this.onTick = onTick || function () {};
    this.counts = runs.map(function () { return {}; });
    this.history = {};  // key -> [points per run]
    this.notes = {};
    this.first = true;
  }
  Tracker.prototype.tick = function () {
    var self = this, live = this.runs.filter(function (r) { return self.first || r.status === "running"; });
    return Promise.all(live.map(function (run) {
      var i = self.runs.indexOf(run);
      return Promise.all([api("/api/v1/runs/" + run.id), api("/api/v1/runs/" + run.id + "/metrics")])
        .then(function (bodies) {
          var wasRunning = run.status === "running";
          run.status = bodies[0].run.status;
          var summaries = bodies[1].metrics, changed = Object.keys(summaries).filter(function (k) {
            return self.counts[i][k] !== summaries[k].count;
          });
          return Promise.all(changed.map(function (key) {
            return api("/api/v1/runs/" + run.id + "/metrics/" + enc(key) + "?max_points=" + MAX_POINTS)
              .then(function (h) {
                self.counts[i][key] = summaries[key].count;
                (self.history[key] = self.history[key] || new Array(self.runs.length))[i] = h.points;
                self.notes[key] = self.notes[key] || {};
                self.notes[key][i] = h.downsampled ? h.total : 0;
                return key;
              });
          })).then(function (keys) {
            self.onTick(run, summaries, bodies[0].run, wasRunning);
            return keys;
          });
        });
    })).then(function (perRun) {
      var keys = {};
      perRun.forEach(function (ks) { ks.forEach(function (k) { keys[k] = true; }); });
      Object.keys(keys).sort().forEach(function (key) {
        var totals = Object.keys(self.notes[key]).map(function (i) { return self.notes[key][i]; })
          .filter(function (n) { return n > 0; });
        self.charts.draw(key, self.history[key],
          totals.length ? "downsampled from " + Math.max.apply(null, totals) + " points" : "");
      });
      if (self.first) self.charts.empty();
      self.first = false;
      clearError();
      return self.runs.some(function (r) { return r.status === "running"; });
    });
  };
  Tracker.prototype.start = function (note) {
    var self = this;
    function loop() {
      self.tick().then(function (running) {
        if (note) note.textContent = running ? "live, refreshed every 2 s" : "";
        if (running) setTimeout(loop, REFRESH_MS);
      }).catch(function (err) {
        showError(err.message);
        setTimeout(loop, REFRESH_MS * 3);
      });
    }
    loop();
  };

  // ---- a run's page ---------------------------------------------------------------------------------
  function initRunPage(box) {
    var run = {id: box.dataset.run, name: "", color: "#3b5bdb", status: box.dataset.status};
    var charts = new ChartSet(document.getElementById("charts-main"), document.getElementById("charts-system"),
                              document.getElementById("system-section"), [run]);
    var ticks = 0;
    var tracker = new Tracker([run], charts, function (r, summaries, record, wasRunning) {
      var badge = document.getElementById("run-status");
      badge.textContent = record.status;
      badge.className = "state " + record.status;
      box.dataset.status = record.status;
      renderSummary(summaries);
      renderParams(record.params);
      ticks++;
      if (record.status === "running") {
        var so = Math.max(0, Math.round((Date.now() - Date.parse(record.created_at)) / 1000));
        document.getElementById("run-ended").textContent = "still running (" + span(so) + " so far)";
      }
      if (wasRunning && (record.status !== "running" || ticks % 5 === 0)) refreshLists(record);
      if (wasRunning && record.status !== "running" && record.ended_at) {
        var secs = Math.max(0, Math.round((Date.parse(record.ended_at) - Date.parse(record.created_at)) / 1000));
        document.getElementById("run-ended").textContent = record.ended_at.slice(0, 19).replace("T", " ") +
          " UTC · took " + span(secs);
      }
    });
    tracker.start(document.getElementById("charts-note"));

    function canonical(flat) {
      return JSON.stringify(Object.keys(flat).sort().map(function (k) { return [k, flat[k]]; }));
    }
    var shownParams = canonical(JSON.parse(document.getElementById("params").dataset.params || "{}"));
    function renderParams(params) {  // a job's trainer logs its full params once it starts
      var flat = flatten(params || {}), keys = Object.keys(flat).sort(), text = canonical(flat);
      if (text === shownParams || !keys.length) return;
      shownParams = text;
      var table = document.getElementById("params");
      table.textContent = "";
      keys.forEach(function (k) {
        var tr = el("tr");
        tr.appendChild(el("th", {}, k));
        var v = flat[k];
        var text = v === null ? "" : typeof v === "object" ? JSON.stringify(v) : fmt(v);
        tr.appendChild(el("td", {"class": "mono"}, text));
        table.appendChild(tr);
      });
    }
    function renderSummary(summaries) {
      var body = document.querySelector("#metric-summary tbody"), keys = Object.keys(summaries).sort();
      if (!keys.length) return;
      body.textContent = "";
      keys.forEach(function (k) {
        var s = summaries[k], tr = el("tr", {"data-key": k});
        tr.appendChild(el("td", {}, k));
        [s.last, s.min, s.max, s.step].forEach(function (v) { tr.appendChild(el("td", {"class": "num"}, fmt(v))); });
        body.appendChild(tr);
      });
    }
    function refreshLists(record) {
      var base = "/api/v1/runs/" + record.id;
      api(base + "/artifacts").then(function (b) {
        if (!b.artifacts.length) return;
        var body = document.querySelector("#artifacts tbody");
        body.textContent = "";
        b.artifacts.forEach(function (a) {
          var tr = el("tr"), td = el("td");
          td.appendChild(el("a", {href: base + "/artifacts/" + enc(a.path), download: ""}, a.path));
          tr.appendChild(td);
          tr.appendChild(el("td", {}, a.kind));
          tr.appendChild(el("td", {"class": "num"}, bytes(a.size)));
          tr.appendChild(el("td", {"class": "muted nowrap"}, time(a.created_at)));
          body.appendChild(tr);
        });
      }).catch(function (err) { showError(err.message); });
      api(base + "/checkpoints").then(function (b) {
        if (!b.checkpoints.length) return;
        var body = document.querySelector("#checkpoints tbody");
        body.textContent = "";
        b.checkpoints.forEach(function (c) {
          var tr = el("tr"), td = el("td", {"class": "num"});
          td.appendChild(el("a", {href: base + "/checkpoints/" + c.step, download: ""}, String(c.step)));
          tr.appendChild(td);
          tr.appendChild(el("td", {"class": "num"}, bytes(c.size)));
          tr.appendChild(el("td", {"class": "num"}, c.attempt === null ? "" : String(c.attempt)));
          tr.appendChild(el("td", {"class": "muted nowrap"}, time(c.created_at)));
          body.appendChild(tr);
        });
      }).catch(function (err) { showError(err.message); });
    }
  }

  // ---- comparing runs -------------------------------------------------------------------------------
  function initComparePage(dataEl) {
    var data = JSON.parse(dataEl.textContent);
    var runs = data.map(function (r) { return {id: r.id, name: r.name, color: r.color, status: r.status}; });
    var charts = new ChartSet(document.getElementById("charts-main"), document.getElementById("charts-system"),
                              document.getElementById("system-section"), runs);
    new Tracker(runs, charts).start(document.getElementById("charts-note"));
    var only = document.getElementById("only-differing"), table = document.getElementById("params-diff");
    only.addEventListener("change", function () { table.classList.toggle("only-differing", only.checked); });
    var box = document.getElementById("parallel");
    drawParallel(box, data);
    var pending = null;
    window.addEventListener("resize", function () {
      clearTimeout(pending);
      pending = setTimeout(function () { drawParallel(box, data); }, 150);
    });
  }

  // One vertical axis per param that differs and per (non-system) metric's last value; one line per run.
  function dimensions(data) {
    var dims = [];
    function add(kind, key, values) {
      var present = values.filter(function (v) { return v !== undefined && v !== null; });
      if (!present.length) return;
      var numeric = present.every(function (v) { return typeof v === "number" && isFinite(v); });
      var dim = {kind: kind, key: key, values: values, numeric: numeric};
      if (numeric) {
        dim.min = Math.min.apply(null, present); dim.max = Math.max.apply(null, present);
        dim.log = dim.min > 0 && dim.max / dim.min >= 20;  // e.g. learning rates 0.1, 0.01, 0.001
        var distinct = present.filter(function (v, i) { return present.indexOf(v) === i; });
        dim.ticks = distinct.length <= 5 ? distinct : [dim.min, dim.max];
      } else {
        var labels = {};
        present.forEach(function (v) { labels[typeof v === "string" ? v : JSON.stringify(v)] = true; });
        dim.categories = Object.keys(labels).sort();
      }
      dims.push(dim);
    }
    var params = {}, metrics = {};
    data.forEach(function (r) {
      Object.keys(r.params).forEach(function (k) { params[k] = true; });
      Object.keys(r.metrics).forEach(function (k) { if (k.indexOf("system/") !== 0) metrics[k] = true; });
    });
    Object.keys(params).sort().forEach(function (k) {
      var values = data.map(function (r) { return r.params[k]; });
      var distinct = {};
      values.forEach(function (v) { distinct[JSON.stringify(v === undefined ? null : v)] = true; });
      if (Object.keys(distinct).length > 1) add("param", k, values);
    });
    Object.keys(metrics).sort().forEach(function (k) {
      add("metric", k, data.map(function (r) { return r.metrics[k]; }));
    });
    return dims;
  }

  function drawParallel(box, data) {
    box.textContent = "";
    var dims = dimensions(data);
    if (!dims.length) {
      box.appendChild(el("p", {"class": "muted"}, "Nothing to draw: these runs share every param and log no metrics."));
      return;
    }
    var width = Math.max(box.clientWidth, 120 * dims.length), height = 300;
    var top = 46, bottom = 34, left = 70, right = 70;
    var step = dims.length > 1 ? (width - left - right) / (dims.length - 1) : 0;
    var root = svg("svg", {width: width, height: height, viewBox: "0 0 " + width + " " + height,
                           "class": "parallel-svg", role: "img", "aria-label": "parallel coordinates"});
    function x(i) { return dims.length > 1 ? left + i * step : width / 2; }
    function y(dim, v) {
      if (v === undefined || v === null) return null;
      var t;
      if (dim.numeric && dim.log) t = Math.log(v / dim.min) / Math.log(dim.max / dim.min);
      else if (dim.numeric) t = dim.max === dim.min ? 0.5 : (v - dim.min) / (dim.max - dim.min);
      else {
        var idx = dim.categories.indexOf(typeof v === "string" ? v : JSON.stringify(v));
        t = dim.categories.length > 1 ? idx / (dim.categories.length - 1) : 0.5;
      }
      return top + (1 - t) * (height - top - bottom);
    }
    var axes = svg("g", {"class": "axes"});
    dims.forEach(function (dim, i) {
      var g = svg("g", {"class": "axis " + dim.kind, "data-key": dim.key});
      g.appendChild(svg("line", {x1: x(i), x2: x(i), y1: top, y2: height - bottom}));
      var name = dim.key.length > 18 ? dim.key.slice(0, 17) + "…" : dim.key;
      var label = svg("text", {x: x(i), y: 16, "text-anchor": "middle", "class": "axis-label"}, name);
      label.appendChild(svg("title", {}, dim.kind + " " + dim.key));
      g.appendChild(label);
      g.appendChild(svg("text", {x: x(i), y: 31, "text-anchor": "middle", "class": "axis-kind"},
                        dim.kind + (dim.log ? " · log" : "")));
      var ticks = dim.numeric ? dim.ticks : dim.categories;
      ticks.forEach(function (v) {
        var yy = y(dim, v);
        g.appendChild(svg("line", {x1: x(i) - 4, x2: x(i) + 4, y1: yy, y2: yy}));
        var text = dim.numeric ? fmt(v) : (v.length > 12 ? v.slice(0, 11) + "…" : v);
        g.appendChild(svg("text", {x: x(i) + 7, y: yy + 4, "class": "tick"}, text));
      });
      axes.appendChild(g);
    });
    var lines = svg("g", {"class": "lines"});
    data.forEach(function (r, ri) {
      var pts = [];
      dims.forEach(function (dim, i) {
        var yy = y(dim, dim.values[ri]);
        if (yy !== null) pts.push(x(i).toFixed(1) + "," + yy.toFixed(1));
      });
      var line = svg("polyline", {points: pts.join(" "), stroke: r.color, "data-run": r.id, "class": "run-line"});
      line.appendChild(svg("title", {}, r.name));
      lines.appendChild(line);
      pts.forEach(function (p) {
        var xy = p.split(",");
        lines.appendChild(svg("circle", {cx: xy[0], cy: xy[1], r: 3.5, fill: r.color, "data-run": r.id}));
      });
      line.addEventListener("mouseenter", function () {
        root.classList.add("hovering"); line.classList.add("hot");
      });
      line.addEventListener("mouseleave", function () {
        root.classList.remove("hovering"); line.classList.remove("hot");
      });
    });
    root.appendChild(lines);
    root.appendChild(axes);
    box.appendChild(root);
  }

  // ---- which page is this? --------------------------------------------------------------------------
  if (errorBox && errorBox.hidden) errorBox.dataset.js = "1";  // errors shown by the server stay put
  var runsTable = document.getElementById("runs"), runBox = document.getElementById("run");
  var compareData = document.getElementById("compare-data");
  if (runsTable) initRunsTable(runsTable);
  if (runBox) initRunPage(runBox);
  if (compareData) initComparePage(compareData);
})();
