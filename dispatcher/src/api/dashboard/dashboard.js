// The dashboard's only script. Live updates: every two seconds the page
// is fetched again and the parts marked `data-live` are swapped in, so
// rendering (and HTML escaping) happens on the server only. Retry and
// Cancel buttons call the JSON API; the session cookie authenticates.
(function () {
  "use strict";
  const flash = document.getElementById("flash");

  async function update() {
    const response = await fetch(location.href, { headers: { Accept: "text/html" } });
    // Sent to the login form: the session ended.
    if (response.redirected) { location.href = response.url; return; }
    if (!response.ok) return;
    const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const part of document.querySelectorAll("[data-live]")) {
      const replacement = fresh.getElementById(part.id);
      if (replacement) part.replaceWith(replacement);
    }
  }

  async function poll() {
    try { await update(); } catch (e) { /* offline for a moment: try again */ }
    setTimeout(poll, 2000);
  }
  if (document.querySelector("[data-live]")) setTimeout(poll, 2000);

  document.addEventListener("click", async function (event) {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    button.disabled = true;
    const { action, job } = button.dataset;
    const response = await fetch("/jobs/" + encodeURIComponent(job) + "/" + action, { method: "POST" });
    const body = await response.json().catch(() => ({}));
    if (flash) {
      flash.textContent = response.ok ? action + " requested for " + job : (body.error || response.statusText);
    }
    await update().catch(() => {});
  });

  // Flow control: Resume buttons and the pause form call PUT/DELETE
  // /pauses/{scope}/{name}.
  async function setPaused(scope, name, paused) {
    const path = "/pauses/" + encodeURIComponent(scope) + "/" + encodeURIComponent(name);
    const response = await fetch(path, { method: paused ? "PUT" : "DELETE" });
    const body = await response.json().catch(() => ({}));
    if (flash) {
      flash.textContent = response.ok
        ? scope + " " + name + (paused ? " paused" : " resumed")
        : (body.error || response.statusText);
    }
    await update().catch(() => {});
  }
  document.addEventListener("click", function (event) {
    const button = event.target.closest("button[data-flow]");
    if (!button) return;
    button.disabled = true;
    setPaused(button.dataset.scope, button.dataset.name, false);
  });
  const pauseForm = document.getElementById("pause-form");
  if (pauseForm) {
    pauseForm.addEventListener("submit", function (event) {
      event.preventDefault();
      const form = new FormData(pauseForm);
      setPaused(form.get("scope"), form.get("name").trim(), true);
    });
  }

  // The job page's log pane: the follow endpoint's SSE `line` events
  // (JSON) become text nodes, never markup. The pane keeps the newest
  // MAX_LINES; the plain-text link has everything. Choosing an attempt
  // starts over with that attempt's log.
  const logs = document.getElementById("logs");
  if (logs) {
    const MAX_LINES = 5000;
    const lines = document.getElementById("log-lines");
    const state = document.getElementById("log-state");
    const choice = document.getElementById("log-attempt");
    const raw = document.getElementById("log-raw");
    const base = "/jobs/" + encodeURIComponent(logs.dataset.job) + "/logs";
    let source = null;
    let trimmed = false;

    function append(entry) {
      const atBottom = lines.scrollTop + lines.clientHeight >= lines.scrollHeight - 4;
      const row = document.createElement("div");
      row.className = "log-line";
      row.dataset.stream = entry.stream;
      const meta = document.createElement("span");
      meta.className = "log-meta";
      meta.title = entry.ts;
      meta.textContent = entry.ts.slice(11, 23) + " [" + entry.attempt + " " + entry.stream + "] ";
      row.append(meta, document.createTextNode(entry.line));
      lines.append(row);
      while (lines.childElementCount > MAX_LINES) {
        lines.firstElementChild.remove();
        trimmed = true;
      }
      if (atBottom) lines.scrollTop = lines.scrollHeight;
    }

    function follow() {
      if (source) source.close();
      lines.replaceChildren();
      lines.dataset.ended = "false";
      trimmed = false;
      const query = choice.value ? "?attempt=" + encodeURIComponent(choice.value) : "";
      raw.href = base + query;
      state.textContent = "loading…";
      // A reconnect resumes from the last line seen (Last-Event-ID).
      const stream = new EventSource(base + (query ? query + "&" : "?") + "follow=true");
      source = stream;
      stream.addEventListener("open", function () { state.textContent = "following live"; });
      stream.addEventListener("line", function (event) { append(JSON.parse(event.data)); });
      stream.addEventListener("end", function () {
        stream.close();
        lines.dataset.ended = "true";
        state.textContent = trimmed ? "showing the last " + MAX_LINES + " lines"
          : lines.childElementCount ? "" : "no output";
      });
      stream.addEventListener("error", function () {
        // CLOSED: refused (e.g. the session ended), not retried by the browser.
        state.textContent = stream.readyState === EventSource.CLOSED ? "log unavailable" : "reconnecting…";
      });
    }
    choice.addEventListener("change", follow);
    follow();
  }
})();
