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

  // The log box of the latest lines is a column-reverse flexbox: its scrollTop is 0 at
  // the bottom and negative above it. Other log pages scroll the usual way.
  function reversed(el) { return getComputedStyle(el).flexDirection === "column-reverse"; }

  function atBottom(el) {
    var fromBottom = reversed(el) ? -el.scrollTop : el.scrollHeight - el.scrollTop - el.clientHeight;
    return fromBottom < 8;
  }

  function toBottom(el) { el.scrollTop = reversed(el) ? 0 : el.scrollHeight; }

  function liveThread() {
    var live = document.getElementById("live");
    var log = document.getElementById("log");
    var box = document.getElementById("log-box");
    var atEnd = live && live.dataset.atEnd === "true";
    if (!live || live.dataset.terminal === "true" || !window.EventSource) { return; }
    var note = document.getElementById("live-note");
    var lastEl = document.getElementById("log-last");
    var totalEl = document.getElementById("log-total");
    var followBox = document.getElementById("log-follow");
    var toggle = document.getElementById("log-follow-toggle");
    var followState = document.getElementById("log-follow-state");
    var url = live.dataset.events;
    if (live.dataset.after) { url += "?after=" + encodeURIComponent(live.dataset.after); }
    var source = new EventSource(url);
    var follow = true;

    function setFollow(value) {
      follow = value;
      if (toggle) { toggle.checked = value; }
      if (followState) {
        followState.textContent = value ? "" : "Paused: scroll to the bottom or tick the box to follow again.";
      }
      if (value) { toBottom(box); }
    }

    if (atEnd && followBox) {
      followBox.hidden = false;
      // Scrolling up pauses following; scrolling back to the bottom resumes it.
      box.addEventListener("scroll", function () {
        var bottom = atBottom(box);
        if (bottom !== follow) { setFollow(bottom); }
      });
      toggle.addEventListener("change", function () { setFollow(toggle.checked); });
    }

    function bump(el) {
      if (el) { el.textContent = String(parseInt(el.textContent || "0", 10) + 1); }
    }

    function addLine(data) {
      var empty = document.getElementById("log-empty");
      if (empty) { empty.remove(); }
      var line = data.timestamp + " [" + data.stream + (data.level ? " " + data.level : "") + "] " + data.message + "\n";
      var fromTop = box.scrollHeight - box.clientHeight + box.scrollTop;
      log.appendChild(document.createTextNode(line));
      bump(lastEl);
      bump(totalEl);
      if (follow) {
        toBottom(box);
      } else if (reversed(box)) {
        // Anchored at the bottom, the text could move up under the reader (browsers
        // without scroll anchoring): keep the same distance from the top.
        box.scrollTop = fromTop - (box.scrollHeight - box.clientHeight);
      }
    }

    // Reading earlier lines: new lines belong on the latest page, not after these (and
    // the stream replays lines already counted in the total), so they are left out.
    if (atEnd) {
      source.addEventListener("log", function (event) { addLine(JSON.parse(event.data)); });
    }
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
