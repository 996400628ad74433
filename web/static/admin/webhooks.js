// Webhooks: subscribe an address to stream events, see each subscription's delivery log (status, attempts, the
// receiver's answer), send a signed test event through the same queue, delete. The secret is shown only while
// it is typed: the server never gives it back.
"use strict";

(() => {
  const C = window.Console;
  const { el } = C;
  const FALLBACK_EVENTS = ["stream.created", "stream.starting_soon", "stream.connected", "stream.live",
    "stream.disconnected", "stream.ended", "stream.failed", "stream.cancelled", "recording.ready"];
  let eventTypes = null;

  // The event names the server knows, read from its own API description so the page never lags behind.
  async function knownEvents() {
    if (eventTypes) return eventTypes;
    try {
      const doc = await (await fetch("/api/openapi.json", { credentials: "same-origin" })).json();
      eventTypes = doc.components.schemas.WebhookCreate.properties.events.items.enum.filter((e) => e !== "*");
    } catch {
      eventTypes = FALLBACK_EVENTS;
    }
    return eventTypes;
  }

  function randomSecret() {
    const bytes = new Uint8Array(24);
    crypto.getRandomValues(bytes);
    return `whsec_${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
  }

  function statusBadge(status) {
    const kind = { DELIVERED: "ok", FAILED: "bad", PENDING: "warn", CANCELLED: "bad" }[status] || "";
    return el("span", { class: `badge ${kind}` }, status);
  }

  function deliveryRows(deliveries, tz) {
    if (!deliveries.length) return [el("tr", {}, el("td", { colspan: 5, class: "muted" }, "Nothing sent yet."))];
    return deliveries.map((d) => {
      const last = d.attempt_log && d.attempt_log.length ? d.attempt_log[d.attempt_log.length - 1] : null;
      const answer = d.last_status_code ? `HTTP ${d.last_status_code}` : d.last_error || "—";
      const next = d.status === "PENDING" && d.attempts ? ` · next try ${C.when(d.next_attempt_at, tz)}` : "";
      return el("tr", { "data-event": d.event_type, "data-status": d.status },
        el("td", {}, C.when(d.created_at, tz)),
        el("td", {}, el("code", {}, d.event_type)),
        el("td", {}, statusBadge(d.status)),
        el("td", {}, String(d.attempts)),
        el("td", { class: "wrap" }, answer + (last && last.duration ? ` in ${Math.round(last.duration * 1000)} ms` : "") + next));
    });
  }

  function webhookCard(hook, reload) {
    const tz = C.org()?.timezone;
    const body = el("tbody", {});
    const log = el("div", { class: "table-wrap", hidden: true },
      el("table", { class: "deliveries", "aria-label": `Delivery log of ${hook.url}` },
        el("thead", {}, el("tr", {}, ["Queued", "Event", "Status", "Tries", "Receiver answered"].map((h) => el("th", { scope: "col" }, h)))),
        body));
    let polling = null;
    async function loadLog() {
      const data = await C.api("GET", `/api/webhooks/${encodeURIComponent(hook.id)}/deliveries`);
      body.replaceChildren(...deliveryRows(data.deliveries, tz));
      return data.deliveries;
    }
    const logButton = el("button", { type: "button", "aria-expanded": "false", "aria-label": `Delivery log of ${hook.url}` }, "Delivery log");
    async function openLog() {
      log.hidden = false;
      logButton.setAttribute("aria-expanded", "true");
      await C.attempt(loadLog);
      if (!polling) polling = C.every(2000, () => C.attempt(loadLog));
    }
    logButton.addEventListener("click", () => {
      if (log.hidden) openLog();
      else {
        log.hidden = true;
        logButton.setAttribute("aria-expanded", "false");
        clearInterval(polling);
        polling = null;
      }
    });
    const testButton = el("button", { type: "button", class: "primary", "aria-label": `Send test event to ${hook.url}` },
      "Send test event");
    testButton.addEventListener("click", async () => {
      testButton.disabled = true;
      await C.attempt(() => C.api("POST", `/api/webhooks/${encodeURIComponent(hook.id)}/test`),
        "Test event queued: watch the delivery log.");
      testButton.disabled = false;
      await openLog();
    });
    // Two steps instead of a dialog: the first press asks, the second deletes.
    const deleteButton = el("button", { type: "button", class: "danger", "aria-label": `Delete webhook to ${hook.url}` }, "Delete");
    let armed = false;
    deleteButton.addEventListener("click", async () => {
      if (!armed) {
        armed = true;
        deleteButton.textContent = "Press again to delete";
        setTimeout(() => { armed = false; deleteButton.textContent = "Delete"; }, 5000);
        return;
      }
      const done = await C.attempt(() => C.api("DELETE", `/api/webhooks/${encodeURIComponent(hook.id)}`), "Webhook deleted.");
      if (done !== undefined) reload();
    });
    return el("li", { class: "panel webhook", "data-id": hook.id },
      el("div", { class: "webhook-head" },
        el("code", { class: "webhook-url" }, hook.url),
        el("span", { class: "muted" }, `Added ${C.when(hook.created_at, tz)}`)),
      el("p", {}, "Events: ", hook.events.includes("*") ? "all" : hook.events.map((e) => el("code", { class: "event" }, e))),
      el("div", { class: "row" }, testButton, logButton, deleteButton),
      log);
  }

  async function render(main) {
    main.append(el("h1", {}, "Webhooks"),
      el("p", { class: "muted" }, "Tell another system (your website, a chat bot, a spreadsheet) when a service goes live, " +
        "ends or its recording is ready. Each delivery is signed with your secret in the Webhook-Signature header."));
    const list = el("ul", { class: "webhooks" });
    const events = await knownEvents();

    async function reload() {
      const data = await C.api("GET", "/api/webhooks");
      list.replaceChildren(...data.webhooks.map((h) => webhookCard(h, () => C.attempt(reload))));
      if (!data.webhooks.length) list.append(el("li", { class: "muted" }, "No webhooks yet."));
    }

    const url = el("input", { id: "hook-url", type: "url", required: true, placeholder: "https://example.org/hooks/stream",
      maxlength: 2000, autocomplete: "off" });
    const secret = el("input", { id: "hook-secret", required: true, minlength: 16, maxlength: 200, autocomplete: "off",
      spellcheck: "false" });
    const all = el("input", { id: "hook-all", type: "checkbox", checked: true });
    const boxes = events.map((e) => el("input", { type: "checkbox", id: `hook-ev-${e}`, value: e }));
    const eventList = el("fieldset", { class: "events", disabled: true },
      el("legend", {}, "Only these events"),
      boxes.map((box) => el("label", { class: "inline", for: box.id }, box, box.value)));
    all.addEventListener("change", () => { eventList.disabled = all.checked; });
    const form = el("form", { class: "panel stack", on: { submit: async (e) => {
      e.preventDefault();
      const chosen = all.checked ? ["*"] : boxes.filter((b) => b.checked).map((b) => b.value);
      if (!chosen.length) { C.toast("Choose at least one event, or all events.", "error"); return; }
      const created = await C.attempt(() => C.api("POST", "/api/webhooks", { url: url.value.trim(), secret: secret.value, events: chosen }),
        "Webhook added. Keep the secret: it is not shown again.");
      if (created) { url.value = ""; secret.value = ""; await C.attempt(reload); }
    } } },
    el("h2", {}, "Add a webhook"),
    el("label", { for: "hook-url" }, "Receiver address (URL)"), url,
    el("label", { for: "hook-secret" }, "Signing secret (at least 16 characters)"),
    el("div", { class: "copyable" }, secret,
      el("button", { type: "button", on: { click: () => { secret.value = randomSecret(); } } }, "Generate"),
      C.copyButton(() => secret.value, "Copy the secret")),
    el("p", { class: "hint" }, "Keep the secret private: give it only to the receiver, which uses it to check each delivery. " +
      "The server will not show it again."),
    el("label", { class: "inline", for: "hook-all" }, all, "All events"),
    eventList,
    el("div", { class: "row" }, el("button", { type: "submit", class: "primary" }, "Add webhook")));

    main.append(el("h2", {}, "Your webhooks"), list, form);
    await reload();
  }

  C.page("webhooks", { nav: "Webhooks", title: "Webhooks", render });
})();
