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
  // Icons as inline SVG, like player.js's: no emoji (Debian's Chromium has no emoji font out of the box and draws
  // empty boxes), no icon font. Each is a few paths on a 24×24 grid, filled with currentColor. Thumbs up, heart,
  // question, eye and pin are Material Icons paths (Apache-2.0), as in player.js; the hands and megaphone are ours.
  const ICONS = {
    // thumbs up
    like: ["M1 21h4V9H1v12zm22-11c0-1.1-.9-2-2-2h-6.31l.95-4.57.03-.32c0-.41-.17-.79-.44-1.06L14.17 1 7.59 " +
           "7.59C7.22 7.95 7 8.45 7 9v10c0 1.1.9 2 2 2h9c.83 0 1.54-.5 " +
           "1.84-1.22l3.02-7.05c.09-.23.14-.47.14-.73v-2z"],
    // heart
    love: ["M12 21.35l-1.45-1.32C5.4 15.36 2 12.28 2 8.5 2 5.42 4.42 3 7.5 3c1.74 0 3.41.81 4.5 2.09C13.09 3.81 " +
           "14.76 3 16.5 3 19.58 3 22 5.42 22 8.5c0 3.78-3.4 6.86-8.55 11.54L12 21.35z"],
    // two hands pressed together, fingertips up, cuffs at the wrists
    pray: ["M11.4 2.2L11.4 15.4L8.1 19.2L4.6 15.8L7.3 12.2L9.1 4.2Z", "M4.1 16.6L7.4 19.9L5.2 22.1L1.9 18.8Z",
      "M12.6 2.2L12.6 15.4L15.9 19.2L19.4 15.8L16.7 12.2L14.9 4.2Z", "M19.9 16.6L16.6 19.9L18.8 22.1L22.1 18.8Z"],
    // two open palms raised, leaning outwards, rays between them
    amen: ["M6.72 15.37L5.74 10.72A0.84 0.84 0 0 1 7.38 10.37L8.37 15.03A0.84 0.84 0 0 1 6.72 15.37Z",
      "M4.66 15.1L3.48 9.55A0.84 0.84 0 0 1 5.13 9.2L6.31 14.75A0.84 0.84 0 0 1 4.66 15.1Z",
      "M2.74 15.5L1.67 10.44A0.84 0.84 0 0 1 3.31 10.09L4.39 15.16A0.84 0.84 0 0 1 2.74 15.5Z",
      "M1.08 16.58L0.23 12.6A0.8 0.8 0 0 1 1.81 12.27L2.65 16.24A0.8 0.8 0 0 1 1.08 16.58Z",
      "M8.33 14.32L0.83 15.91L1.63 19.68L3.26 21.98L5.03 22.89L7.77 22.31L9.17 20.8L9.2 18.43Z",
      "M8.02 18.24L9.65 14.46A0.98 0.98 0 0 1 11.45 15.24L9.82 19.02A0.98 0.98 0 0 1 8.02 18.24Z",
      "M17.28 15.37L18.26 10.72A0.84 0.84 0 0 0 16.62 10.37L15.63 15.03A0.84 0.84 0 0 0 17.28 15.37Z",
      "M19.34 15.1L20.52 9.55A0.84 0.84 0 0 0 18.87 9.2L17.69 14.75A0.84 0.84 0 0 0 19.34 15.1Z",
      "M21.26 15.5L22.33 10.44A0.84 0.84 0 0 0 20.69 10.09L19.61 15.16A0.84 0.84 0 0 0 21.26 15.5Z",
      "M22.92 16.58L23.77 12.6A0.8 0.8 0 0 0 22.19 12.27L21.35 16.24A0.8 0.8 0 0 0 22.92 16.58Z",
      "M15.67 14.32L23.17 15.91L22.37 19.68L20.74 21.98L18.97 22.89L16.23 22.31L14.83 20.8L14.8 18.43Z",
      "M15.98 18.24L14.35 14.46A0.98 0.98 0 0 0 12.55 15.24L14.18 19.02A0.98 0.98 0 0 0 15.98 18.24Z",
      "M12.75 6.4L12.75 3.4A0.75 0.75 0 0 0 11.25 3.4L11.25 6.4A0.75 0.75 0 0 0 12.75 6.4Z",
      "M10.23 4.29L9.23 2.29A0.7 0.7 0 0 0 7.97 2.91L8.97 4.91A0.7 0.7 0 0 0 10.23 4.29Z",
      "M15.03 4.91L16.03 2.91A0.7 0.7 0 0 0 14.77 2.29L13.77 4.29A0.7 0.7 0 0 0 15.03 4.91Z"],
    // two palms leaning together, motion lines either side
    clap: ["M6.52 14.39L8.24 9.66A0.89 0.89 0 0 0 6.58 9.05L4.85 13.78A0.89 0.89 0 0 0 6.52 14.39Z",
      "M8.72 14.4L10.77 8.77A0.89 0.89 0 0 0 9.1 8.16L7.05 13.79A0.89 0.89 0 0 0 8.72 14.4Z",
      "M10.67 15.11L12.54 9.96A0.89 0.89 0 0 0 10.87 9.36L9 14.5A0.89 0.89 0 0 0 10.67 15.11Z",
      "M12.26 16.48L13.73 12.44A0.85 0.85 0 0 0 12.13 11.86L10.66 15.89A0.85 0.85 0 0 0 12.26 16.48Z",
      "M5 13.05L12.62 15.82L11.23 19.64L9.18 21.81L7.19 22.51L4.41 21.49L3.17 19.7L3.48 17.22Z",
      "M17.48 14.39L15.76 9.66A0.89 0.89 0 0 1 17.42 9.05L19.15 13.78A0.89 0.89 0 0 1 17.48 14.39Z",
      "M15.28 14.4L13.23 8.77A0.89 0.89 0 0 1 14.9 8.16L16.95 13.79A0.89 0.89 0 0 1 15.28 14.4Z",
      "M13.33 15.11L11.46 9.96A0.89 0.89 0 0 1 13.13 9.36L15 14.5A0.89 0.89 0 0 1 13.33 15.11Z",
      "M11.74 16.48L10.27 12.44A0.85 0.85 0 0 1 11.87 11.86L13.34 15.89A0.85 0.85 0 0 1 11.74 16.48Z",
      "M19 13.05L11.38 15.82L12.77 19.64L14.82 21.81L16.81 22.51L19.59 21.49L20.83 19.7L20.52 17.22Z",
      "M7.51 3.77L5.51 2.77A0.7 0.7 0 0 0 4.89 4.03L6.89 5.03A0.7 0.7 0 0 0 7.51 3.77Z",
      "M8.46 1.99L7.36 0.49A0.7 0.7 0 0 0 6.24 1.31L7.34 2.81A0.7 0.7 0 0 0 8.46 1.99Z",
      "M17.11 5.03L19.11 4.03A0.7 0.7 0 0 0 18.49 2.77L16.49 3.77A0.7 0.7 0 0 0 17.11 5.03Z",
      "M16.66 2.81L17.76 1.31A0.7 0.7 0 0 0 16.64 0.49L15.54 1.99A0.7 0.7 0 0 0 16.66 2.81Z"],
    // one open palm, fingers up, thumb out
    hand: ["M9.4 12L9.4 5.2A1.2 1.2 0 0 0 7 5.2L7 12A1.2 1.2 0 0 0 9.4 12Z",
      "M12.2 11L12.2 2.9A1.2 1.2 0 0 0 9.8 2.9L9.8 11A1.2 1.2 0 0 0 12.2 11Z",
      "M15 11L15 3.6A1.2 1.2 0 0 0 12.6 3.6L12.6 11A1.2 1.2 0 0 0 15 11Z",
      "M17.65 12L17.65 6.2A1.15 1.15 0 0 0 15.35 6.2L15.35 12A1.15 1.15 0 0 0 17.65 12Z",
      "M6.85 11L17.8 11L17.8 16.5L16.2 20.2L14 22L10 22L7.6 20.3L6.85 17Z",
      "M8.44 16.39L5.04 11.59A1.4 1.4 0 0 0 2.76 13.21L6.16 18.01A1.4 1.4 0 0 0 8.44 16.39Z"],
    // a question mark in a disc
    question: ["M12 2C6.48 2 2 6.48 2 12s4.48 10 10 10 10-4.48 10-10S17.52 2 12 2zm1 " +
           "17h-2v-2h2v2zm2.07-7.75l-.9.92C13.45 12.9 13 13.5 13 15h-2v-.5c0-1.1.45-2.1 " +
           "1.17-2.83l1.24-1.26c.37-.36.59-.86.59-1.41 0-1.1-.9-2-2-2s-2 .9-2 2H8c0-2.21 1.79-4 4-4s4 1.79 4 4c0 " +
           ".88-.36 1.68-.93 2.25z"],
    // a megaphone with sound lines
    megaphone: ["M2.5 9.5L6.5 9.5L15 4.5L15 19.5L6.5 14.5L2.5 14.5Z", "M6.2 15L9.2 15L10.4 20.5L7.4 20.5Z",
      "M18.46 9.32L20.66 7.92A0.85 0.85 0 0 0 19.74 6.48L17.54 7.88A0.85 0.85 0 0 0 18.46 9.32Z",
      "M18.3 12.85L21.2 12.85A0.85 0.85 0 0 0 21.2 11.15L18.3 11.15A0.85 0.85 0 0 0 18.3 12.85Z",
      "M17.54 16.12L19.74 17.52A0.85 0.85 0 0 0 20.66 16.08L18.46 14.68A0.85 0.85 0 0 0 17.54 16.12Z"],
    // an eye
    viewers: ["M12 4.5C7 4.5 2.73 7.61 1 12c1.73 4.39 6 7.5 11 7.5s9.27-3.11 11-7.5c-1.73-4.39-6-7.5-11-7.5zM12 " +
           "17c-2.76 0-5-2.24-5-5s2.24-5 5-5 5 2.24 5 5-2.24 5-5 5zm0-8c-1.66 0-3 1.34-3 3s1.34 3 3 3 3-1.34 " +
           "3-3-1.34-3-3-3z"],
    // a push pin
    pin: ["M16 9V4h1c.55 0 1-.45 1-1s-.45-1-1-1H7c-.55 0-1 .45-1 1s.45 1 1 1h1v5c0 1.66-1.34 3-3 3v2h5.97v7l1 1 " +
           "1-1v-7H19v-2c-1.66 0-3-1.34-3-3z"],
  };
  // Reaction type (the name sent over the socket) -> its icon; the buttons' aria-labels come from the type.
  const REACTIONS = { LIKE: "like", LOVE: "love", PRAY: "pray", AMEN: "amen", CLAP: "clap", RAISED_HANDS: "hand" };
  const SVG_NS = "http://www.w3.org/2000/svg";
  // An <svg> for ICONS[name]: decorative (aria-hidden) unless a label is given, then an image with that name.
  function icon(name, label) {
    const svg = document.createElementNS(SVG_NS, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("class", `icon icon-${name}`);
    svg.setAttribute("focusable", "false");
    if (label) { svg.setAttribute("role", "img"); svg.setAttribute("aria-label", label); }
    else svg.setAttribute("aria-hidden", "true");
    for (const d of ICONS[name]) {
      const path = document.createElementNS(SVG_NS, "path");
      path.setAttribute("d", d);
      svg.append(path);
    }
    return svg;
  }
  const el = (tag, attrs = {}, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };

  const MESSAGE_LABELS = { PRAYER_REQUEST: ["pray", "Prayer request"], QUESTION: ["question", "Question"],
                           ANNOUNCEMENT: ["megaphone", "Announcement"] };

  function messageItem(m) {
    const item = el("li", { class: `msg type-${m.type.toLowerCase()}`, "data-id": m.id });
    const who = el("span", { class: `author role-${m.role}` }, m.author);
    const body = el("span", { class: "text" }, " ");
    const label = MESSAGE_LABELS[m.type];
    if (label) body.append(icon(label[0], label[1]), " ");
    body.append(m.text);  // a string appends as a text node, never as markup
    item.append(who, body);
    return item;
  }

  // ---- replay: a recording plays with the chat it had ----------------------------------------------
  // web/replay_api.py gives every message, giving moment and reaction its place on the recording's own timeline (media_time);
  // the list shows what playback has reached: seeking back rebuilds it up to the new time. No socket: the
  // room of an ended broadcast is closed, and nothing said now belongs to the replay.
  const REPLAY_KEEP = 200;        // messages kept in the list, as in the live room
  const REACTION_RECENT = 2;      // seconds: reactions further behind the playhead than this don't float
  const REPLAY_TICK_MS = 250;     // timeupdate comes about every 250 ms; a tick as well, for seeks while paused
  const CARD_RECENT = 60;         // seconds: a giving moment further behind the playhead than this isn't shown again

  // A moment card (an announcement or giving moment) in `box`, as the live room shows it.
  function fillCard(box, data) {
    const card = data.card || {};
    box.replaceChildren(el("strong", {}, card.title || "Announcement"), el("p", {}, card.text || data.text || ""));
    if (card.url && /^https?:\/\//.test(card.url)) {
      box.append(el("a", { href: card.url, target: "_blank", rel: "noopener", class: "give" }, "Open"));
    }
    const close = el("button", { type: "button", class: "close", "aria-label": "Close" }, "×");
    close.addEventListener("click", () => { box.hidden = true; });
    box.append(close);
    box.hidden = false;
  }

  function replayRoom() {
    root.replaceChildren();
    root.classList.add("replay");
    root.setAttribute("aria-label", "Chat replay");
    const header = el("div", { class: "room-header" });
    header.append(el("strong", {}, "Chat replay"));
    const list = el("ol", { id: "messages", class: "messages", "aria-live": "polite" });
    const note = el("div", { id: "chat-error", class: "chat-error", role: "status" }, "");
    root.append(header, list, note);
    const stage = document.querySelector(".stage") || document.body;
    const floats = el("div", { class: "floats", "aria-hidden": "true" });
    stage.append(floats);
    const cardBox = el("div", { id: "moment", class: "moment", hidden: "" });
    stage.append(cardBox);
    const video = document.getElementById("video");
    let items = [], shown = 0;

    const now = () => (window.player && window.player.mediaTime ? window.player.mediaTime() : video.currentTime);

    function float(type, count) {
      const name = REACTIONS[type] || "love";
      for (let i = 0; i < Math.min(count, 8); i++) {
        const f = el("span", { class: `float reaction-${name}` });
        f.append(icon(name));
        f.style.left = `${10 + Math.random() * 80}%`;
        floats.append(f);
        setTimeout(() => f.remove(), 2500);
      }
    }

    // Show items[from..to) (playback reached them); `playing`: reached by playing on, not by a jump.
    function reveal(from, to, t, playing) {
      const nodes = [];
      for (let i = from; i < to; i++) {
        const item = items[i];
        if (item.kind === "reaction") {
          if (playing && t - item.media_time <= REACTION_RECENT) float(item.type, item.count || 1);
        } else {
          nodes.push(messageItem(item));
          if (item.kind === "giving" && t - item.media_time <= CARD_RECENT) {
            fillCard(cardBox, item);
            cardBox.dataset.id = item.id;
          }
        }
      }
      list.append(...nodes.slice(-REPLAY_KEEP));
      while (list.children.length > REPLAY_KEEP) list.firstChild.remove();
      if (nodes.length) list.scrollTop = list.scrollHeight;
    }

    function sync() {
      const t = now();
      let reached = shown;
      while (reached < items.length && items[reached].media_time <= t) reached++;
      while (reached > 0 && items[reached - 1].media_time > t) reached--;
      if (reached < shown) {  // sought back: start the list again from the beginning
        list.replaceChildren();
        cardBox.hidden = true;  // a giving moment not reached yet isn't shown
        delete cardBox.dataset.id;
        shown = 0;
      }
      if (reached > shown) reveal(shown, reached, t, !video.seeking && reached - shown <= 3);
      shown = reached;
      root.dataset.shown = String(shown);
    }

    async function load() {
      try {
        const reply = await fetch(cfg.chat_replay_url, { credentials: "same-origin" });
        if (!reply.ok) throw new Error(String(reply.status));
        const body = await reply.json();
        // Hidden by a moderator: a staff caller gets them flagged; a replay never shows them.
        items = (body.items || []).filter((item) => !item.hidden)
          .sort((a, b) => a.media_time - b.media_time);
        if (!items.some((item) => item.kind !== "reaction")) note.textContent = "No chat during this broadcast.";
        root.dataset.replay = "ready";
        sync();
      } catch (_) {
        note.textContent = "The chat of this recording is not available.";
        root.dataset.replay = "failed";
      }
    }

    for (const name of ["timeupdate", "seeking", "seeked", "play"]) video.addEventListener(name, sync);
    setInterval(sync, REPLAY_TICK_MS);
    window.room = { replay: true, sync };
    load();
  }

  if (cfg.chat_replay_url && (cfg.status === "ENDED" || cfg.status === "FAILED")) {
    replayRoom();
    return;
  }

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
  for (const [type, name] of Object.entries(REACTIONS)) {
    const label = type.toLowerCase().replace("_", " ");
    const b = el("button", { type: "button", class: `reaction reaction-${name}`, "data-reaction": type, "aria-label": label,
                             title: label[0].toUpperCase() + label.slice(1) });
    b.append(icon(name));
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
    list.append(messageItem(m));
    while (list.children.length > 200) list.firstChild.remove();
    list.scrollTop = list.scrollHeight;
  }

  function showPinned(m) {
    pinned.hidden = !m;
    pinned.replaceChildren();
    if (m) pinned.append(icon("pin", "Pinned"), ` ${m.author}: ${m.text}`);
  }

  function float(type) {
    const name = REACTIONS[type] || "love";
    const f = el("span", { class: `float reaction-${name}` });
    f.append(icon(name));
    f.style.left = `${10 + Math.random() * 80}%`;
    floats.append(f);
    setTimeout(() => f.remove(), 2500);
  }

  function showCard(data) {
    fillCard(cardBox, data);
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
    "stream:viewers": (d) => {
      viewers.replaceChildren(icon("viewers", "Watching now"), ` ${d.count}`);
      viewers.title = `${d.count} watching now`;
    },
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
