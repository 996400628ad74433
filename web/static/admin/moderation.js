// Moderation: #/moderation picks a stream; #/moderation/ID is the console for its chat room. Moderating runs over
// the room's own WebSocket (the console's cookie seats the volunteer as moderator): the review queue, remove, pin,
// highlight, time-out, ban, announcements and giving moments. The audit log and the bans in force come from the API.
"use strict";

(() => {
  const C = window.Console;
  const { el } = C;
  const NAME_KEY = "console.moderator_name";
  const TYPE_LABELS = { PRAYER_REQUEST: "Prayer request", QUESTION: "Question", ANNOUNCEMENT: "Announcement" };
  const ACTION_LABELS = {
    remove: "Removed message", pin: "Pinned", highlight: "Highlighted", approve: "Approved", reject: "Rejected",
    announce: "Announcement", timeout: "Timed out", ban: "Banned", unban: "Lifted ban / time-out",
  };
  const TIMEOUTS = [[60, "1 minute"], [300, "5 minutes"], [900, "15 minutes"], [3600, "1 hour"], [86400, "24 hours"]];

  async function streamsOf(state, limit) {
    const data = await C.api("GET", `/api/streams?state=${state}&limit=${limit}`);
    const org = C.org();
    return data.streams.filter((s) => !org || !s.org_id || s.org_id === org.id);
  }

  async function renderPicker(main) {
    main.append(el("h1", {}, "Moderation"),
      el("p", { class: "muted" }, "Pick a service to moderate its chat: the review queue, pins, time-outs and bans."));
    const [live, upcoming, past] = await Promise.all([streamsOf("live", 50), streamsOf("upcoming", 10), streamsOf("past", 10)]);
    const section = (title, streams, empty) => [
      el("h2", {}, title),
      streams.length
        ? el("ul", { class: "pick-list" }, streams.map((s) => el("li", {},
          el("a", { href: `#/moderation/${encodeURIComponent(s.id)}`, class: "pick" },
            el("span", { class: "pick-title" }, s.title),
            el("span", { class: `badge ${s.status}` }, s.status),
            el("span", { class: "muted" }, C.when(s.actual_start || s.scheduled_start || s.created_at, C.org()?.timezone))))))
        : el("p", { class: "muted" }, empty),
    ];
    main.append(...section("On air now", live, "Nothing is on air."),
      ...section("Coming up", upcoming, "Nothing scheduled."),
      ...section("Recent", past, "No recent services."));
  }

  // One room's console. State lives here; the socket feeds it, buttons send frames.
  async function renderRoom(main, streamId) {
    const stream = await C.api("GET", `/api/streams/${encodeURIComponent(streamId)}`);
    const tz = C.org()?.timezone;
    let ws = null;
    let leaving = false;
    let retry = 1000;
    const messages = new Map();
    const held = new Map();
    const known = new Map();  // every message seen, removed ones too: the audit log names them by their text
    let pinned = null;
    const remember = (m) => {
      known.set(m.id, { text: m.text, author: m.author });
      if (known.size > 2000) known.delete(known.keys().next().value);
    };

    const status = el("span", { class: "badge", role: "status" }, "Connecting…");
    const viewers = el("span", { class: "muted", "aria-live": "polite" }, "");
    const nameInput = el("input", { id: "mod-name", value: localStorage.getItem(NAME_KEY) || "Moderator", maxlength: 40,
      autocomplete: "off" });
    const timeoutSelect = el("select", { id: "mod-timeout" },
      TIMEOUTS.map(([s, label]) => el("option", { value: String(s) }, label)));
    timeoutSelect.value = "300";
    const chatList = el("ol", { class: "mod-messages", "aria-label": "Chat messages", "aria-live": "off" });
    const heldList = el("ol", { class: "mod-messages held", "aria-label": "Messages waiting for review" });
    const heldCount = el("span", { class: "badge warn" }, "0");
    const pinnedBox = el("div", { class: "mod-pinned", "aria-live": "polite" });
    const auditBody = el("tbody", {});
    const sanctionsList = el("ul", { class: "sanctions" });

    function send(event, data) {
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        C.toast("Not connected to the chat; reconnecting…", "error");
        return false;
      }
      ws.send(JSON.stringify({ event, data }));
      return true;
    }

    function badgeFor(m) {
      const parts = [];
      if (TYPE_LABELS[m.type]) parts.push(el("span", { class: "badge" }, TYPE_LABELS[m.type]));
      if (m.prayer_team_only) parts.push(el("span", { class: "badge" }, "Prayer team only"));
      if (m.role && m.role !== "guest") parts.push(el("span", { class: "badge" }, m.role));
      if (m.highlighted) parts.push(el("span", { class: "badge ok" }, "Highlighted"));
      return parts;
    }

    function button(label, aria, handler, cls) {
      return el("button", { type: "button", class: cls, "aria-label": aria, on: { click: handler } }, label);
    }

    function messageItem(m) {
      const who = m.author || "someone";
      const actions = m.type === "SYSTEM" ? [] : [
        button(m.pinned ? "Unpin" : "Pin", `${m.pinned ? "Unpin" : "Pin"} the message from ${who}`,
          () => send("chat:pin", m.pinned ? {} : { id: m.id })),
        button("Highlight", `Highlight the message from ${who}`, () => send("chat:highlight", { id: m.id })),
        button("Remove", `Remove the message from ${who}`, () => send("chat:remove", { id: m.id }), "danger"),
        ...(m.role === "guest" || m.role === "member" ? [
          button("Time out", `Time out ${who}`, () => send("chat:timeout", { id: m.id, seconds: Number(timeoutSelect.value) })),
          button("Ban", `Ban ${who}`, () => send("chat:ban", { id: m.id }), "danger"),
        ] : []),
      ];
      return el("li", { class: `mod-message${m.highlighted ? " highlighted" : ""}${m.pinned ? " pinned" : ""}`, "data-id": m.id },
        el("div", { class: "mod-meta" }, el("strong", {}, who), ...badgeFor(m),
          el("time", { class: "muted" }, C.when(m.published_at || m.created_at, tz))),
        el("p", { class: "mod-text" }, m.text),
        actions.length ? el("div", { class: "row mod-actions" }, actions) : null);
    }

    function heldItem(m) {
      const who = m.author || "someone";
      return el("li", { class: "mod-message", "data-id": m.id },
        el("div", { class: "mod-meta" }, el("strong", {}, who), ...badgeFor(m),
          el("time", { class: "muted" }, C.when(m.created_at, tz))),
        el("p", { class: "mod-text" }, m.text),
        el("div", { class: "row mod-actions" },
          button("Approve", `Approve the message from ${who}`, () => send("chat:review", { id: m.id, approve: true }), "primary"),
          button("Reject", `Reject the message from ${who}`, () => send("chat:review", { id: m.id, approve: false })),
          ...(m.role === "guest" ? [
            button("Time out", `Time out ${who}`, () => send("chat:timeout", { id: m.id, seconds: Number(timeoutSelect.value) })),
            button("Ban", `Ban ${who}`, () => send("chat:ban", { id: m.id }), "danger"),
          ] : [])));
    }

    function drawChat() {
      const atBottom = chatList.scrollTop + chatList.clientHeight >= chatList.scrollHeight - 20;
      chatList.replaceChildren(...[...messages.values()].map(messageItem));
      if (!messages.size) chatList.append(el("li", { class: "muted empty" }, "No messages yet."));
      if (atBottom) chatList.scrollTop = chatList.scrollHeight;
      pinnedBox.replaceChildren(pinned
        ? el("div", { class: "notice" }, el("strong", {}, "Pinned: "), `${pinned.author}: ${pinned.text} `,
          button("Unpin", "Unpin the pinned message", () => send("chat:pin", {})))
        : el("p", { class: "muted" }, "Nothing is pinned."));
    }

    function drawHeld() {
      heldList.replaceChildren(...[...held.values()].map(heldItem));
      if (!held.size) heldList.append(el("li", { class: "muted empty" }, "Nothing is waiting for review."));
      heldCount.textContent = String(held.size);
      heldCount.className = `badge ${held.size ? "warn" : "ok"}`;
    }

    async function loadAudit() {
      const [audit, sanctions] = await Promise.all([
        C.api("GET", `/api/streams/${encodeURIComponent(streamId)}/chat/audit`),
        C.api("GET", `/api/streams/${encodeURIComponent(streamId)}/chat/sanctions`),
      ]);
      const byId = (id) => known.get(id);
      auditBody.replaceChildren(...audit.entries.slice().reverse().map((entry) => {
        const message = byId(entry.target) || entry.message;
        let target = message ? `“${message.text}” by ${message.author}` : entry.target;
        if (entry.action === "timeout" && typeof entry.detail === "number") target += ` for ${C.duration(entry.detail)}`;
        if (entry.action === "ban" && entry.detail && entry.detail.address) target += " (address ban)";
        if (entry.action === "announce") target = String(entry.detail || "");
        if (entry.action === "pin" && (entry.target === "None" || !entry.target)) target = "(unpinned)";
        return el("tr", { "data-action": entry.action },
          el("td", {}, C.when(entry.at, tz)), el("td", {}, entry.moderator),
          el("td", {}, ACTION_LABELS[entry.action] || entry.action), el("td", { class: "wrap" }, target));
      }));
      if (!audit.entries.length) auditBody.append(el("tr", {}, el("td", { colspan: 4, class: "muted" }, "No actions yet.")));
      sanctionsList.replaceChildren(...sanctions.sanctions.map((s) => el("li", {},
        el("span", {}, el("strong", {}, s.name), " ",
          s.kind === "ban" ? "banned" : `timed out until ${C.when(s.until, tz)}`,
          s.address_ban ? " (address ban)" : "", el("span", { class: "muted" }, ` by ${s.moderator}`)),
        button("Lift", `Lift the ${s.kind === "ban" ? "ban" : "time-out"} on ${s.name}`,
          () => send("chat:unban", { name: s.name })))));
      if (!sanctions.sanctions.length) sanctionsList.append(el("li", { class: "muted" }, "No bans or time-outs in force."));
    }
    const refreshAudit = () => C.attempt(loadAudit);
    let auditTimer = null;
    const auditSoon = () => { clearTimeout(auditTimer); auditTimer = setTimeout(refreshAudit, 400); };

    const handlers = {
      "stream:join": (d) => {
        const staff = d.role === "moderator" || d.role === "admin";
        status.textContent = staff ? `Connected as ${d.name} (${d.role})` : `Connected as ${d.name}: not a moderator`;
        status.className = `badge ${staff ? "ok" : "bad"}`;
      },
      "chat:history": (d) => {
        messages.clear();
        for (const m of d.messages) { messages.set(m.id, m); remember(m); }
        pinned = d.pinned || null;
        drawChat();
      },
      "chat:message": (m) => {
        messages.set(m.id, m);
        remember(m);
        while (messages.size > 200) messages.delete(messages.keys().next().value);
        drawChat();
      },
      "chat:removed": (d) => { messages.delete(d.id); if (pinned && pinned.id === d.id) pinned = null; drawChat(); auditSoon(); },
      "chat:pinned": (d) => {
        for (const m of messages.values()) m.pinned = 0;
        pinned = d.message || null;
        if (pinned && messages.has(pinned.id)) messages.get(pinned.id).pinned = 1;
        drawChat();
        auditSoon();
      },
      "chat:highlighted": (d) => { const m = messages.get(d.id); if (m) m.highlighted = 1; drawChat(); auditSoon(); },
      "chat:moderated": (d) => {
        if (d.held) for (const m of d.held) { held.set(m.id, m); remember(m); }
        else if (d.id && d.status !== "HELD") { held.delete(d.id); auditSoon(); }
        drawHeld();
      },
      "chat:timed_out": (d) => { C.toast(d.message, "ok"); auditSoon(); },
      "chat:banned": (d) => { C.toast(d.message, "ok"); auditSoon(); },
      "chat:unbanned": (d) => { C.toast(d.message, "ok"); auditSoon(); },
      "stream:announcement": () => auditSoon(),
      "stream:viewers": (d) => { viewers.textContent = `${d.count} in the room (peak ${d.peak})`; },
      "chat:error": (d) => C.toast(d.message, "error"),
    };

    function connect() {
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      const name = nameInput.value.trim() || "Moderator";
      ws = new WebSocket(`${proto}//${location.host}/ws/streams/${encodeURIComponent(streamId)}?name=${encodeURIComponent(name)}`);
      const socket = ws;
      socket.addEventListener("open", () => { retry = 1000; });
      socket.addEventListener("message", (event) => {
        let frame;
        try { frame = JSON.parse(event.data); } catch { return; }
        const handler = handlers[frame.event];
        if (handler) handler(frame.data || {});
      });
      socket.addEventListener("close", (event) => {
        if (leaving || socket !== ws) return;
        status.textContent = event.code === 4403 || event.code === 4401 ? "Not allowed in this room" : "Reconnecting…";
        status.className = "badge bad";
        if (event.code === 4403 || event.code === 4401) return;
        setTimeout(() => { if (!leaving) connect(); }, retry);
        retry = Math.min(retry * 2, 15000);
      });
    }

    C.onLeave(() => { leaving = true; clearTimeout(auditTimer); if (ws) ws.close(1000, "left"); });
    nameInput.addEventListener("change", () => {
      const name = nameInput.value.trim() || "Moderator";
      localStorage.setItem(NAME_KEY, name);
      send("auth", { name });  // the room renames us without a new connection
    });

    // Announcements and giving moments: a card for everyone at once.
    const annText = el("textarea", { id: "ann-text", rows: 2, maxlength: 500 });
    const announceForm = el("form", { class: "stack", on: { submit: (e) => {
      e.preventDefault();
      const text = annText.value.trim();
      if (!text) { C.toast("Write the announcement first.", "error"); return; }
      if (send("stream:announcement", { text })) { annText.value = ""; C.toast("Announcement sent.", "ok"); }
    } } }, el("label", { for: "ann-text" }, "Announcement"), annText,
    el("div", { class: "row" }, el("button", { type: "submit", class: "primary" }, "Announce")));

    const giveTitle = el("input", { id: "give-title", value: stream.giving_message ? "Giving moment" : "Give online", maxlength: 200 });
    const giveText = el("input", { id: "give-text", value: stream.giving_message || "", maxlength: 500 });
    const giveUrl = el("input", { id: "give-url", type: "url", value: stream.giving_url || "", placeholder: "https://", maxlength: 2000 });
    const givingForm = el("form", { class: "stack", on: { submit: (e) => {
      e.preventDefault();
      const card = { title: giveTitle.value.trim(), text: giveText.value.trim(), url: giveUrl.value.trim() };
      if (!card.title) { C.toast("A giving moment needs a title.", "error"); return; }
      if (card.url && !/^https?:\/\//i.test(card.url)) { C.toast("The giving link must start with https://", "error"); return; }
      for (const k of Object.keys(card)) if (!card[k]) delete card[k];
      if (send("stream:announcement", { card })) C.toast("Giving moment sent.", "ok");
    } } }, el("label", { for: "give-title" }, "Title"), giveTitle,
    el("label", { for: "give-text" }, "Message"), giveText,
    el("label", { for: "give-url" }, "Giving link"), giveUrl,
    el("div", { class: "row" }, el("button", { type: "submit", class: "primary" }, "Send giving moment")));

    // Time out or ban by name (someone whose message is gone, or who only watches).
    const who = el("input", { id: "sanction-name", maxlength: 200, autocomplete: "off" });
    const whoSeconds = el("select", { id: "sanction-seconds" }, TIMEOUTS.map(([s, label]) => el("option", { value: String(s) }, label)));
    whoSeconds.value = "300";
    const byAddress = el("input", { id: "sanction-address", type: "checkbox" });
    const byName = (kind) => {
      const name = who.value.trim();
      if (!name) { C.toast("Type the name shown in the chat.", "error"); return; }
      const data = { name, address: byAddress.checked };
      if (kind === "chat:timeout") data.seconds = Number(whoSeconds.value);
      if (send(kind, data)) who.value = "";
    };
    const peopleForm = el("form", { class: "stack", on: { submit: (e) => { e.preventDefault(); byName("chat:timeout"); } } },
      el("label", { for: "sanction-name" }, "Name in the chat"), who,
      el("label", { for: "sanction-seconds" }, "Time-out length"), whoSeconds,
      el("label", { class: "inline", for: "sanction-address" }, byAddress,
        "Also everyone on their network (careful: on the church Wi-Fi that is every guest there)"),
      el("div", { class: "row" }, el("button", { type: "submit" }, "Time out"),
        el("button", { type: "button", class: "danger", on: { click: () => byName("chat:ban") } }, "Ban")));

    main.append(
      el("p", {}, el("a", { href: "#/moderation" }, "← All services")),
      el("h1", {}, `Moderate: ${stream.title}`),
      el("div", { class: "row mod-status" }, el("span", { class: `badge ${stream.status}` }, stream.status), status, viewers),
      el("div", { class: "row mod-settings" },
        el("label", { class: "inline", for: "mod-name" }, "Your name in the chat", nameInput),
        el("label", { class: "inline", for: "mod-timeout" }, "Time-out length", timeoutSelect)),
      el("div", { class: "mod-grid" },
        el("section", { class: "panel", "aria-labelledby": "mod-review-h" },
          el("h2", { id: "mod-review-h" }, "Review queue ", heldCount),
          el("p", { class: "hint" }, "Messages with a blocked word or a link (and, if you chose it, every guest's message) wait here."),
          heldList),
        el("section", { class: "panel", "aria-labelledby": "mod-chat-h" },
          el("h2", { id: "mod-chat-h" }, "Live chat"), pinnedBox, chatList),
        el("section", { class: "panel", "aria-labelledby": "mod-ann-h" },
          el("h2", { id: "mod-ann-h" }, "Announce"), announceForm,
          el("h2", {}, "Giving moment"), givingForm),
        el("section", { class: "panel", "aria-labelledby": "mod-people-h" },
          el("h2", { id: "mod-people-h" }, "Time-outs and bans"), peopleForm,
          el("h3", {}, "In force"), sanctionsList)),
      el("section", { "aria-labelledby": "mod-audit-h" },
        el("h2", { id: "mod-audit-h" }, "Audit log"),
        el("div", { class: "table-wrap" }, el("table", { id: "audit-log" },
          el("thead", {}, el("tr", {}, ["When", "Moderator", "Action", "What"].map((h) => el("th", { scope: "col" }, h)))),
          auditBody))));
    drawChat();
    drawHeld();
    connect();
    await refreshAudit();
    C.every(10000, refreshAudit);
  }

  C.page("moderation", {
    nav: "Moderation",
    title: "Moderation",
    render: async (main, params) => (params[0] ? renderRoom(main, params[0]) : renderPicker(main)),
  });
})();
