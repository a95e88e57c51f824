/* API tokens page: copy the new key to the clipboard. */
(function () {
  "use strict";

  function setupCopy(button) {
    button.addEventListener("click", function () {
      var source = document.getElementById(button.getAttribute("data-copy-target"));
      var done = document.getElementById("copy-token-done");
      var text = source.textContent.trim();
      function shown() { if (done) done.hidden = false; }
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(shown, function () { selectText(source); });
      } else {
        selectText(source);  // plain http: the Clipboard API is unavailable; leave the key selected to copy
        try { if (document.execCommand("copy")) shown(); } catch (e) { /* selected is enough */ }
      }
    });
  }

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-copy-target]").forEach(setupCopy);
  });
})();
