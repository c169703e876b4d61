// The console page: one live stream (/api/events, Server-Sent Events) of the engine's state,
// rendered into the page with textContent only (never HTML from data), and the operator's
// actions sent as JSON POSTs with the session's CSRF token.
"use strict";
(function () {
  let csrf = null;
  let latest = null;          // the last state received
  let receivedAt = 0;         // performance.now() when it came: countdowns run from it
  const seenDecisions = new Set();

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function short(id) {
    if (!id) return "";
    const s = String(id);
    return s.length > 22 ? s.slice(0, 13) + "…" + s.slice(-6) : s;
  }

  function idText(id) {                       // the full id on hover and for screen readers
    return el("code", {title: id, "aria-label": id}, short(id));
  }

  function ago(wallSeconds) {
    if (!wallSeconds || !latest) return "";
    const now = latest.now + (performance.now() - receivedAt) / 1000;
    const s = Math.max(0, Math.round(now - wallSeconds));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s ago";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min ago";
  }

  function utc(wallSeconds) {
    if (!wallSeconds) return "";
    return new Date(wallSeconds * 1000).toISOString().slice(11, 19);
  }

  function notice(text, bad) {
    const n = $("notice");
    n.textContent = text;
    n.className = "notice" + (bad ? " notice-bad" : "");
    n.hidden = false;
  }

  function link(state, text) {
    const p = $("link");
    p.className = "pill pill-" + state;
    p.textContent = text;
  }

  // ---- actions ----------------------------------------------------------------------------
  async function post(path, body, what, quiet) {
    try {
      const r = await fetch(path, {
        method: "POST", credentials: "same-origin", cache: "no-store",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf || ""},
        body: JSON.stringify(body),
      });
      if (r.status === 401) { window.location.replace("/login"); return false; }
      let data = {};
      try { data = await r.json(); } catch (e) { /* not JSON */ }
      if (!r.ok) { notice(what + " refused: " + (data.error || r.status), true); return false; }
      const res = data.result || {};
      if (quiet) return data;
      if (res.result === "waiting") {
        notice(what + ": waiting for " + short(body.fay_id) + " to ask for it again (until " + utc(res.until) +
               " UTC); you keep control until then.", false);
      } else {
        notice(what + ": done.", false);
      }
      return true;
    } catch (e) {
      notice(what + " not sent: the engine does not answer.", true);
      return false;
    }
  }

  function decide(d, approve) {
    return post("/api/decisions/resolve", {decision_id: d.decision_id, approve: approve},
                (approve ? "Approve " : "Deny ") + short(d.requester && d.requester.fay_id) + " on " + d.resource_id);
  }

  // ---- decisions ----------------------------------------------------------------------------
  function remainingMs(d) {
    return Math.max(0, d.remaining_ms - (performance.now() - receivedAt));
  }

  function renderDecisions(list) {
    const ol = $("decision-list");
    const keep = new Set(list.map((d) => d.decision_id));
    for (const li of Array.from(ol.children)) {
      if (!keep.has(li.dataset.decisionId)) li.remove();
    }
    $("decision-count").textContent = String(list.length);
    $("no-decisions").hidden = list.length > 0;
    for (const d of list) {
      let li = ol.querySelector('li[data-decision-id="' + CSS.escape(d.decision_id) + '"]');
      if (li) continue;                      // its countdown runs on its own; the rest does not change
      const req = d.requester || {};
      const title = "Fay " + short(req.fay_id) + " asks for " + d.resource_id;
      const approve = el("button", {type: "button", class: "approve", onclick: (ev) => { ev.target.disabled = true; decide(d, true); }}, "Approve");
      const deny = el("button", {type: "button", class: "deny", onclick: (ev) => { ev.target.disabled = true; decide(d, false); }}, "Deny");
      li = el("li", {class: "decision", "data-decision-id": d.decision_id, "aria-label": title},
        el("h3", {}, "Fay ", idText(req.fay_id), " asks for ", el("code", {}, d.resource_id)),
        el("dl", {class: "facts"},
          el("dt", {}, "Access"), el("dd", {}, d.access_mode || "-"),
          el("dt", {}, "Request"), el("dd", {}, d.what || "-"),
          el("dt", {}, "Runtime"), el("dd", {}, req.runtime_id || "-"),
          el("dt", {}, "Now held by"), el("dd", {}, d.holder && d.holder.fay_id ? idText(d.holder.fay_id) : "nobody"),
          d.detail ? el("dt", {}, "Detail") : null, d.detail ? el("dd", {class: "muted detail"}, d.detail) : null),
        el("div", {class: "countdown"},
          el("span", {class: "seconds", "data-role": "seconds"}, ""),
          el("progress", {max: String(d.timeout_ms), value: String(d.remaining_ms), "aria-label": "time left to answer"}),
          el("span", {class: "muted"}, "denied automatically when the time runs out")),
        el("div", {class: "actions"}, approve, deny));
      ol.append(li);
      if (!seenDecisions.has(d.decision_id)) {
        seenDecisions.add(d.decision_id);
        $("announce").textContent = "New request: " + title + ", " + Math.ceil(d.remaining_ms / 1000) + " seconds to answer.";
      }
    }
    tick();
  }

  function tick() {
    if (!latest) return;
    for (const d of latest.decisions || []) {
      const li = $("decision-list").querySelector('li[data-decision-id="' + CSS.escape(d.decision_id) + '"]');
      if (!li) continue;
      const left = remainingMs(d);
      li.querySelector('[data-role="seconds"]').textContent = (left / 1000).toFixed(1) + " s left";
      li.querySelector("progress").value = left;
      li.classList.toggle("urgent", left < 3000);
    }
    for (const s of document.querySelectorAll("[data-since]")) {
      s.textContent = ago(Number(s.dataset.since));
    }
  }

  // ---- boards -------------------------------------------------------------------------------
  function holderCell(r) {
    const h = r.holder;
    if (!h) return el("span", {class: "holder holder-free"}, "free");
    if (h.kind === "operator") {
      return el("span", {class: "holder holder-operator"}, "OPERATOR ", el("strong", {}, h.id),
                r.returning_to ? el("span", {class: "muted"}, " returning to ", idText(r.returning_to)) : null);
    }
    return el("span", {class: "holder holder-fay"}, "FAY ", idText(h.id),
              h.runtime_id ? el("span", {class: "muted"}, " via " + h.runtime_id) : null);
  }

  function actionsCell(r) {
    const me = latest.operator;
    const byMe = r.holder && r.holder.kind === "operator" && r.holder.id === me;
    const box = el("div", {class: "actions"});
    if (!byMe) {
      box.append(el("button", {type: "button", class: "take", "data-action": "take",
        "aria-label": "Take control of " + r.name,
        onclick: () => post("/api/resources/take", {resource_id: r.resource_id}, "Take " + r.name)}, "Take control"));
    } else {
      const input = el("input", {type: "text", name: "fay", class: "fay-input", spellcheck: "false",
        placeholder: "fay:…", "aria-label": "Fay to hand " + r.name + " back to", value: r.last_fay || "",
        oninput: (ev) => { ev.target.dataset.edited = "1"; }});
      const form = el("form", {class: "handback", onsubmit: (ev) => {
        ev.preventDefault();
        const fay = input.value.trim();
        if (!fay) { notice("Name the Fay to hand " + r.name + " back to.", true); input.focus(); return; }
        post("/api/resources/hand_back", {resource_id: r.resource_id, fay_id: fay}, "Hand " + r.name + " back");
      }}, input, el("button", {type: "submit", "aria-label": "Hand " + r.name + " back"}, "Hand back"));
      const op = el("input", {type: "number", min: "0", max: "255", name: "op", class: "op-input",
        "aria-label": "Operation number for " + r.name, placeholder: "op"});
      const args = el("input", {type: "text", name: "args", class: "args-input", spellcheck: "false",
        "aria-label": "Arguments (hex) for " + r.name, placeholder: "args (hex)"});
      const command = el("form", {class: "command", onsubmit: async (ev) => {
        ev.preventDefault();
        const n = Number(op.value);
        if (op.value === "" || !Number.isInteger(n) || n < 0 || n > 255) { notice("Give an operation number 0..255.", true); op.focus(); return; }
        const data = await post("/api/resources/act", {resource_id: r.resource_id, op: n, args: args.value.replace(/\s+/g, "")},
                                "Operation " + n + " on " + r.name, true);
        if (data) notice("Operation " + n + " on " + r.name + ": answer " + (data.result.data || "(empty)") + ".", false);
      }}, op, args, el("button", {type: "submit", "aria-label": "Send to " + r.name}, "Send"));
      box.append(form, command, el("button", {type: "button", class: "release", "aria-label": "Release " + r.name,
        onclick: () => post("/api/resources/release", {resource_id: r.resource_id}, "Release " + r.name)}, "Release"));
    }
    return box;
  }

  function fill(row, key, node) {
    const cell = row.querySelector('[data-col="' + key + '"]');
    cell.replaceChildren(node);
  }

  function sig(r) {                       // what the row shows: rebuilt only when it changes
    return JSON.stringify([r.holder, r.mode, r.epoch, r.since, r.suspended, r.lease, r.state, r.override, r.returning_to, r.last_fay, latest.operator]);
  }

  function renderBoards(boards) {
    const root = $("boards");
    const keep = new Set(boards.map((b) => b.name));
    for (const s of Array.from(root.children)) { if (!keep.has(s.dataset.board)) s.remove(); }
    for (const b of boards) {
      let box = root.querySelector('[data-board="' + CSS.escape(b.name) + '"]');
      if (!box) {
        box = el("div", {class: "board", "data-board": b.name},
          el("h3", {}, "Board ", el("span", {"data-role": "name"}, b.name), " ", el("span", {"data-role": "up"})),
          el("div", {class: "scroll"}, el("table", {class: "resources"},
            el("caption", {class: "sr-only"}, "Resources of board " + b.name),
            el("thead", {}, el("tr", {}, ...["Resource", "Class", "Holder", "Mode", "Epoch", "Since", "Suspended", "Lease", "Actions"].map((h) => el("th", {scope: "col"}, h)))),
            el("tbody"))));
        root.append(box);
      }
      const up = box.querySelector('[data-role="up"]');
      up.className = "pill " + (b.up ? "pill-live" : "pill-bad");
      up.textContent = b.up ? "link up" : "LINK DOWN";
      const tbody = box.querySelector("tbody");
      const ids = new Set(b.resources.map((r) => r.resource_id));
      for (const tr of Array.from(tbody.children)) { if (!ids.has(tr.dataset.resourceId)) tr.remove(); }
      for (const r of b.resources) {
        let tr = tbody.querySelector('tr[data-resource-id="' + CSS.escape(r.resource_id) + '"]');
        if (!tr) {
          tr = el("tr", {"data-resource-id": r.resource_id},
            el("th", {scope: "row", "data-col": "name"}), ...["class", "holder", "mode", "epoch", "since", "suspended", "lease", "actions"].map((k) => el("td", {"data-col": k})));
          tbody.append(tr);
        }
        const s = sig(r);
        if (tr.dataset.sig === s) continue;
        const focused = tr.contains(document.activeElement) ? document.activeElement.getAttribute("aria-label") : null;
        const typed = tr.querySelector(".fay-input");
        const typedValue = typed && typed.dataset.edited ? typed.value : null;
        tr.dataset.sig = s;
        fill(tr, "name", el("span", {title: r.resource_id}, r.name));
        fill(tr, "class", document.createTextNode(r.class || ""));
        fill(tr, "holder", holderCell(r));
        fill(tr, "mode", document.createTextNode(r.mode || "-"));
        fill(tr, "epoch", document.createTextNode(r.epoch === null || r.epoch === undefined ? "-" : String(r.epoch)));
        fill(tr, "since", r.since ? el("span", {"data-since": String(r.since), title: utc(r.since) + " UTC"}, ago(r.since)) : document.createTextNode("-"));
        fill(tr, "suspended", r.suspended ? el("span", {class: "flag-bad"}, "SUSPENDED") : document.createTextNode("no"));
        fill(tr, "lease", document.createTextNode(r.lease || "-"));
        fill(tr, "actions", actionsCell(r));
        tr.className = r.holder ? (r.holder.kind === "operator" ? "row-operator" : "row-fay") : "row-free";
        const input = tr.querySelector(".fay-input");
        if (input && typedValue !== null) { input.value = typedValue; input.dataset.edited = "1"; }
        if (focused) {                   // keyboard users keep their place across updates
          const again = Array.from(tr.querySelectorAll("[aria-label]")).find((e) => e.getAttribute("aria-label") === focused);
          if (again) again.focus();
        }
      }
    }
  }

  // ---- audit --------------------------------------------------------------------------------
  function renderAudit(a) {
    const chain = $("chain");
    if (a.intact) {
      chain.className = "chain chain-ok";
      chain.replaceChildren("Hash chain intact: " + a.entries_verified + " entries verified, head ", el("code", {title: a.head}, a.head.slice(0, 12)));
    } else {
      chain.className = "chain chain-bad";
      chain.textContent = "HASH CHAIN BROKEN: " + a.problem + ". Entries after that point cannot be trusted; run 'capwarden audit'.";
    }
    const rows = (a.tail || []).map((e) => el("tr", {class: "outcome-" + e.outcome},
      el("td", {}, String(e.seq)), el("td", {}, utc(e.ts)), el("td", {}, e.action || ""), el("td", {}, e.outcome || ""),
      el("td", {}, e.reason || ""), el("td", {}, who(e)), el("td", {}, e.resource ? el("code", {title: e.resource}, e.resource.split("/").slice(1).join("/")) : "")));
    $("audit-rows").replaceChildren(...rows);
  }

  function who(e) {
    if (e.operator) return el("span", {}, "operator ", el("strong", {}, e.operator));
    const parts = [];
    if (e.runtime) parts.push(e.runtime);
    if (e.fay) parts.push(short(e.fay));
    return parts.join(" / ");
  }

  // ---- the stream ---------------------------------------------------------------------------
  function render(state) {
    latest = state;
    receivedAt = performance.now();
    $("terminal-id").textContent = state.terminal_id || "";
    const mode = $("terminal-mode"), on = state.online;
    // The terminal's online mode (issue 14): online, or degraded with the trigger.
    mode.textContent = on ? (on.mode === "online" ? "online" : "degraded (" + (on.trigger || "offline") + ")") : "no trust service";
    mode.dataset.mode = on ? on.mode : "none";
    $("operator").textContent = state.operator || "";
    renderDecisions(state.decisions || []);
    renderBoards(state.boards || []);
    renderAudit(state.audit || {intact: true, tail: [], entries_verified: 0, head: ""});
  }

  function connect() {
    const es = new EventSource("/api/events");
    es.addEventListener("open", () => link("live", "Live"));
    es.addEventListener("state", (ev) => { link("live", "Live"); render(JSON.parse(ev.data)); });
    es.addEventListener("logged_out", () => { es.close(); window.location.replace("/login"); });
    es.addEventListener("error", async () => {
      link("bad", "Disconnected: retrying");
      // A stream refused for a missing session never recovers: back to the login.
      try {
        const r = await fetch("/api/me", {credentials: "same-origin", cache: "no-store"});
        if (r.status === 401) { es.close(); window.location.replace("/login"); }
      } catch (e) { /* the engine is away: EventSource retries */ }
    });
  }

  async function start() {
    const r = await fetch("/api/me", {credentials: "same-origin", cache: "no-store"});
    if (!r.ok) { window.location.replace("/login"); return; }
    const me = await r.json();
    csrf = me.csrf;
    $("operator").textContent = me.operator;
    $("logout").addEventListener("click", async () => {
      await post("/api/logout", {}, "Log out");
      window.location.replace("/login");
    });
    connect();
    setInterval(tick, 100);
  }

  start();
})();
