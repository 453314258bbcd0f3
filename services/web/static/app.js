// OKR Ledger dashboard: live updates (server-sent events), lint as you type, time zones.
// Everything works without it; it only makes pages live and forms helpful.
(function () {
  "use strict";
  var body = document.body;
  var words = document.getElementById("live-words");
  function word(name) { return words ? words.getAttribute("data-" + name) : name; }
  var csrf = body.getAttribute("data-csrf") || "";

  // --- time zones: the browser's offset for datetime-local fields ---------------------------
  function fillTimezones(root) {
    root.querySelectorAll("input[data-tz]").forEach(function (input) {
      input.value = String(new Date().getTimezoneOffset());
    });
  }
  fillTimezones(document);

  // --- forms drawn from a version: remember which ones the user started to fill ------------
  document.addEventListener("input", function (event) {
    var form = event.target.closest && event.target.closest("form[data-versioned]");
    if (form) { form.setAttribute("data-dirty", "1"); }
  });

  // --- live ---------------------------------------------------------------------------------
  var scope = body.getAttribute("data-live-scope");
  var indicator = document.getElementById("live");
  var refreshing = false, pending = false, refreshes = 0;

  function setState(state) {
    if (!indicator) { return; }
    indicator.setAttribute("data-state", state);
    var text = indicator.querySelector(".live-text");
    if (text) { text.textContent = word(state); }
  }

  function swap(fresh) {
    document.querySelectorAll("[data-live]").forEach(function (old) {
      var replacement = old.id && fresh.getElementById(old.id);
      if (replacement) { old.replaceWith(document.importNode(replacement, true)); }
    });
    document.querySelectorAll("form[data-versioned]").forEach(function (old) {
      var replacement = old.id && fresh.getElementById(old.id);
      if (!replacement) { return; }
      if (!old.hasAttribute("data-dirty")) {
        old.replaceWith(document.importNode(replacement, true));
        return;
      }
      var seen = old.querySelector("input[name=expected_version]");
      var now = replacement.querySelector("input[name=expected_version]");
      if (seen && now && seen.value !== now.value && !old.querySelector(".form-stale")) {
        var note = document.createElement("p");
        note.className = "form-stale";
        note.setAttribute("role", "status");
        note.textContent = word("changed");
        old.insertBefore(note, old.firstChild);
      }
    });
  }

  function refresh() {
    if (refreshing) { pending = true; return; }
    refreshing = true;
    fetch(window.location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
      .then(function (response) {
        if (response.status === 401 || response.redirected) { window.location.reload(); return null; }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html) {
          swap(new DOMParser().parseFromString(html, "text/html"));
          refreshes += 1;
          body.setAttribute("data-refreshes", String(refreshes));
          if (indicator) {
            var text = indicator.querySelector(".live-text");
            if (text) { text.textContent = word("live") + " · " + word("updated") + " " + new Date().toLocaleTimeString(); }
          }
        }
      })
      .catch(function () { /* the stream says when the server is gone */ })
      .then(function () {
        refreshing = false;
        if (pending) { pending = false; refresh(); }
      });
  }

  function concerns(ids) {
    if (scope === "*" || ids.indexOf("*") >= 0) { return true; }
    return ids.indexOf(scope) >= 0;
  }

  if (scope && indicator && window.EventSource) {
    var source = new EventSource("/ui/events");
    source.addEventListener("open", function () { setState("live"); });
    source.addEventListener("hello", function () { setState("live"); });
    source.addEventListener("bye", function () { setState("lost"); });
    source.addEventListener("error", function () { setState("lost"); });
    source.addEventListener("changed", function (event) {
      setState("live");
      var ids = [];
      try { ids = JSON.parse(event.data).objectives || []; } catch (e) { ids = ["*"]; }
      if (concerns(ids)) { refresh(); }
    });
  }

  // --- the new objective form ---------------------------------------------------------------
  var draft = document.getElementById("new-objective");
  if (!draft) { return; }
  var template = document.getElementById("kr-template");
  var status = document.getElementById("lint-status");
  var timer = null;

  function showKinds(block) {
    var kind = block.querySelector("select[name$='-kind']");
    if (!kind) { return; }
    block.querySelectorAll("[data-kinds]").forEach(function (field) {
      var kinds = field.getAttribute("data-kinds").split(" ");
      field.hidden = kinds.indexOf(kind.value) < 0;
    });
  }
  draft.querySelectorAll(".kr-block").forEach(showKinds);

  function issueBox(field) {
    var box = draft.querySelector('[data-issues-for="' + field + '"]');
    if (box) { return box; }
    var match = /^key_results\[(\d+)\]/.exec(field);
    if (match) { box = draft.querySelector('[data-issues-for="key_results[' + match[1] + '].title"]'); }
    return box || draft.querySelector('[data-issues-for="key_results"]');
  }

  function show(report) {
    draft.querySelectorAll(".issues").forEach(function (box) { box.textContent = ""; });
    draft.querySelectorAll("[aria-invalid]").forEach(function (input) { input.removeAttribute("aria-invalid"); });
    draft.querySelectorAll(".field.has-problem").forEach(function (f) { f.classList.remove("has-problem"); });
    function put(issue, level) {
      var box = issueBox(issue.field);
      if (!box) { return; }
      var line = document.createElement("p");
      line.className = level;
      line.setAttribute("data-code", issue.code);
      line.textContent = issue.message;
      box.appendChild(line);
      var input = draft.querySelector('[data-field="' + issue.field + '"]');
      if (input && level === "problem") {
        input.setAttribute("aria-invalid", "true");
        input.closest(".field").classList.add("has-problem");
      }
    }
    report.problems.forEach(function (issue) { put(issue, "problem"); });
    report.warnings.forEach(function (issue) { put(issue, "warning"); });
    if (status) {
      status.textContent = report.ok
        ? (report.warnings.length
          ? "✔ " + word("warnings").replace("{n}", report.warnings.length)
          : "✔ " + word("ready"))
        : "✖ " + word("problems").replace("{n}", report.problems.length);
    }
    draft.setAttribute("data-linted", String((Number(draft.getAttribute("data-linted")) || 0) + 1));
  }

  function lintNow() {
    var data = new URLSearchParams(new FormData(draft));
    fetch(draft.getAttribute("data-lint"), {
      method: "POST",
      body: data,
      credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Accept": "application/json" }
    }).then(function (response) { return response.ok ? response.json() : null; })
      .then(function (report) { if (report) { show(report); } })
      .catch(function () {});
  }

  function lintSoon() {
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(lintNow, 250);
  }

  draft.addEventListener("input", lintSoon);
  draft.addEventListener("change", function (event) {
    var block = event.target.closest(".kr-block");
    if (block) { showKinds(block); }
    lintSoon();
  });

  var add = document.getElementById("add-kr");
  if (add && template) {
    add.addEventListener("click", function (event) {
      event.preventDefault();
      var blocks = document.getElementById("kr-blocks");
      var next = 0;
      blocks.querySelectorAll(".kr-block").forEach(function (b) {
        next = Math.max(next, Number(b.getAttribute("data-index")) + 1);
      });
      var html = template.innerHTML.replace(/999/g, String(next)).replace(/>1000</, ">" + (next + 1) + "<");
      var holder = document.createElement("div");
      holder.innerHTML = html;
      var block = holder.firstElementChild;
      block.querySelector(".n").textContent = String(next + 1);
      blocks.appendChild(block);
      showKinds(block);
      block.querySelector("input").focus();
      lintSoon();
    });
  }
})();
