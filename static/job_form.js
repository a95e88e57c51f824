/* Condense job form: the chosen algorithm's sections and parameters, the sparsity / bits / layer controls that
   write the config list (and follow it when it is edited), the datasets that fit the chosen model.
   No dependencies. The server gives the data as JSON script tags: #job-form-models (per model: layers,
   datasets that fit, the default one) and #job-form-algorithms (per algorithm: sections, bits). */
(function () {
  "use strict";

  // Keys the controls understand in a config list entry; others (quant_types, quant_scheme...) are kept as
  // they are, except these, which change what is selected: with them the list is custom.
  var SELECTION_KEYS = ["op_types", "op_names"];
  var CUSTOM_KEYS = ["op_names_re", "exclude_op_names", "exclude_op_types", "exclude", "total_sparsity",
    "max_sparse_ratio", "min_sparse_ratio"];
  var SHORTCUT_TYPES = ["Conv2d", "Linear"];
  var MAX_SPARSITY = 0.95;

  function readJSON(id) {
    var element = document.getElementById(id);
    return element ? JSON.parse(element.textContent) : {};
  }

  // The config list in the style of Python's json.dumps: [{"op_types": ["Conv2d"], "sparse_ratio": 0.5}].
  function formatValue(value) {
    if (Array.isArray(value)) return "[" + value.map(formatValue).join(", ") + "]";
    if (value !== null && typeof value === "object") {
      return "{" + Object.keys(value).map(function (key) {
        return JSON.stringify(key) + ": " + formatValue(value[key]);
      }).join(", ") + "}";
    }
    return JSON.stringify(value);
  }

  function sameSet(a, b) {
    if (a.length !== b.length) return false;
    return a.every(function (item) { return b.indexOf(item) !== -1; });
  }

  function setupJobForm(form) {
    var models = readJSON("job-form-models");
    var algorithms = readJSON("job-form-algorithms");
    var modelSelect = form.querySelector("select[name=model]");
    var algorithmSelect = form.querySelector("select[name=algorithm]");
    var datasetSelect = form.querySelector("select[name=dataset]");
    var configList = form.querySelector("textarea[name=config_list]");
    var sparsity = document.getElementById("sparsity-control");
    var sparsityValue = document.getElementById("sparsity-value");
    var bits = document.getElementById("bits-control");
    var picker = document.getElementById("layer-picker");
    var state = document.getElementById("config-controls-state");
    var datasetTouched = false;
    // What the controls hold: the value (sparsity or bits) comes from the inputs, the selection from here
    // ({op_types: [...]} or {op_names: [...]}), the other keys of the entry are kept as they were.
    var selection = { op_types: ["Conv2d"] };
    var extras = {};

    var defaults = [];
    form.querySelectorAll(".algo-info[data-default-config]").forEach(function (info) {
      defaults.push(info.dataset.defaultConfig);
    });

    function algorithm() { return algorithms[algorithmSelect.value] || { sections: [], bits: [] }; }
    function model() { return models[modelSelect.value] || { layers: [], datasets: [], default: "" }; }
    function applies(section) { return algorithm().sections.indexOf(section) !== -1; }
    function valueKey() { return applies("bits") ? "quant_bits" : applies("sparsity") ? "sparse_ratio" : null; }

    // -- sections and parameters of the chosen algorithm ----------------------------------------------------

    function showSections() {
      var chosen = algorithmSelect.value;
      form.querySelectorAll(".algo-info[data-algorithm]").forEach(function (info) {
        info.hidden = info.dataset.algorithm !== chosen;
      });
      // In document order: a section inside another (fine-tuning in training) is decided after it.
      form.querySelectorAll("[data-section], [data-algorithms]").forEach(function (element) {
        var on = element.dataset.section !== undefined ? applies(element.dataset.section)
          : element.dataset.algorithms.split(" ").indexOf(chosen) !== -1;
        var parent = element.parentElement.closest("[data-section]");
        if (parent && parent.hidden) on = false;
        element.hidden = !on;
        element.querySelectorAll("input[name], select[name], textarea[name]").forEach(function (input) {
          input.disabled = !on;
        });
      });
      var params = document.getElementById("algorithm-params");
      if (params) params.hidden = !params.querySelector("[data-algorithms]:not([hidden])");
      var allowed = algorithm().bits.map(String);
      Array.prototype.forEach.call(bits.options, function (option) {
        option.hidden = option.disabled = allowed.indexOf(option.value) === -1;
      });
      if (allowed.length && allowed.indexOf(bits.value) === -1) bits.value = allowed[0];
    }

    // -- the layer picker -----------------------------------------------------------------------------------

    function channelPruner() { return algorithm().granularity === "out_channel" && !applies("bits"); }

    function pickable(layer) { return !(channelPruner() && layer.reason); }

    function drawPicker() {
      picker.textContent = "";
      var layers = model().layers;
      if (!layers.length) {
        var empty = document.createElement("li");
        empty.className = "hint";
        empty.textContent = "The model's inspection lists no layer to pick; select them in the JSON below.";
        picker.appendChild(empty);
      }
      layers.forEach(function (layer) {
        var item = document.createElement("li");
        var label = document.createElement("label");
        var box = document.createElement("input");
        box.type = "checkbox";
        box.className = "layer-pick";
        box.value = layer.name;
        box.dataset.type = layer.type;
        box.disabled = !pickable(layer);
        label.appendChild(box);
        label.appendChild(document.createTextNode(layer.name + " "));
        var type = document.createElement("span");
        type.className = "layer-type";
        type.textContent = layer.type;
        label.appendChild(type);
        var why = box.disabled ? "\u2014 channels kept: " + layer.reason
          : channelPruner() && layer.note ? "\u2014 some channels kept: " + layer.note : "";
        if (box.disabled) item.className = "unprunable";
        if (why) {
          var reason = document.createElement("span");
          reason.className = "layer-reason";
          reason.textContent = why;
          label.appendChild(reason);
        }
        item.appendChild(label);
        picker.appendChild(item);
      });
      markPicker();
    }

    function pickableNames(types) {
      return model().layers.filter(function (layer) {
        return pickable(layer) && (!types || types.indexOf(layer.type) !== -1);
      }).map(function (layer) { return layer.name; });
    }

    // Types whose layers can all be picked: the selection can say op_types for them.
    function wholeTypes(types) {
      return types.every(function (type) {
        return model().layers.every(function (layer) { return layer.type !== type || pickable(layer); });
      });
    }

    function selectedNames() {
      if (selection.op_names) return selection.op_names;
      return pickableNames(selection.op_types);
    }

    function markPicker() {
      var names = selectedNames();
      picker.querySelectorAll("input.layer-pick").forEach(function (box) {
        box.checked = !box.disabled && names.indexOf(box.value) !== -1;
      });
    }

    // The ticked boxes as a selection: op_types when they are exactly all the layers of the shortcut types.
    function selectionFromPicker() {
      var names = [];
      picker.querySelectorAll("input.layer-pick:checked").forEach(function (box) { names.push(box.value); });
      var candidates = [["Conv2d"], ["Linear"], ["Conv2d", "Linear"]];
      for (var i = 0; i < candidates.length; i += 1) {
        var types = candidates[i];
        if (names.length && wholeTypes(types) && sameSet(names, pickableNames(types))) return { op_types: types };
      }
      return { op_names: names };
    }

    // -- controls <-> config list -------------------------------------------------------------------------

    function setCustom(custom) {
      state.hidden = !custom;
      [sparsity, bits].forEach(function (input) { input.disabled = custom; });
      picker.querySelectorAll("input.layer-pick").forEach(function (box) {
        if (custom) box.disabled = true;
      });
      form.querySelectorAll("[data-pick-type], #pick-none").forEach(function (button) { button.disabled = custom; });
    }

    function showSparsity() {
      sparsityValue.textContent = sparsity.value + " %";
    }

    function writeConfig() {
      var entry = {};
      Object.keys(selection).forEach(function (key) { entry[key] = selection[key]; });
      Object.keys(extras).forEach(function (key) { entry[key] = extras[key]; });
      var key = valueKey();
      if (key === "sparse_ratio") entry.sparse_ratio = Math.round(Number(sparsity.value)) / 100;
      if (key === "quant_bits") entry.quant_bits = Number(bits.value);
      configList.value = formatValue([entry]);
    }

    // Read the config list into the controls; false (custom) when they cannot show it.
    function readConfig() {
      var list;
      try {
        list = JSON.parse(configList.value);
      } catch (error) {
        return false;
      }
      if (!Array.isArray(list) || list.length !== 1 || list[0] === null || typeof list[0] !== "object"
          || Array.isArray(list[0])) return false;
      var entry = list[0];
      var keys = Object.keys(entry);
      if (keys.some(function (key) { return CUSTOM_KEYS.indexOf(key) !== -1; })) return false;
      var found = {};
      if (entry.op_types !== undefined && entry.op_names !== undefined) return false;
      if (entry.op_types !== undefined) {
        if (!Array.isArray(entry.op_types) || !entry.op_types.length
            || !entry.op_types.every(function (type) { return SHORTCUT_TYPES.indexOf(type) !== -1; })) return false;
        found.op_types = entry.op_types.slice();
      } else if (entry.op_names !== undefined) {
        var known = model().layers.map(function (layer) { return layer.name; });
        if (!Array.isArray(entry.op_names)
            || !entry.op_names.every(function (name) { return known.indexOf(name) !== -1; })) return false;
        found.op_names = entry.op_names.slice();
      } else {
        return false;
      }
      var key = valueKey();
      var rest = {};
      var ratio = null;
      var width = null;
      keys.forEach(function (name) {
        if (SELECTION_KEYS.indexOf(name) !== -1) return;
        if (name === "sparse_ratio" || name === "sparsity") ratio = entry[name];
        else if (name === "quant_bits") width = entry[name];
        else rest[name] = entry[name];
      });
      if (key === "sparse_ratio") {
        if (typeof ratio !== "number" || ratio < 0 || ratio > MAX_SPARSITY + 1e-9) return false;
        if ("sparse_ratio" in entry && "sparsity" in entry) return false;
        sparsity.value = String(Math.round(ratio * 100));
        showSparsity();
      } else if (key === "quant_bits") {
        if (width === null) width = Number(bits.value) || algorithm().bits[0];
        if (typeof width !== "number" || algorithm().bits.indexOf(width) === -1) return false;
        bits.value = String(width);
      } else {
        return false;
      }
      selection = found;
      extras = rest;
      return true;
    }

    function syncFromJSON() {
      var ok = readConfig();
      drawPicker();
      setCustom(!ok);
    }

    // -- datasets that fit the chosen model ---------------------------------------------------------------

    function filterDatasets(keepChoice) {
      var info = model();
      var fits = info.datasets || [];
      Array.prototype.forEach.call(datasetSelect.options, function (option) {
        var shown = option.value === "" || fits.indexOf(option.value) !== -1;
        option.hidden = option.disabled = !shown;
      });
      datasetSelect.querySelectorAll("optgroup").forEach(function (group) {
        group.hidden = !group.querySelector("option:not([hidden])");
      });
      var current = datasetSelect.value;
      var fitsNow = current === "" || fits.indexOf(current) !== -1;
      if (!fitsNow || !(keepChoice || datasetTouched)) datasetSelect.value = info.default || "";
    }

    // -- events -------------------------------------------------------------------------------------------

    algorithmSelect.addEventListener("change", function () {
      var wasCustom = !state.hidden;
      var untouched = defaults.indexOf(configList.value.trim()) !== -1;
      showSections();
      var info = document.querySelector('.algo-info[data-algorithm="' + algorithmSelect.value + '"]');
      if (untouched && info) {
        // An untouched default config list follows the algorithm's kind (pruning vs quantization keys).
        configList.value = info.dataset.defaultConfig;
      } else if (!wasCustom && valueKey()) {
        // The same layers, with this algorithm's kind of value.
        extras = {};
        writeConfig();
      }
      syncFromJSON();
    });
    modelSelect.addEventListener("change", function () {
      var names = selectedNames();
      filterDatasets(false);
      drawPicker();
      if (state.hidden && selection.op_names) {
        // Layer names belong to the previous model: keep those the new one has.
        var known = model().layers.map(function (layer) { return layer.name; });
        selection = { op_names: names.filter(function (name) { return known.indexOf(name) !== -1; }) };
        writeConfig();
      }
      syncFromJSON();
    });
    datasetSelect.addEventListener("change", function () { datasetTouched = true; });
    configList.addEventListener("input", syncFromJSON);
    sparsity.addEventListener("input", function () {
      showSparsity();
      writeConfig();
    });
    bits.addEventListener("change", writeConfig);
    picker.addEventListener("change", function () {
      selection = selectionFromPicker();
      writeConfig();
    });
    form.querySelectorAll("[data-pick-type]").forEach(function (button) {
      button.addEventListener("click", function () {
        var type = button.dataset.pickType;
        picker.querySelectorAll("input.layer-pick").forEach(function (box) {
          if (!box.disabled && box.dataset.type === type) box.checked = true;
        });
        selection = selectionFromPicker();
        writeConfig();
      });
    });
    document.getElementById("pick-none").addEventListener("click", function () {
      picker.querySelectorAll("input.layer-pick").forEach(function (box) { box.checked = false; });
      selection = { op_names: [] };
      writeConfig();
    });
    document.getElementById("use-controls").addEventListener("click", function () {
      extras = {};
      setCustom(false);
      drawPicker();
      selection = selectionFromPicker();
      writeConfig();
    });

    showSections();
    filterDatasets(true);
    syncFromJSON();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("form[data-job-form]").forEach(setupJobForm);
  });
})();
