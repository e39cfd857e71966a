// The console's only script of its own (CSP: scripts from this site, nothing inline).
// Everything here is an enhancement: every page works without it.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function ready(fn) {
    if (document.readyState !== "loading") { fn(); } else { document.addEventListener("DOMContentLoaded", fn); }
  }

  function enhance(root) {
    // Copy buttons beside each credential (hidden without JavaScript: the values are selectable).
    root.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
      if (button.dataset.bound) { return; }
      button.dataset.bound = "1";
      button.hidden = false;
      button.addEventListener("click", function () {
        var field = document.getElementById(button.dataset.copy);
        if (!field) { return; }
        field.select();
        var done = function () { button.textContent = "Copied"; };
        if (navigator.clipboard && navigator.clipboard.writeText) {
          navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
        } else {
          document.execCommand("copy");
          done();
        }
      });
    });
    // A form that issues credentials or creates something is sent once: a second click would
    // only be refused (the first answer is the one that shows the credentials).
    root.querySelectorAll("button[data-once]").forEach(function (button) {
      var form = button.form;
      if (!form || form.dataset.bound) { return; }
      form.dataset.bound = "1";
      form.addEventListener("submit", function () {
        window.setTimeout(function () { button.disabled = true; }, 0);
      });
    });
  }

  // The printable review's Print button (hidden without JavaScript: the browser's own print works).
  function printButtons(root) {
    root.querySelectorAll("button[data-print]").forEach(function (button) {
      if (button.dataset.bound) { return; }
      button.dataset.bound = "1";
      button.hidden = false;
      button.addEventListener("click", function () { window.print(); });
    });
  }

  ready(function () { enhance(document); printButtons(document); });
  document.addEventListener("htmx:afterSwap", function (event) { enhance(event.target); });
})();
