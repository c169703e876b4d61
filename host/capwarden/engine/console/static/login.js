// The login form: POST /api/login as JSON (a cross-site form cannot send JSON), then the console.
"use strict";
(function () {
  const form = document.getElementById("login-form");
  const error = document.getElementById("login-error");
  const button = document.getElementById("login-button");

  function fail(text) {
    error.textContent = text;
    error.hidden = false;
    document.getElementById("password").value = "";
    document.getElementById("password").focus();
  }

  form.addEventListener("submit", async function (ev) {
    ev.preventDefault();
    const name = document.getElementById("name").value.trim();
    const password = document.getElementById("password").value;
    if (!name || !password) {
      fail("Give your operator name and password.");
      return;
    }
    button.disabled = true;
    error.hidden = true;
    try {
      const r = await fetch("/api/login", {
        method: "POST", credentials: "same-origin", cache: "no-store",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify({name: name, password: password}),
      });
      if (r.ok) {
        window.location.replace("/");
        return;
      }
      let text = "Login failed (" + r.status + ").";
      try { text = (await r.json()).error || text; } catch (e) { /* not JSON */ }
      fail(text.charAt(0).toUpperCase() + text.slice(1) + ".");
    } catch (e) {
      fail("The engine does not answer. Is capwarden serve running?");
    } finally {
      button.disabled = false;
    }
  });
})();
