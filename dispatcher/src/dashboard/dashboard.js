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
})();
