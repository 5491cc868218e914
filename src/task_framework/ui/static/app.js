/* Task Framework web UI: progressive enhancement only. Every value is written with
   textContent, never as HTML. No inline handlers (strict CSP). */
"use strict";

(function () {
  var TERMINAL = ["thread.succeeded", "thread.failed", "thread.timeout", "thread.stopped"];

  function text(tag, value, cls) {
    var el = document.createElement(tag);
    el.textContent = value;
    if (cls) { el.className = cls; }
    return el;
  }

  function setState(value) {
    var holder = document.getElementById("thread-state");
    if (!holder) { return; }
    holder.replaceChildren(text("span", value, "state state-" + value.replace(/[^a-z_]/g, "")));
  }

  function liveThread() {
    var live = document.getElementById("live");
    if (!live || live.dataset.terminal === "true" || !window.EventSource) { return; }
    var log = document.getElementById("log");
    var note = document.getElementById("live-note");
    var cleared = false;
    var source = new EventSource(live.dataset.events);

    function addLine(data) {
      if (!cleared) { log.textContent = ""; cleared = true; }
      var empty = document.getElementById("log-empty");
      if (empty) { empty.remove(); }
      var line = data.timestamp + " [" + data.stream + (data.level ? " " + data.level : "") + "] " + data.message + "\n";
      log.appendChild(document.createTextNode(line));
      log.scrollTop = log.scrollHeight;
    }

    source.addEventListener("log", function (event) { addLine(JSON.parse(event.data)); });
    source.addEventListener("thread.started", function () { setState("running"); });
    source.addEventListener("thread.problem", function (event) {
      var data = JSON.parse(event.data);
      var list = document.getElementById("problems");
      if (list && data.problem) { list.appendChild(text("li", data.problem.message)); }
    });
    TERMINAL.forEach(function (name) {
      source.addEventListener(name, function () {
        source.close();
        setState(name.split(".")[1]);
        if (note) { note.textContent = "The thread has finished. Loading its outputs…"; }
        window.setTimeout(function () { window.location.reload(); }, 600);
      });
    });
    source.addEventListener("error", function () {
      if (source.readyState === EventSource.CLOSED && note) {
        note.textContent = "Live updates stopped. Reload the page to see the latest state.";
      }
    });
  }

  function uploads() {
    document.querySelectorAll("form.js-upload, form.js-deploy").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var deploy = form.classList.contains("js-deploy");
        var progress = form.querySelector(".upload-progress");
        var status = form.querySelector(".upload-status");
        var buildLog = form.querySelector(".build-log");
        var button = form.querySelector("button[type=submit]");
        var url = form.getAttribute("action").split("?")[0];
        var force = form.querySelector(".js-force");
        if (force && force.checked) { url += "?force=true"; }
        var body = new FormData();
        var input = form.querySelector("input[type=file]");
        if (!input.files.length) { status.textContent = "Choose a file first."; return; }
        body.append("file", input.files[0]);
        var xhr = new XMLHttpRequest();
        xhr.open("POST", url);
        xhr.setRequestHeader("X-CSRF-Token", form.dataset.csrf);
        xhr.setRequestHeader("Accept", "application/json");
        progress.hidden = false;
        progress.value = 0;
        button.disabled = true;
        if (buildLog) { buildLog.hidden = true; buildLog.textContent = ""; }
        status.textContent = "Uploading…";
        xhr.upload.addEventListener("progress", function (e) {
          if (e.lengthComputable) {
            progress.value = Math.round((e.loaded / e.total) * 100);
            status.textContent = "Uploading… " + progress.value + "%";
          }
        });
        xhr.upload.addEventListener("load", function () {
          progress.value = 100;
          status.textContent = deploy ? "Uploaded. Installing and checking the task…" : "Uploaded. Saving…";
        });
        xhr.addEventListener("load", function () {
          button.disabled = false;
          var data = {};
          try { data = JSON.parse(xhr.responseText); } catch (err) { data = { error: "Unexpected answer (HTTP " + xhr.status + ")" }; }
          if (xhr.status === 401) { status.textContent = "Your session has ended. Sign in again."; return; }
          if (deploy) {
            status.textContent = data.ok ? data.message : "Deployment failed: " + (data.code || data.status || "");
            status.className = "upload-status " + (data.ok ? "notice" : "error");
            buildLog.textContent = data.message || data.error || "";
            buildLog.hidden = false;
            if (data.ok) { window.setTimeout(function () { window.location.assign("/ui/tasks?done=created"); }, 1500); }
          } else if (xhr.status === 200) {
            window.location.assign("/ui/files?done=uploaded");
          } else {
            status.textContent = "Upload failed: " + (data.error || xhr.status);
            status.className = "upload-status error";
          }
        });
        xhr.addEventListener("error", function () {
          button.disabled = false;
          status.textContent = "The upload was interrupted. Check the connection and retry.";
        });
        xhr.send(body);
      });
    });
  }

  function cronPreview() {
    var cron = document.querySelector(".js-cron");
    var zone = document.querySelector(".js-tz");
    var out = document.getElementById("cron-preview");
    if (!cron || !zone || !out) { return; }
    var timer = null;
    var serial = 0;
    function refresh() {
      var mine = ++serial;
      var query = "cron=" + encodeURIComponent(cron.value) + "&timezone=" + encodeURIComponent(zone.value);
      fetch("/ui/schedules/preview?" + query, { headers: { Accept: "application/json" }, credentials: "same-origin" })
        .then(function (r) { return r.json(); })
        .then(function (data) {
          if (mine !== serial) { return; }
          if (data.error) { out.replaceChildren(text("p", data.error, "error")); return; }
          var list = document.createElement("ol");
          list.id = "cron-fires";
          data.fires.forEach(function (f) { list.appendChild(text("li", f.local + " (" + f.utc + ")")); });
          out.replaceChildren(text("p", "Next fire times in " + zone.value + ":"), list);
        })
        .catch(function () { out.replaceChildren(text("p", "Could not compute the preview.", "error")); });
    }
    function later() { window.clearTimeout(timer); timer = window.setTimeout(refresh, 250); }
    cron.addEventListener("input", later);
    zone.addEventListener("input", later);
    refresh();
  }

  document.addEventListener("DOMContentLoaded", function () {
    uploads();
    cronPreview();
  });
  // After "load": a stream opened earlier would hold the page in the loading state.
  window.addEventListener("load", liveThread);
})();
