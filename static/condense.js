/* Condense dashboard: live job updates, small form helpers, copy buttons. No dependencies.
   The job form has its own script, job_form.js. */
(function () {
  "use strict";

  var ACTIVE = ["queued", "running"];
  var POLL_MS = 1000;

  // -- job page: poll the API while the job is queued or running -----------------

  function setStatus(root, status) {
    root.dataset.status = status;
    var badge = document.getElementById("job-status");
    if (badge) {
      badge.textContent = status;
      badge.dataset.status = status;
      badge.className = "badge badge-" + status;
    }
  }

  function setProgress(fraction) {
    var value = Math.max(0, Math.min(1, Number(fraction) || 0));
    var bar = document.getElementById("job-progress");
    if (bar) {
      bar.value = value;
      bar.textContent = Math.round(value * 100) + " %";
    }
    var text = document.getElementById("job-progress-text");
    if (text) text.textContent = Math.round(value * 100) + " %";
  }

  function appendLogs(root, entries) {
    var list = document.getElementById("job-log");
    if (!list || !entries.length) return;
    entries.forEach(function (entry) {
      var item = document.createElement("li");
      item.className = "log-" + entry.level;
      item.dataset.id = entry.id;
      var time = document.createElement("time");
      time.dateTime = entry.created_at;
      var when = new Date(entry.created_at);
      time.textContent = isNaN(when) ? "" : when.toISOString().slice(11, 19);
      // A traceback arrives as one error line; like the server-rendered page, it stays folded away.
      var traceback = entry.level === "error" && entry.message.indexOf("Traceback (most recent call last)") !== -1;
      var message = document.createElement(traceback ? "details" : "span");
      message.className = "log-msg";
      if (traceback) {
        var summary = document.createElement("summary");
        summary.textContent = "Technical details (traceback)";
        message.appendChild(summary);
        message.appendChild(document.createTextNode(entry.message));
      } else {
        message.textContent = entry.message;
      }
      item.appendChild(time);
      item.appendChild(message);
      list.appendChild(item);
      root.dataset.lastLogId = entry.id;
    });
    list.scrollTop = list.scrollHeight;
  }

  function getJSON(url) {
    return fetch(url, {
      credentials: "same-origin",
      headers: { Accept: "application/json" },
      cache: "no-store",
    }).then(function (response) {
      if (!response.ok) {
        var error = new Error("HTTP " + response.status);
        error.status = response.status;
        throw error;
      }
      return response.json();
    });
  }

  // "45 s", "3 min 12 s", "1 h 20 min": a duration in seconds, to the precision that matters.
  function duration(seconds) {
    var s = Math.max(0, Math.round(Number(seconds) || 0));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  // "about 3 min left" from the API's eta_s (the worker's estimate); "estimating…" until it has one.
  function etaText(eta) {
    if (eta === null || eta === undefined) return "estimating…";
    if (eta < 60) return "less than a minute left";
    if (eta < 3600) return "about " + Math.round(eta / 60) + " min left";
    return "about " + Math.floor(eta / 3600) + " h " + Math.round((eta % 3600) / 60) + " min left";
  }

  function setTimes(job) {
    var elapsed = document.getElementById("job-elapsed");
    if (elapsed && job.elapsed_s !== null && job.elapsed_s !== undefined) elapsed.textContent = duration(job.elapsed_s);
    var eta = document.getElementById("job-eta");
    if (eta) eta.textContent = etaText(job.eta_s);
    var detail = document.getElementById("job-stage-detail");
    var stage = job.progress_detail || {};
    if (detail && stage.stage && stage.stage_started_at) {
      var since = (Date.now() - Date.parse(stage.stage_started_at)) / 1000;
      detail.textContent = "(this stage: " + duration(since) + ")";
    }
  }

  function watchJob(root) {
    if (ACTIVE.indexOf(root.dataset.status) === -1) return;
    var stopped = false;

    function tick() {
      if (stopped) return;
      getJSON(root.dataset.apiUrl)
        .then(function (job) {
          setStatus(root, job.status);
          setProgress(job.progress);
          setTimes(job);
          var stage = document.getElementById("job-stage");
          if (stage && job.stage) stage.textContent = job.stage;
          var logsUrl = root.dataset.logsUrl + "?after=" + encodeURIComponent(root.dataset.lastLogId || 0);
          return getJSON(logsUrl).then(function (entries) {
            appendLogs(root, entries);
            return job;
          });
        })
        .then(function (job) {
          if (ACTIVE.indexOf(job.status) === -1) {
            // Finished: render the results on the server, once.
            stopped = true;
            window.location.reload();
            return;
          }
          window.setTimeout(tick, POLL_MS);
        })
        .catch(function (error) {
          if (error.status === 401 || error.status === 403 || error.status === 404) {
            stopped = true;
            var stage = document.getElementById("job-stage");
            if (stage) stage.textContent = "live updates stopped (" + error.message + "); reload the page";
            return;
          }
          window.setTimeout(tick, POLL_MS * 2); // network hiccup: try again
        });
    }

    window.setTimeout(tick, POLL_MS);
  }

  // -- model form: built-in fields only for a built-in architecture ---------------

  function setupModelForm(form) {
    var radios = form.querySelectorAll("input[name=source]");
    var builtin = form.querySelector("[data-source-only=builtin]");

    function update() {
      var checked = form.querySelector("input[name=source]:checked");
      if (builtin) builtin.disabled = !checked || checked.value !== "builtin";
    }

    radios.forEach(function (radio) { radio.addEventListener("change", update); });
    update();
    form.addEventListener("submit", function () {
      var busy = form.querySelector("[data-busy-text]");
      if (busy) busy.hidden = false;
    });
  }

  // -- uploads say they are busy; deletions ask first ------------------------------

  function setupUploadForm(form) {
    form.addEventListener("submit", function () {
      var busy = form.querySelector("[data-busy-text]");
      if (busy) busy.hidden = false;
    });
  }

  // An upload still being inspected: ask the API for its status until it changes, then show the new page.
  function watchInspection(element) {
    var url = element.getAttribute("data-inspection-url");
    function tick() {
      getJSON(url)
        .then(function (upload) {
          if (upload.status !== "inspecting") {
            window.location.reload();
            return;
          }
          window.setTimeout(tick, POLL_MS);
        })
        .catch(function () { window.setTimeout(tick, POLL_MS * 2); });
    }
    window.setTimeout(tick, POLL_MS);
  }

  // -- copy buttons: <button data-copy-target="ID"> copies the text of the element with that id ------------

  function setupCopy(button) {
    var label = button.textContent;
    function said(text) {
      button.textContent = text;
      window.setTimeout(function () { button.textContent = label; }, 1500);
    }
    // Without the clipboard API (plain http away from localhost): select the text and copy it the old way.
    function selectAndCopy(target) {
      var range = document.createRange();
      range.selectNodeContents(target);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      said(document.execCommand && document.execCommand("copy") ? "Copied" : "Selected: press Ctrl+C");
    }
    button.addEventListener("click", function () {
      var target = document.getElementById(button.getAttribute("data-copy-target"));
      if (!target) return;
      var text = "value" in target ? target.value : target.textContent;
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () { said("Copied"); },
          function () { selectAndCopy(target); });
      } else {
        selectAndCopy(target);
      }
    });
  }

  function setupConfirm(form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var live = document.getElementById("job-live");
    if (live) watchJob(live);
    document.querySelectorAll("form[data-model-form]").forEach(setupModelForm);
    document.querySelectorAll("form[data-upload-form]").forEach(setupUploadForm);
    document.querySelectorAll("form[data-confirm]").forEach(setupConfirm);
    document.querySelectorAll("[data-inspection-url]").forEach(watchInspection);
    document.querySelectorAll("[data-copy-target]").forEach(setupCopy);
  });
})();
