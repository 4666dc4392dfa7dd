// The console's one script, for its live parts. Every page works without it.
//
// - An element with data-poll="URL" (and data-poll-ms, default 2000) has its content replaced by
//   the HTML fragment at URL, periodically, while the page is visible.
// - A form with data-inline is submitted with fetch; the HTML fragment answered replaces the
//   content of the element named by its data-target (a CSS selector).
// - A button with data-copy="SELECTOR" (rendered hidden: without this script it would do nothing)
//   is shown, and copies the value (or text) of the element SELECTOR names to the clipboard.
"use strict";
(function () {
  function poll(el) {
    var url = el.getAttribute("data-poll");
    var ms = parseInt(el.getAttribute("data-poll-ms") || "2000", 10);
    function tick() {
      if (!document.body.contains(el)) return;
      if (document.visibilityState === "hidden") { setTimeout(tick, ms); return; }
      fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html !== null && el.getAttribute("data-poll") === url) { el.innerHTML = html; start(el); }
        })
        .catch(function () {})
        .then(function () { setTimeout(tick, ms); });
    }
    setTimeout(tick, ms);
  }

  function inline(form) {
    form.addEventListener("submit", function (event) {
      var target = document.querySelector(form.getAttribute("data-target"));
      if (!target) return; // no target: an ordinary submit
      event.preventDefault();
      var button = form.querySelector("[type=submit]");
      if (button) button.disabled = true;
      fetch(form.action, {
        method: (form.getAttribute("method") || "post").toUpperCase(),
        body: new URLSearchParams(new FormData(form)),
        credentials: "same-origin",
        headers: { "Accept": "text/html" }
      })
        .then(function (r) { return r.text(); })
        .then(function (html) { target.innerHTML = html; start(target); })
        .catch(function () { target.textContent = "The request failed. Try again."; })
        .then(function () { if (button) button.disabled = false; });
    });
  }

  function copy(button) {
    button.hidden = false;
    button.addEventListener("click", function () {
      var source = document.querySelector(button.getAttribute("data-copy"));
      if (!source) return;
      var text = "value" in source ? source.value : source.textContent;
      var label = button.textContent;
      function done(message) {
        button.textContent = message;
        setTimeout(function () { button.textContent = label; }, 2000);
      }
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () { done("Copied"); }, function () { done("Select and copy it"); });
      } else if (source.select) {
        source.select();
        done(document.execCommand("copy") ? "Copied" : "Select and copy it");
      }
    });
  }

  // Wire the live parts inside `root` (the page, or a fragment just swapped in).
  function start(root) {
    root.querySelectorAll("button[data-copy]").forEach(function (button) {
      if (!button.__copy) { button.__copy = true; copy(button); }
    });
    root.querySelectorAll("[data-poll]").forEach(function (el) {
      if (!el.__polling) { el.__polling = true; poll(el); }
    });
    root.querySelectorAll("form[data-inline]").forEach(function (form) {
      if (!form.__inline) { form.__inline = true; inline(form); }
    });
  }

  document.addEventListener("DOMContentLoaded", function () { start(document); });
})();
