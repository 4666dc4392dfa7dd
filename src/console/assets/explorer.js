// The API explorer's script (the explorer page only). It picks an endpoint when the select
// changes, and sends the form as a request to the REST API on this origin with the API key typed
// in: the key stays in this page (never stored, never sent to a console route). It shows the
// response and the same request as a curl line (with $BRIDGE_KEY in place of the key).
"use strict";
(function () {
  function shellQuote(s) { return "'" + s.replace(/'/g, "'\\''") + "'"; }

  // The value of a field as the API takes it; undefined when left empty.
  function valueOf(el) {
    var v = el.value, kind = el.getAttribute("data-kind");
    if (v.trim() === "") return undefined;
    if (kind === "integer" || kind === "number") {
      var n = Number(v);
      if (isNaN(n)) throw new Error("is not a number");
      return n;
    }
    if (kind === "boolean") return v === "true";
    if (kind === "json") {
      try { return JSON.parse(v); } catch (e) { throw new Error("is not valid JSON"); }
    }
    return v;
  }

  // The request the form describes: method, url, headers (the key apart) and body text.
  function requestOf(form) {
    var path = form.getAttribute("data-path"), query = [], headers = {}, body = {}, raw = "";
    form.querySelectorAll("[data-in]").forEach(function (el) {
      var where = el.getAttribute("data-in"), name = el.getAttribute("data-name"), v;
      if (where === "raw") { raw = el.value.trim(); return; }
      try { v = valueOf(el); } catch (e) { throw new Error(name + " " + e.message); }
      if (v === undefined) {
        if (where === "path") throw new Error(name + " is required");
        return;
      }
      if (where === "path") path = path.replace("{" + name + "}", encodeURIComponent(v));
      else if (where === "query") query.push(encodeURIComponent(name) + "=" + encodeURIComponent(String(v)));
      else if (where === "header") headers[name] = String(v);
      else body[name] = v;
    });
    var kind = form.getAttribute("data-body"), text = null;
    if (kind === "fields") text = JSON.stringify(body);
    else if (kind === "raw" && raw !== "") text = raw;
    if (text !== null) headers["Content-Type"] = "application/json";
    var url = location.origin + form.getAttribute("data-base") + path + (query.length ? "?" + query.join("&") : "");
    return { method: form.getAttribute("data-method"), url: url, headers: headers, body: text };
  }

  function curlOf(r) {
    var parts = ["curl", "-X", r.method, shellQuote(r.url), "-H", "\"Authorization: Bearer $BRIDGE_KEY\""];
    Object.keys(r.headers).forEach(function (h) { parts.push("-H", shellQuote(h + ": " + r.headers[h])); });
    if (r.body !== null) parts.push("-d", shellQuote(r.body));
    return parts.join(" ");
  }

  function start() {
    var pick = document.getElementById("op");
    if (pick) pick.addEventListener("change", function () { if (pick.value) pick.form.submit(); });
    var form = document.getElementById("explorer-form");
    if (!form) return;
    var send = document.getElementById("explorer-send");
    var result = document.getElementById("explorer-result");
    var status = document.getElementById("explorer-status");
    var time = document.getElementById("explorer-time");
    var output = document.getElementById("explorer-body");
    var curl = document.getElementById("explorer-curl");
    send.disabled = false;
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var request;
      result.hidden = false;
      try { request = requestOf(form); } catch (e) {
        status.textContent = "not sent"; time.textContent = ""; output.textContent = e.message; curl.textContent = "";
        return;
      }
      curl.textContent = curlOf(request);
      var key = document.getElementById("explorer-key").value.trim();
      var headers = Object.assign({ "Authorization": "Bearer " + key }, request.headers);
      var started = performance.now();
      send.disabled = true;
      status.textContent = "sending…"; output.textContent = "";
      fetch(request.url, { method: request.method, headers: headers, body: request.body, credentials: "omit", cache: "no-store" })
        .then(function (response) {
          return response.text().then(function (text) {
            status.textContent = response.status + " " + response.statusText;
            time.textContent = "in " + Math.round(performance.now() - started) + " ms";
            try { output.textContent = JSON.stringify(JSON.parse(text), null, 2); } catch (e) { output.textContent = text; }
          });
        })
        .catch(function (e) { status.textContent = "failed"; output.textContent = String(e); })
        .then(function () { send.disabled = false; });
    });
  }

  document.addEventListener("DOMContentLoaded", start);
})();
