// The live room beside the video: chat, prayer requests, reactions, viewer count, Give and moment cards.
// Messages are always inserted as text (textContent), never as HTML.
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("player-config").textContent);
  const root = document.getElementById("room");
  if (!root) return;
  if (cfg.locked || cfg.chat_enabled === false) {
    root.remove();
    document.querySelector(".watch-layout")?.classList.add("no-room");
    return;
  }
  const REACTIONS = { LIKE: "👍", LOVE: "❤️", PRAY: "🙏", AMEN: "🙌", CLAP: "👏", RAISED_HANDS: "✋" };
  const el = (tag, attrs = {}, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };

  root.replaceChildren();
  const header = el("div", { class: "room-header" });
  const viewers = el("span", { id: "viewer-count", class: "viewer-count" }, "");
  header.append(el("strong", {}, "Live chat"), viewers);
  const pinned = el("div", { id: "pinned", class: "pinned", hidden: "" });
  const list = el("ol", { id: "messages", class: "messages", "aria-live": "polite" });
  const typing = el("div", { id: "typing", class: "typing" }, "");
  const form = el("form", { id: "chat-form", class: "chat-form" });
  const nameInput = el("input", { id: "chat-name", placeholder: "Your name", maxlength: "40", "aria-label": "Your name" });
  nameInput.value = localStorage.getItem("chat-name") || "";
  const kind = el("select", { id: "chat-type", "aria-label": "Message type" });
  for (const [value, label] of [["MESSAGE", "Message"], ["PRAYER_REQUEST", "Prayer request"], ["QUESTION", "Question"]]) {
    kind.append(el("option", { value }, label));
  }
  const prayerOnly = el("label", { class: "prayer-only", hidden: "" });
  const prayerBox = el("input", { type: "checkbox", id: "prayer-team-only" });
  prayerOnly.append(prayerBox, document.createTextNode(" Prayer team only"));
  const text = el("input", { id: "chat-text", placeholder: "Say hello…", maxlength: "500", autocomplete: "off", "aria-label": "Message" });
  const send = el("button", { type: "submit" }, "Send");
  form.append(nameInput, kind, prayerOnly, text, send);
  const bar = el("div", { id: "reactions", class: "reactions" });
  for (const [type, emoji] of Object.entries(REACTIONS)) {
    const b = el("button", { type: "button", "data-reaction": type, "aria-label": type.toLowerCase().replace("_", " ") }, emoji);
    bar.append(b);
  }
  const errorLine = el("div", { id: "chat-error", class: "chat-error", role: "status" }, "");
  root.append(header, pinned, list, typing, errorLine, form);
  if (cfg.reactions_enabled !== false) root.append(bar);
  if (cfg.giving_enabled && cfg.giving_url) {
    const give = el("a", { id: "give", class: "give", href: cfg.giving_url, target: "_blank", rel: "noopener" },
      cfg.giving_message ? `Give — ${cfg.giving_message}` : "Give");
    root.append(give);
  }
  const stage = document.querySelector(".stage") || document.body;
  const floats = el("div", { class: "floats", "aria-hidden": "true" });
  stage.append(floats);
  const cardBox = el("div", { id: "moment", class: "moment", hidden: "" });
  stage.append(cardBox);

  let ws = null, retry = 1000, typingTimer = null, lastTyping = 0;
  // A private stream's page carries its playback token in the playlist URL: the room takes it in the auth
  // frame (never in the socket's URL, which proxies log).
  const playbackToken = (() => {
    try { return new URL(cfg.playback_url || "", location.href).searchParams.get("token"); } catch { return null; }
  })();
  // The browser's viewer token lives in the ms_viewer cookie; kept here too for when cookies are blocked.
  const VIEWER_KEY = "chat-viewer";

  function addMessage(m) {
    const item = el("li", { class: `msg type-${m.type.toLowerCase()}`, "data-id": m.id });
    const who = el("span", { class: `author role-${m.role}` }, m.author);
    const label = m.type === "PRAYER_REQUEST" ? "🙏 " : m.type === "QUESTION" ? "❓ " : m.type === "ANNOUNCEMENT" ? "📣 " : "";
    item.append(who, el("span", { class: "text" }, " " + label + m.text));
    list.append(item);
    while (list.children.length > 200) list.firstChild.remove();
    list.scrollTop = list.scrollHeight;
  }

  function showPinned(m) {
    pinned.hidden = !m;
    pinned.textContent = m ? `📌 ${m.author}: ${m.text}` : "";
  }

  function float(type) {
    const f = el("span", { class: "float" }, REACTIONS[type] || "❤️");
    f.style.left = `${10 + Math.random() * 80}%`;
    floats.append(f);
    setTimeout(() => f.remove(), 2500);
  }

  function showCard(data) {
    const card = data.card || {};
    cardBox.replaceChildren(el("strong", {}, card.title || "Announcement"), el("p", {}, card.text || data.text || ""));
    if (card.url && /^https?:\/\//.test(card.url)) {
      cardBox.append(el("a", { href: card.url, target: "_blank", rel: "noopener", class: "give" }, "Open"));
    }
    const close = el("button", { type: "button", class: "close", "aria-label": "Close" }, "×");
    close.addEventListener("click", () => { cardBox.hidden = true; });
    cardBox.append(close);
    cardBox.hidden = false;
  }

  const handlers = {
    "chat:history": (d) => { list.replaceChildren(); d.messages.forEach(addMessage); showPinned(d.pinned); },
    "chat:message": addMessage,
    "chat:removed": (d) => { const n = list.querySelector(`[data-id="${CSS.escape(d.id)}"]`); if (n) n.remove(); },
    "chat:pinned": (d) => showPinned(d.message),
    "stream:join": (d) => { if (d.viewer_token) localStorage.setItem(VIEWER_KEY, d.viewer_token); },
    "chat:typing": (d) => {
      const names = d.names && d.names.length ? d.names : [d.name];
      typing.textContent = names.length > 3 ? "Several people are typing…"
        : `${names.join(", ")} ${names.length > 1 ? "are" : "is"} typing…`;
      clearTimeout(typingTimer);
      typingTimer = setTimeout(() => { typing.textContent = ""; }, 3000);
    },
    "chat:moderated": (d) => { if (d.status === "HELD") errorLine.textContent = "Your message is waiting for a moderator."; },
    "chat:error": (d) => { errorLine.textContent = d.message; },
    "stream:viewers": (d) => { viewers.textContent = `👥 ${d.count}`; },
    "stream:reactions": (d) => { for (const [t, n] of Object.entries(d.counts || {})) for (let i = 0; i < Math.min(n, 8); i++) float(t); },
    "stream:announcement": showCard,
  };

  function connect() {
    const name = nameInput.value.trim();
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(`${proto}//${location.host}/ws/streams/${encodeURIComponent(cfg.stream_id)}?name=${encodeURIComponent(name)}`);
    ws.addEventListener("open", () => {
      retry = 1000;
      errorLine.textContent = "";
      const auth = {};
      if (playbackToken) auth.token = playbackToken;
      const kept = localStorage.getItem(VIEWER_KEY);
      if (kept) auth.viewer = kept;
      if (auth.token || auth.viewer) ws.send(JSON.stringify({ event: "auth", data: auth }));
    });
    ws.addEventListener("message", (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      const handler = handlers[frame.event];
      if (handler) handler(frame.data);
    });
    ws.addEventListener("close", (event) => {
      if (event.code === 4403) return;  // this page's token doesn't open the room: retrying won't either
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 30000);
    });
  }

  function sendFrame(event, data) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ event, data }));
  }

  kind.addEventListener("change", () => { prayerOnly.hidden = kind.value !== "PRAYER_REQUEST"; });
  nameInput.addEventListener("change", () => {
    localStorage.setItem("chat-name", nameInput.value.trim());
    if (ws) ws.close();  // reconnects under the new name
  });
  text.addEventListener("input", () => {
    if (Date.now() - lastTyping > 2000) { lastTyping = Date.now(); sendFrame("chat:typing", {}); }
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = text.value.trim();
    if (!value) return;
    sendFrame("chat:message", { text: value, type: kind.value, prayer_team_only: prayerBox.checked });
    text.value = "";
    errorLine.textContent = "";
  });
  bar.addEventListener("click", (event) => {
    const type = event.target.closest("[data-reaction]")?.dataset.reaction;
    if (type) { sendFrame("stream:reaction", { type }); float(type); }
  });
  window.room = { send: sendFrame };
  connect();
})();
