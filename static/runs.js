/* The runs table: sort by a header, filter (the form submits itself), select jobs to compare, and while any
   job is queued or running, poll the API every 2 s and update its row in place (new jobs appear on top).
   The cells' texts mirror templates/dashboard/_job_table.html and condense_runs.py. No dependencies. */
(function () {
  "use strict";

  var ACTIVE = ["queued", "running"];
  var POLL_MS = 2000;
  var DASH = "\u2014";
  var FIELDS = ["id", "name", "model", "model_name", "algorithm", "status", "progress", "tags", "created_at",
                "duration_s", "target", "sparsity", "bits", "accuracy_before", "accuracy_after", "accuracy_delta",
                "fidelity_top1", "fidelity_cosine", "params_after", "params_ratio", "size_after_bytes",
                "latency_runtime", "latency_batch", "latency_before_ms", "latency_after_ms", "latency_ratio",
                "latency_low", "latency_high", "latency_verdict"];

  // -- numbers as the server writes them (condense_format.py) ---------------------------

  function isNum(value) { return typeof value === "number" && isFinite(value); }

  function sig(number, digits) {
    digits = digits || 3;
    if (number === 0) return "0";
    var decimals = Math.max(digits - 1 - Math.floor(Math.log10(Math.abs(number))), 0);
    var text = number.toFixed(decimals);
    return text.indexOf(".") === -1 ? text : text.replace(/0+$/, "").replace(/\.$/, "");
  }

  function scaled(value, units, suffix) {
    if (!isNum(value)) return DASH;
    var index = 0;
    while (Math.abs(value) >= 1000 && index < units.length - 1) { value /= 1000; index += 1; }
    var text = index === 0 && Number.isInteger(value) ? String(value) : sig(value);
    if (Math.abs(Number(text)) >= 1000 && index < units.length - 1) { text = sig(Number(text) / 1000); index += 1; }
    return (text + " " + units[index] + (suffix || "")).trim();
  }

  function percent(value, decimals) {
    return isNum(value) ? (value * 100).toFixed(decimals === undefined ? 1 : decimals) + " %" : DASH;
  }

  function times(ratio) {
    if (!isNum(ratio)) return DASH;
    return (ratio >= 0.1 && ratio < 1000 ? ratio.toFixed(2) : sig(ratio)) + "\u00d7";
  }

  function latencyText(item) {
    if (!item.latency_verdict) return DASH;
    if (!isNum(item.latency_ratio)) return "no speedup reported";
    var text = times(item.latency_ratio);
    if (isNum(item.latency_low) && isNum(item.latency_high)) {
      text += " (" + sig(item.latency_low) + "\u2013" + sig(item.latency_high) + ")";
    }
    return text;
  }

  function verdictCss(verdict) {
    if (!verdict) return "";
    return verdict === "faster" ? "better" : verdict === "regression" ? "worse" : "uncertain";
  }

  // -- one row's cells ------------------------------------------------------------------

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fill(cell, value, nodes, title) {
    cell.dataset.value = value === null || value === undefined ? "" : value;
    cell.textContent = "";
    nodes.forEach(function (node) {
      cell.appendChild(typeof node === "string" ? document.createTextNode(node) : node);
    });
    if (title) cell.title = title; else cell.removeAttribute("title");
  }

  function cellOf(tr, col) { return tr.querySelector('td[data-col="' + col + '"]'); }

  function updateRow(tr, item, urls) {
    tr.dataset.status = item.status;
    var cells = {
      id: [item.id, [String(item.id)]],
      name: [item.name || item.algorithm, [el("a", {href: urls.jobs + item.id + "/"}, item.name || item.algorithm)]],
      model: [item.model_name, [el("a", {href: urls.models + item.model + "/"}, item.model_name)]],
      algorithm: [item.algorithm, [item.algorithm]],
      target: [isNum(item.sparsity) ? item.sparsity : isNum(item.bits) ? item.bits : "", [item.target || DASH]],
      fidelity: [item.fidelity_top1, [percent(item.fidelity_top1)],
                 isNum(item.fidelity_cosine) ? "cosine similarity " + sig(item.fidelity_cosine, 4) : ""],
      size: [item.size_after_bytes, [scaled(item.size_after_bytes, ["B", "kB", "MB", "GB", "TB"])]],
      tags: [(item.tags || []).join(" "), (item.tags || []).reduce(function (nodes, tag) {
        return nodes.concat([el("span", {"class": "tag"}, tag), " "]);
      }, [])],
      duration: [item.duration_s, [isNum(item.duration_s) ? item.duration_s.toFixed(2) + " s" : DASH]]
    };
    var status = [el("span", {"class": "badge badge-" + item.status, "data-status": item.status}, item.status)];
    if (ACTIVE.indexOf(item.status) !== -1) {
      status.push(" ", el("span", {"class": "run-progress mono"}, percent(item.progress, 0)));
    }
    cells.status = [item.status, status];
    var accuracy = [percent(item.accuracy_after)];
    if (isNum(item.accuracy_delta)) {
      accuracy.push(" ", el("span", {"class": "delta " + (item.accuracy_delta < 0 ? "worse" : "better")},
                            (item.accuracy_delta >= 0 ? "+" : "") + (item.accuracy_delta * 100).toFixed(1) + " pts"));
    }
    cells.accuracy = [item.accuracy_after, accuracy,
                      isNum(item.accuracy_before) ? "before: " + percent(item.accuracy_before) : ""];
    var params = [scaled(item.params_after, ["", "k", "M", "G", "T"])];
    if (isNum(item.params_ratio)) params.push(" ", el("span", {"class": "hint"}, times(item.params_ratio)));
    cells.params = [item.params_after, params];
    cells.latency = [item.latency_ratio, [el("span", {"class": "ratio " + verdictCss(item.latency_verdict)},
                                              latencyText(item))],
                     item.latency_verdict ? item.latency_runtime + ", batch " + item.latency_batch + ": " +
                       sig(item.latency_before_ms) + " ms \u2192 " + sig(item.latency_after_ms) + " ms (" +
                       item.latency_verdict + ")" : ""];
    Object.keys(cells).forEach(function (col) {
      var cell = cellOf(tr, col);
      if (cell) fill(cell, cells[col][0], cells[col][1], cells[col][2]);
    });
    var latency = cellOf(tr, "latency");
    if (latency) {
      if (item.latency_verdict) latency.dataset.verdict = item.latency_verdict; else delete latency.dataset.verdict;
    }
  }

  function newRow(table, item, urls) {
    var tr = document.createElement("tr");
    tr.dataset.jobId = item.id;
    var select = el("td", {"data-col": "select"});
    select.appendChild(el("input", {type: "checkbox", "class": "run-select", value: String(item.id),
                                    "aria-label": "Select job " + item.id}));
    tr.appendChild(select);
    table.querySelectorAll("thead th[data-sort]").forEach(function (th) {
      var numeric = th.classList.contains("num");
      var td = el("td", {"data-col": th.dataset.sort,
                         "class": (numeric ? "num" : "") + (th.dataset.sort === "id" ? " mono" : "")});
      if (th.dataset.sort === "created") {
        var when = new Date(item.created_at);
        td.dataset.value = item.created_at;
        td.appendChild(el("time", {datetime: item.created_at},
                          isNaN(when) ? "" : when.toISOString().slice(0, 16).replace("T", " ")));
      }
      tr.appendChild(td);
    });
    updateRow(tr, item, urls);
    return tr;
  }

  // -- sorting --------------------------------------------------------------------------

  function sortValue(tr, key) {
    var cell = cellOf(tr, key);
    var raw = cell ? cell.dataset.value || "" : "";
    var number = Number(raw);
    return raw !== "" && isFinite(number) ? number : raw.toLowerCase();
  }

  function sortBy(table, th) {
    var key = th.dataset.sort;
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("thead th[data-sort]").forEach(function (other) { other.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.querySelectorAll("tr[data-job-id]"));
    rows.sort(function (a, b) {
      var x = sortValue(a, key), y = sortValue(b, key);
      if (x === "" || y === "") return x === y ? 0 : x === "" ? 1 : -1;  // blanks last, either way
      if (typeof x !== typeof y) { x = String(x); y = String(y); }
      var order = x < y ? -1 : x > y ? 1 : 0;
      return ascending ? order : -order;
    });
    rows.forEach(function (tr) { body.appendChild(tr); });
  }

  // -- selection and compare ------------------------------------------------------------

  function selectedIds() {
    return Array.prototype.map.call(document.querySelectorAll("input.run-select:checked"),
                                    function (box) { return box.value; });
  }

  function updateCompareButton() {
    var button = document.getElementById("compare-button");
    if (!button) return;
    var count = selectedIds().length;
    button.disabled = count < 2;
    var hint = document.getElementById("runs-selected-count");
    if (hint) hint.textContent = count ? count + " selected" + (count < 2 ? ": select one more to compare" : "")
                                       : "Select two jobs or more to compare them.";
  }

  // -- live updates ---------------------------------------------------------------------

  function activeIds(table) {
    return Array.prototype.filter.call(table.querySelectorAll("tbody tr[data-job-id]"), function (tr) {
      return ACTIVE.indexOf(tr.dataset.status) !== -1;
    }).map(function (tr) { return tr.dataset.jobId; });
  }

  function fetchItems(url) {
    return fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}}).then(function (r) {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    }).then(function (body) { return body.results || []; });
  }

  function apply(table, items, urls, addNew) {
    var body = table.tBodies[0];
    var newest = Math.max.apply(null, [0].concat(Array.prototype.map.call(
      body.querySelectorAll("tr[data-job-id]"), function (tr) { return Number(tr.dataset.jobId); })));
    items.slice().reverse().forEach(function (item) {  // oldest first, so each new row goes on top in order
      var tr = body.querySelector('tr[data-job-id="' + item.id + '"]');
      if (tr) {
        updateRow(tr, item, urls);
      } else if (addNew && item.id > newest) {
        var empty = body.querySelector("tr.runs-empty");
        if (empty) empty.remove();
        body.insertBefore(newRow(table, item, urls), body.firstChild);
      }
    });
  }

  function poll(table, urls) {
    var active = activeIds(table);
    if (!active.length) return;
    var base = table.dataset.apiUrl + "?fields=" + FIELDS.join(",");
    var live = table.dataset.liveRows === "true";
    var filtered = base + "&limit=50" + (table.dataset.filterQuery ? "&" + table.dataset.filterQuery : "");
    var requests = [fetchItems(base + "&limit=50&ids=" + active.slice(0, 50).join(","))];
    if (live) requests.push(fetchItems(filtered));
    Promise.all(requests).then(function (answers) {
      apply(table, answers[0], urls, false);
      if (live) apply(table, answers[1], urls, true);
    }).catch(function () { /* the next tick tries again */ }).then(function () {
      window.setTimeout(function () { poll(table, urls); }, POLL_MS);
    });
  }

  function init() {
    document.querySelectorAll("table.runs-table").forEach(function (table) {
      var urls = {jobs: table.dataset.detailUrl, models: table.dataset.modelUrl};
      table.querySelectorAll("thead th[data-sort]").forEach(function (th) {
        th.tabIndex = 0;
        th.addEventListener("click", function () { sortBy(table, th); });
        th.addEventListener("keydown", function (event) { if (event.key === "Enter") sortBy(table, th); });
      });
      table.addEventListener("change", function (event) {
        if (event.target.classList.contains("run-select")) updateCompareButton();
      });
      window.setTimeout(function () { poll(table, urls); }, POLL_MS);
    });
    var button = document.getElementById("compare-button");
    if (button) {
      button.addEventListener("click", function () {
        var ids = selectedIds();
        if (ids.length >= 2) window.location.href = button.dataset.compareUrl + "?ids=" + ids.join(",");
      });
    }
    var filters = document.getElementById("runs-filters");
    if (filters) {
      filters.addEventListener("change", function () {
        // Empty selects are left out of the URL, so a shared link holds only the filters in use.
        Array.prototype.forEach.call(filters.querySelectorAll("select"), function (select) {
          select.disabled = !select.value;
        });
        filters.submit();
      });
      // Back to this page from the browser's cache: the selects left out of the last submit are usable again.
      window.addEventListener("pageshow", function () {
        Array.prototype.forEach.call(filters.querySelectorAll("select"), function (select) { select.disabled = false; });
      });
    }
    updateCompareButton();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
