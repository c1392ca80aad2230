// loravet pages: upload with progress and drag-and-drop, and job status that updates by itself.
// Vanilla JS, no build step, no external assets. Text from the server or from file names is only
// ever set with textContent, never as HTML.
(function () {
  "use strict";

  function $(id) { return document.getElementById(id); }

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  // an API message as a sentence: capital first letter, final full stop
  function sentence(text) {
    var t = String(text || "").trim();
    if (!t) { return t; }
    t = t.charAt(0).toUpperCase() + t.slice(1);
    return /[.!?…)]$/.test(t) ? t : t + ".";
  }

  function humanBytes(n) {
    var units = ["bytes", "KiB", "MiB", "GiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i === 0 ? n + " bytes" : n.toFixed(1) + " " + units[i];
  }

  // ------------------------------------------------------------------------------- upload
  function initUpload() {
    var form = $("upload-form");
    var fileInput = $("file");
    var configInput = $("config");
    var zone = $("dropzone");
    var chosen = $("chosen");
    var button = $("upload-button");
    var area = $("progress-area");
    var bar = $("progress");
    var text = $("progress-text");
    var errorBox = $("upload-error");

    function showChosen() {
      chosen.textContent = "";
      [[fileInput, "adapter"], [configInput, "config"]].forEach(function (pair) {
        var f = pair[0].files && pair[0].files[0];
        if (f) {
          var li = document.createElement("li");
          li.textContent = pair[1] + ": " + f.name + " (" + humanBytes(f.size) + ")";
          chosen.appendChild(li);
        }
      });
    }

    function showError(title, detail, hint) {
      $("upload-error-title").textContent = title;
      $("upload-error-detail").textContent = sentence(detail);
      var hintBox = $("upload-error-hint");
      hintBox.textContent = hint || "";
      hintBox.hidden = !hint;
      errorBox.hidden = false;
      errorBox.focus();
    }

    function put(input, file) {
      var dt = new DataTransfer();
      dt.items.add(file);
      input.files = dt.files;
    }

    fileInput.addEventListener("change", showChosen);
    configInput.addEventListener("change", showChosen);

    ["dragenter", "dragover"].forEach(function (type) {
      form.addEventListener(type, function (e) {
        e.preventDefault();
        zone.classList.add("over");
      });
    });
    ["dragleave", "drop"].forEach(function (type) {
      form.addEventListener(type, function (e) {
        e.preventDefault();
        if (type === "dragleave" && form.contains(e.relatedTarget)) { return; }
        zone.classList.remove("over");
      });
    });
    form.addEventListener("drop", function (e) {
      var files = e.dataTransfer ? Array.prototype.slice.call(e.dataTransfer.files) : [];
      files.forEach(function (f) {
        if (/\.json$/i.test(f.name)) { put(configInput, f); } else { put(fileInput, f); }
      });
      showChosen();
    });

    form.addEventListener("submit", function (e) {
      e.preventDefault();
      errorBox.hidden = true;
      var file = fileInput.files && fileInput.files[0];
      if (!file) {
        showError("No adapter chosen", "Choose the adapter's .safetensors file first (or drop it on the form).");
        fileInput.focus();
        return;
      }
      var data = new FormData();
      data.append("file", file, file.name);
      var config = configInput.files && configInput.files[0];
      if (config) { data.append("config", config, config.name); }

      var xhr = new XMLHttpRequest();
      xhr.open("POST", document.body.getAttribute("data-upload-url"));
      xhr.setRequestHeader("X-CSRF-Token", csrfToken());
      xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
      xhr.setRequestHeader("Accept", "application/json");
      area.hidden = false;
      bar.value = 0;
      text.textContent = "Uploading " + file.name + " (" + humanBytes(file.size) + ")…";
      button.disabled = true;

      xhr.upload.addEventListener("progress", function (ev) {
        if (ev.lengthComputable) {
          var pct = Math.round((ev.loaded / ev.total) * 100);
          bar.value = pct;
          text.textContent = humanBytes(ev.loaded) + " of " + humanBytes(ev.total) + " sent (" + pct + "%)";
        }
      });
      xhr.upload.addEventListener("load", function () {
        bar.value = 100;
        text.textContent = "Sent. The server is checking the file…";
      });
      xhr.addEventListener("load", function () {
        var body = null;
        try { body = JSON.parse(xhr.responseText); } catch (err) { body = null; }
        if (xhr.status >= 200 && xhr.status < 300 && body && body.next) {
          text.textContent = "Accepted. Opening the job…";
          window.location.assign(body.next);
          return;
        }
        button.disabled = false;
        area.hidden = true;
        if (body && body.detail) {
          var title = body.title || "Refused";
          showError(title + " (HTTP " + xhr.status + ")", body.detail, body.hint);
          if (xhr.status === 401 && body.sign_in_url) {
            window.setTimeout(function () { window.location.assign(body.sign_in_url); }, 4000);
          }
        } else {
          showError("Upload failed (HTTP " + xhr.status + ")", "The server gave no explanation; try again.");
        }
      });
      xhr.addEventListener("error", function () {
        button.disabled = false;
        area.hidden = true;
        showError("Upload failed", "The connection to the server was lost before it answered. Check that loravet is running and try again.");
      });
      xhr.send(data);
    });
  }

  // ---------------------------------------------------------------------------------- job
  function initJob() {
    var url = document.body.getAttribute("data-status-url");
    if (!url || document.body.getAttribute("data-job-done") === "true") { return; }
    var started = Date.now();

    function update(job) {
      var state = $("job-state");
      state.className = "job-state state-" + job.status;
      $("job-status").textContent = job.status_text;
      $("job-detail").textContent = job.detail;
      if (job.failure) {
        $("job-failure-kind").textContent = job.failure.kind;
        $("job-failure-reason").textContent = sentence(job.failure.reason);
        $("job-failure").hidden = false;
      }
      if (job.report_page) {
        var link = $("report-link");
        link.setAttribute("href", job.report_page);
        link.textContent = "Read the report" + (job.verdict ? ": verdict " + job.verdict : "");
        $("job-report").hidden = false;
        link.focus();
      }
    }

    function poll() {
      var xhr = new XMLHttpRequest();
      xhr.open("GET", url);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.addEventListener("load", function () {
        var body = null;
        try { body = JSON.parse(xhr.responseText); } catch (err) { body = null; }
        if (xhr.status === 200 && body) {
          update(body);
          if (body.done) { document.body.setAttribute("data-job-done", "true"); return; }
          var elapsed = Date.now() - started;
          window.setTimeout(poll, elapsed < 20000 ? 1000 : elapsed < 120000 ? 3000 : 10000);
          return;
        }
        if (xhr.status === 429) {
          var wait = parseInt(xhr.getResponseHeader("Retry-After") || "10", 10);
          window.setTimeout(poll, Math.max(1, wait) * 1000);
          return;
        }
        $("job-status").textContent = body && body.title ? body.title : "Status unavailable";
        $("job-detail").textContent = body && body.detail ? sentence(body.detail) : "The server did not answer as expected (HTTP " + xhr.status + "). Reload the page to try again.";
        if (xhr.status === 401 && body && body.sign_in_url) {
          window.setTimeout(function () { window.location.assign(body.sign_in_url); }, 4000);
        }
      });
      xhr.addEventListener("error", function () {
        $("job-detail").textContent = "Lost the connection to the server; retrying…";
        window.setTimeout(poll, 5000);
      });
      xhr.send();
    }
    window.setTimeout(poll, 500);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var page = document.body.getAttribute("data-page");
    if (page === "upload") { initUpload(); }
    if (page === "job") { initJob(); }
  });
}());
