/* Data console: upload files and folders through the builds API with progress, and follow builds.
 *
 * Upload protocol (docs/datasets-api.md): POST …/uploads → POST /builds/<id>/files (declare paths,
 * sizes and SHA-256; the server answers which bytes it still needs) → PUT each missing file (in
 * parts of build.part_size when larger) → POST /builds/<id>/commit → poll GET /builds/<id> until
 * done or failed. Errors from the API are shown in the page. No dependencies; needs sha256.js.
 */
(function () {
  "use strict";

  var API = "/api/v1";
  var DECLARE_BATCH = 10000;
  var PUT_CONCURRENCY = 4;
  var PUT_ATTEMPTS = 3;
  var JUNK = /(^|\/)(\.DS_Store|Thumbs\.db|desktop\.ini)$|(^|\/)__MACOSX\//;
  var IMAGE = /\.(png|jpe?g)$/i;
  var PHASES = {
    open: "Waiting for files", receiving: "Receiving files", queued: "Waiting for a worker",
    running: "Starting", assembling: "Assembling parts", reading: "Reading files",
    stats: "Computing statistics", saving: "Saving the version", done: "Done", failed: "Failed",
    aborted: "Aborted"
  };

  function csrfToken() {
    var meta = document.querySelector("meta[name=csrf-token]");
    return meta ? meta.getAttribute("content") : "";
  }

  function enc(segment) { return encodeURIComponent(segment); }
  function encPath(path) { return path.split("/").map(enc).join("/"); }
  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  function formatBytes(n) {
    if (n < 1024) return n + " B";
    var units = ["KB", "MB", "GB", "TB"], i = -1;
    do { n /= 1024; i++; } while (n >= 1024 && i < units.length - 1);
    return n.toFixed(n < 10 ? 1 : 0) + " " + units[i];
  }

  function apiError(status, text) {
    var data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { /* not JSON */ }
    var message;
    if (data && data.error) message = data.error.message || data.error.code;
    else if (status === 413) message = "the request is larger than the server accepts";
    else if (status === 0) message = "could not reach the server (network error)";
    else message = "the server answered " + status + (text ? ": " + text.slice(0, 300) : "");
    var err = new Error(message);
    err.status = status;
    return err;
  }

  /** JSON request to the API with the session's CSRF token; throws Error(server message). */
  async function api(method, url, body) {
    var opts = { method: method, credentials: "same-origin",
                 headers: { "Accept": "application/json", "X-CSRFToken": csrfToken() } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    var resp;
    try { resp = await fetch(API + url, opts); } catch (e) { throw apiError(0, ""); }
    var text = await resp.text();
    if (!resp.ok) throw apiError(resp.status, text);
    return text ? JSON.parse(text) : null;
  }

  /** PUT a Blob with XMLHttpRequest so upload progress can be shown; onLoaded(bytes sent so far). */
  function putBlob(url, blob, sha, onLoaded) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open("PUT", API + url);
      xhr.setRequestHeader("Content-Type", "application/octet-stream");
      xhr.setRequestHeader("X-CSRFToken", csrfToken());
      xhr.setRequestHeader("Accept", "application/json");
      if (sha) xhr.setRequestHeader("X-Content-SHA256", sha);
      xhr.upload.onprogress = function (e) { onLoaded(e.loaded); };
      xhr.onload = function () {
        if (xhr.status >= 200 && xhr.status < 300) {
          onLoaded(blob.size);
          resolve(xhr.responseText ? JSON.parse(xhr.responseText) : null);
        } else {
          reject(apiError(xhr.status, xhr.responseText));
        }
      };
      xhr.onerror = function () { reject(apiError(0, "")); };
      xhr.send(blob);
    });
  }

  async function putWithRetry(url, blob, sha, onLoaded) {
    for (var attempt = 1; ; attempt++) {
      try {
        return await putBlob(url, blob, sha, onLoaded);
      } catch (err) {
        var transient = err.status === 0 || err.status >= 500;
        if (!transient || attempt >= PUT_ATTEMPTS) throw err;
        onLoaded(0);
        await sleep(500 * attempt);
      }
    }
  }

  /** Drop the single top folder every path shares when it only wraps class folders or mixed files
   *  (the server's own rule for archives), so a dropped "digits/" folder gives "3/x.png" paths. */
  function normalizePaths(items) {
    if (!items.length) return items;
    var tops = {}, nested = true;
    items.forEach(function (it) {
      var i = it.path.indexOf("/");
      if (i < 0) nested = false; else tops[it.path.slice(0, i)] = true;
    });
    if (!nested || Object.keys(tops).length !== 1) return items;
    var inner = items.map(function (it) { return it.path.slice(it.path.indexOf("/") + 1); });
    var wraps = inner.some(function (p) { return p.indexOf("/") >= 0 || !IMAGE.test(p); });
    if (!wraps) return items;
    return items.map(function (it, i) { return { path: inner[i], file: it.file }; });
  }

  /** Files and folders of a drop event as [{path, file}]; must be called inside the event handler. */
  function dropEntries(dataTransfer) {
    var roots = [], items = dataTransfer.items;
    if (items && items.length && typeof items[0].webkitGetAsEntry === "function") {
      for (var i = 0; i < items.length; i++) {
        if (items[i].kind !== "file") continue;
        var entry = items[i].webkitGetAsEntry();
        if (!entry) { roots = null; break; }
        roots.push(entry);
      }
    }
    var files = Array.prototype.slice.call(dataTransfer.files || []);
    if (!roots || !roots.length) {
      return Promise.resolve(files.map(function (f) { return { path: f.name, file: f }; }));
    }
    var out = [];
    return roots.reduce(function (p, root) { return p.then(function () { return walk(root, out); }); },
                        Promise.resolve()).then(function () { return out; });
  }

  async function walk(entry, out) {
    if (entry.isFile) {
      var file = await new Promise(function (resolve, reject) { entry.file(resolve, reject); });
      out.push({ path: entry.fullPath.replace(/^\/+/, ""), file: file });
    } else if (entry.isDirectory) {
      var reader = entry.createReader();
      for (;;) {
        var batch = await new Promise(function (resolve, reject) { reader.readEntries(resolve, reject); });
        if (!batch.length) break;
        for (var i = 0; i < batch.length; i++) await walk(batch[i], out);
      }
    }
  }

  /** Run one upload build; ui.update({state, step, fraction, text, detail}). Resolves to the done build. */
  async function upload(opts, ui) {
    var files = opts.files;
    var base = "/teams/" + enc(opts.team) + "/datasets/" + enc(opts.name);
    ui.update({ state: "starting", step: "Starting the upload", fraction: 0, text: "" });
    var build = (await api("POST", base + "/uploads", opts.params)).build;
    var id = build.id, committed = false;
    try {
      var total = files.reduce(function (s, f) { return s + f.file.size; }, 0) || 1;
      var hashed = 0, declared = [];
      for (var i = 0; i < files.length; i++) {
        var sha = await window.OfficinaSha256.digestBlob(files[i].file, function (n) {
          hashed += n;
          ui.update({ state: "hashing", step: "Checking files", fraction: hashed / total,
                      text: "SHA-256 of file " + (i + 1) + " of " + files.length });
        });
        declared.push({ path: files[i].path, sha256: sha, size: files[i].file.size });
      }
      var missing = [];
      for (var start = 0; start < declared.length; start += DECLARE_BATCH) {
        var answer = await api("POST", "/builds/" + id + "/files",
                               { files: declared.slice(start, start + DECLARE_BATCH) });
        missing = missing.concat(answer.missing || []);
      }
      await sendMissing(id, files, missing, build.part_size || 0, ui);
      ui.update({ state: "building", step: "Committing", fraction: 1, text: "" });
      build = (await api("POST", "/builds/" + id + "/commit")).build;
      committed = true;
    } catch (err) {
      if (!committed) api("DELETE", "/builds/" + id).catch(function () {});
      throw err;
    }
    return follow(id, ui);
  }

  async function sendMissing(id, files, missing, partSize, ui) {
    var byPath = {};
    files.forEach(function (f) { byPath[f.path] = f.file; });
    var chunks = [], total = 0;
    missing.forEach(function (path) {
      var file = byPath[path];
      if (!file) throw new Error("the server asked for " + path + ", which was not selected");
      total += file.size;
      if (partSize && file.size > partSize) {
        var parts = Math.ceil(file.size / partSize);
        for (var p = 1; p <= parts; p++) {
          chunks.push({ path: path, blob: file.slice((p - 1) * partSize, p * partSize), part: p, parts: parts });
        }
      } else {
        chunks.push({ path: path, blob: file });
      }
    });
    var skipped = files.length - missing.length;
    var doneBytes = 0, inFlight = {}, doneFiles = 0, next = 0;
    var note = skipped ? skipped + " already stored, not sent again" : "";
    function report() {
      var sent = doneBytes;
      Object.keys(inFlight).forEach(function (k) { sent += inFlight[k]; });
      ui.update({ state: "sending", step: "Sending files", fraction: total ? sent / total : 1,
                  text: doneFiles + " of " + chunks.length + (chunks.length === missing.length ? " files" : " pieces") +
                        " · " + formatBytes(sent) + " of " + formatBytes(total),
                  detail: note });
    }
    report();
    async function worker(w) {
      while (next < chunks.length) {
        var c = chunks[next++];
        var url = "/builds/" + id + "/files/" + encPath(c.path);
        var sha = null;
        if (c.part) {
          url += "?part=" + c.part + "&parts=" + c.parts;
          sha = await window.OfficinaSha256.digestBlob(c.blob);
        }
        await putWithRetry(url, c.blob, sha, function (loaded) { inFlight[w] = loaded; report(); });
        inFlight[w] = 0;
        doneBytes += c.blob.size;
        doneFiles++;
        report();
      }
    }
    var workers = [];
    for (var w = 0; w < Math.min(PUT_CONCURRENCY, chunks.length); w++) workers.push(worker(w));
    await Promise.all(workers);
  }

  function describe(build) {
    var progress = build.progress || {};
    var phase = build.status === "done" || build.status === "failed" ? build.status
      : (progress.phase || build.status);
    var label = PHASES[phase] || phase;
    var fraction = null, text = "";
    if (progress.total) {
      fraction = Math.min(1, (progress.done || 0) / progress.total);
      text = progress.unit === "bytes"
        ? formatBytes(progress.done || 0) + " of " + formatBytes(progress.total)
        : (progress.done || 0) + " of " + progress.total + " " + (progress.unit || "");
    }
    if (build.status === "done") fraction = 1;
    return { phase: phase, label: label, fraction: fraction, text: text };
  }

  /** Poll a build until it is done (resolve) or failed/aborted (reject with its error message). */
  async function follow(id, ui) {
    var delay = 250, failures = 0;
    for (;;) {
      var build;
      try {
        build = (await api("GET", "/builds/" + id)).build;
        failures = 0;
      } catch (err) {
        if (err.status !== 0 && err.status < 500) throw err;
        if (++failures > 5) throw err;
        await sleep(1000 * failures);
        continue;
      }
      var d = describe(build);
      if (build.status === "done") {
        ui.update({ state: "done", step: "Done", fraction: 1, text: "version " + build.version + " is ready",
                    build: build, phase: d.phase });
        return build;
      }
      if (build.status === "failed" || build.status === "aborted") {
        var err = new Error((build.error && build.error.message) || ("the build was " + build.status));
        err.build = build;
        throw err;
      }
      ui.update({ state: "building", step: "Server: " + d.label.toLowerCase(), fraction: d.fraction,
                  text: d.text, phase: d.phase, build: build });
      await sleep(delay);
      delay = Math.min(delay * 1.4, 2000);
    }
  }

  /** The progress box: a bar, a step line, a detail line; data-state tells tests and CSS where it is. */
  function progressUi(box) {
    var step = box.querySelector("[data-step]"), pct = box.querySelector("[data-pct]"),
        bar = box.querySelector(".bar > span"), text = box.querySelector("[data-text]"),
        detail = box.querySelector("[data-detail]");
    return {
      update: function (s) {
        box.hidden = false;
        box.dataset.state = s.state;
        if (s.phase) box.dataset.phase = s.phase;
        step.textContent = s.step;
        var indeterminate = s.fraction === null || s.fraction === undefined;
        box.classList.toggle("indeterminate", indeterminate);
        bar.style.width = indeterminate ? "100%" : Math.round(s.fraction * 100) + "%";
        pct.textContent = indeterminate ? "" : Math.floor(s.fraction * 100) + "%";
        text.textContent = s.text || "";
        if (s.detail !== undefined) detail.textContent = s.detail;
      },
      fail: function () {
        var phase = PHASES[box.dataset.phase];
        box.dataset.state = "failed";
        box.classList.remove("indeterminate");
        step.textContent = "Failed" + (phase && box.dataset.phase !== "failed" ? " while: " + phase.toLowerCase() : "");
        pct.textContent = "";
      }
    };
  }

  function showError(el, message) {
    el.textContent = message;
    el.hidden = false;
  }

  function datasetUrl(form, team, name, version) {
    var root = form.dataset.consoleData || "/data";
    return root + "/" + enc(team) + "/" + enc(name) + (version ? "?version=" + version : "");
  }

  function enhanceUploadForm(form) {
    var fileInput = form.querySelector("input[type=file][name=file]");
    var folderInput = form.querySelector("input[type=file][data-folder]");
    var zone = form.querySelector("[data-dropzone]");
    var list = form.querySelector("[data-selection]");
    var errorBox = form.querySelector("[data-error]");
    var button = form.querySelector("button[type=submit]");
    var ui = progressUi(form.querySelector("[data-progress]"));
    var selection = [];
    function field(name) { return form.querySelector("[name='" + name + "']"); }
    form.classList.add("js");
    fileInput.multiple = true;
    fileInput.required = false;

    function render() {
      list.textContent = "";
      if (!selection.length) { list.hidden = true; return; }
      var items = normalizePaths(selection);
      var bytes = items.reduce(function (s, it) { return s + it.file.size; }, 0);
      var folders = {};
      items.forEach(function (it) { var i = it.path.indexOf("/"); if (i > 0) folders[it.path.slice(0, i)] = 1; });
      var head = document.createElement("div");
      var nFolders = Object.keys(folders).length;
      head.innerHTML = "<strong></strong> <span class=muted></span> <button type=button class='secondary small'>Clear</button>";
      head.querySelector("strong").textContent = items.length + (items.length === 1 ? " file" : " files") +
        (nFolders ? " in " + nFolders + (nFolders === 1 ? " folder" : " folders") : "");
      head.querySelector("span").textContent = formatBytes(bytes);
      head.querySelector("button").addEventListener("click", function () { selection = []; render(); });
      list.appendChild(head);
      var ul = document.createElement("ul");
      items.slice(0, 6).forEach(function (it) {
        var li = document.createElement("li");
        li.textContent = it.path;
        ul.appendChild(li);
      });
      if (items.length > 6) {
        var more = document.createElement("li");
        more.className = "muted";
        more.textContent = "… and " + (items.length - 6) + " more";
        ul.appendChild(more);
      }
      list.appendChild(ul);
      list.hidden = false;
    }

    function add(items) {
      var byPath = {};
      selection.concat(items).forEach(function (it) {
        if (!JUNK.test(it.path)) byPath[it.path] = it;
      });
      selection = Object.keys(byPath).sort().map(function (k) { return byPath[k]; });
      errorBox.hidden = true;
      render();
    }

    fileInput.addEventListener("change", function () {
      add(Array.prototype.map.call(fileInput.files, function (f) { return { path: f.name, file: f }; }));
      fileInput.value = "";
    });
    if (folderInput) {
      folderInput.addEventListener("change", function () {
        add(Array.prototype.map.call(folderInput.files, function (f) {
          return { path: f.webkitRelativePath || f.name, file: f };
        }));
        folderInput.value = "";
      });
    }
    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (e) {
        e.preventDefault();
        if (e.dataTransfer) e.dataTransfer.dropEffect = "copy";
        zone.classList.add("over");
      });
    });
    zone.addEventListener("dragleave", function (e) {
      if (!zone.contains(e.relatedTarget)) zone.classList.remove("over");
    });
    zone.addEventListener("drop", function (e) {
      e.preventDefault();
      zone.classList.remove("over");
      dropEntries(e.dataTransfer).then(add, function (err) {
        showError(errorBox, "Could not read the dropped files: " + err.message);
      });
    });

    form.addEventListener("submit", async function (e) {
      e.preventDefault();
      errorBox.hidden = true;
      var team = field("team").value, name = field("name").value.trim();
      if (!name) { showError(errorBox, "Name the dataset."); return; }
      if (!selection.length) { showError(errorBox, "Choose or drop files to upload."); return; }
      var params = {};
      ["kind", "label_column", "text_column", "message", "base"].forEach(function (key) {
        var el = field(key);
        if (!el || el.disabled) return;
        if (el.type === "checkbox") { if (el.checked) params[key] = el.value; return; }
        var value = el.value.trim();
        if (value) params[key] = value;
      });
      var remove = field("remove");
      if (remove && remove.value.trim()) {
        params.remove = remove.value.split("\n").map(function (s) { return s.trim(); })
          .filter(Boolean);
      }
      button.disabled = true;
      form.classList.add("busy");
      try {
        var build = await upload({ team: team, name: name, files: normalizePaths(selection), params: params }, ui);
        var target = datasetUrl(form, team, name, build.version);
        ui.update({ state: "done", step: "Done", fraction: 1, text: "version " + build.version + " is ready",
                    detail: "· opening it…" });
        setTimeout(function () { window.location.assign(target); }, 1200);
      } catch (err) {
        ui.fail();
        showError(errorBox, "Upload failed: " + err.message);
        button.disabled = false;
        form.classList.remove("busy");
      }
    });
  }

  /** A build page or row: follow the build, then open the version it made. */
  function followBuildBox(box) {
    var bar = progressUi(box.querySelector("[data-progress]"));
    var pill = box.querySelector("[data-build-status]");
    var errorBox = box.querySelector("[data-error]");
    function setStatus(status) {
      if (!pill) return;
      pill.textContent = status;
      pill.className = "pill s-" + status;
    }
    var ui = {
      update: function (s) { bar.update(s); if (s.build) setStatus(s.build.status); },
      fail: function () { bar.fail(); setStatus("failed"); }
    };
    follow(box.dataset.buildId, ui).then(function (build) {
      if (box.dataset.redirect) {
        var target = box.dataset.redirect + "?version=" + build.version;
        bar.update({ state: "done", step: "Done", fraction: 1, text: "version " + build.version + " is ready",
                     detail: "· opening it…" });
        setTimeout(function () { window.location.assign(target); }, 1000);
      }
    }, function (err) {
      ui.fail();
      if (err.build) setStatus(err.build.status);
      showError(errorBox, err.message);
    });
  }

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll("form[data-upload]"), enhanceUploadForm);
    Array.prototype.forEach.call(document.querySelectorAll("[data-build-id][data-follow]"), followBuildBox);
  }

  window.OfficinaData = { api: api, upload: upload, follow: follow, normalizePaths: normalizePaths };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
