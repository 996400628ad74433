// The recordings library (#/recordings): every saved service with play, download (the MP4), rename and delete,
// and how much storage the recordings use.
"use strict";

(() => {
  const C = window.Console;
  const UI = window.StreamsUI;
  const { el } = C;

  function player(recording) {
    const video = el("video", { controls: true, playsinline: true, "aria-label": `Playing ${recording.title}` });
    let hls = null;
    // The URLs are absolute (the server's public address); play them from this origin so the session cookie applies.
    const path = new URL(recording.playback_url, window.location.href).pathname;
    if (recording.playback_type === "hls" && window.Hls && window.Hls.isSupported()) {
      hls = new window.Hls();
      hls.loadSource(path);
      hls.attachMedia(video);
    } else {
      video.src = path;
    }
    video.play().catch(() => { /* the volunteer presses play */ });
    return { video, stop: () => { if (hls) hls.destroy(); video.removeAttribute("src"); video.load(); } };
  }

  function renameForm(recording, done) {
    const id = `rename-${recording.id}`;
    const input = el("input", { id, value: recording.title, maxlength: 200, required: true });
    const form = el("form", { class: "rename row", "aria-label": `Rename ${recording.title}` },
      el("label", { for: id, class: "inline" }, "New title"), input,
      el("button", { type: "submit", class: "primary" }, "Save"),
      el("button", { type: "button", on: { click: () => done(null) } }, "Cancel"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const answer = await C.attempt(() => C.api("PATCH",
        `/api/streams/${encodeURIComponent(recording.stream_id)}/recordings/${encodeURIComponent(recording.id)}`,
        { title: input.value.trim() || null }), "Renamed");
      if (answer) done(answer);
    });
    setTimeout(() => input.focus());
    return form;
  }

  async function render(main) {
    const storage = el("p", { id: "storage-used", class: "storage" });
    const list = el("div", { class: "recordings", id: "recordings-list" });
    const playerSlot = el("div", { id: "recording-player" });
    let current = null;
    C.onLeave(() => { if (current) current.stop(); });
    main.append(el("h1", {}, "Recordings"), storage, playerSlot, list);

    function play(recording) {
      if (current) current.stop();
      current = player(recording);
      playerSlot.replaceChildren(el("section", { class: "panel", "aria-label": "Player" },
        el("div", { class: "row" }, el("h2", {}, recording.title),
          el("button", { type: "button", on: { click: () => { current.stop(); current = null; playerSlot.replaceChildren(); } } },
            "Close player")),
        current.video));
      playerSlot.scrollIntoView({ block: "nearest" });
    }

    function card(recording) {
      const title = el("h2", { class: "recording-title" }, recording.title);
      const details = el("p", { class: "hint" },
        recording.renamed ? `${recording.stream_title} · ` : "",
        `${C.when(recording.created_at)} · ${C.duration(recording.duration)} · `,
        `${C.bytes((recording.size || 0) + (recording.mp4_size || 0))}`);
      const actions = el("div", { class: "row" });
      const box = el("article", { class: "panel recording", "data-recording-id": recording.id }, title, details, actions);
      if (recording.status !== "READY") {
        actions.append(el("span", { class: "badge STARTING" }, "Saving…"));
        return box;
      }
      if (recording.error) details.append(el("div", { class: "notice" }, recording.error));
      actions.append(el("button", { type: "button", class: "primary", "aria-label": `Play ${recording.title}`,
        on: { click: () => play(recording) } }, "Play"));
      if (recording.download_url) {
        // Same-origin path: the download goes with the session cookie and never carries a token.
        const href = new URL(recording.download_url, window.location.href);
        actions.append(el("a", { class: "button download", href: href.pathname + href.search, download: "",
          "aria-label": `Download the MP4 of ${recording.title}` }, `Download MP4 (${C.bytes(recording.mp4_size)})`));
      }
      const rename = el("button", { type: "button", "aria-label": `Rename ${recording.title}` }, "Rename");
      rename.addEventListener("click", () => {
        const form = renameForm(recording, (answer) => {
          form.remove();
          rename.hidden = false;
          if (answer) load();
        });
        rename.hidden = true;
        actions.after(form);
      });
      const del = el("button", { type: "button", class: "danger", "aria-label": `Delete ${recording.title}` }, "Delete");
      del.addEventListener("click", () => UI.confirmInline(del,
        `Delete “${recording.title}” with its media (${C.bytes((recording.size || 0) + (recording.mp4_size || 0))})? ` +
        "This can't be undone.", "Delete for good", async () => {
          const ok = await C.attempt(() => C.api("DELETE",
            `/api/streams/${encodeURIComponent(recording.stream_id)}/recordings/${encodeURIComponent(recording.id)}`), "Deleted");
          if (ok !== undefined) load();
        }));
      actions.append(rename, del,
        el("a", { class: "button", href: `#/stream/${encodeURIComponent(recording.stream_id)}` }, "Its stream"));
      if (window.LibraryPublish) window.LibraryPublish.block(recording, box);  // the sermon library (below)
      if (window.Reair) window.Reair.block(recording, box);  // simulated live (below)
      if (window.ReplayModeration) window.ReplayModeration.block(recording, box);  // chat replay (below)
      return box;
    }

    async function load() {
      const answer = await C.attempt(() => C.api("GET", "/api/recordings?limit=200"));
      if (!answer) return;
      storage.dataset.bytes = String(answer.storage_bytes);
      storage.textContent = `Storage used by ${answer.total} recording${answer.total === 1 ? "" : "s"}: ${C.bytes(answer.storage_bytes)}`;
      // Don't redraw under an open rename or delete question.
      if (list.querySelector("form.rename, form.library-publish, .confirm, .replay-items")) return;
      list.replaceChildren(...answer.recordings.map(card));
      if (!answer.recordings.length) list.append(el("p", { class: "muted" }, "No recordings yet: every service is kept here once it ends."));
      if (answer.next_offset !== null) list.append(el("p", { class: "hint" }, `Showing the newest ${answer.recordings.length}.`));
    }

    await load();
    // A service that just ended is saved in the background: look again while one is still saving.
    C.every(5000, () => { if (list.querySelector(".badge.STARTING")) load(); });
  }

  C.page("recordings", { nav: "Recordings", title: "Recordings", render });
})();

// The sermon library: "Publish to the library" on each recording (title, speaker, series, scripture, date), or,
// once published, where it is. Only a public stream's recordings can be published (the server says so, 409).
(() => {
  const C = window.Console;
  const { el } = C;
  let published = null;  // one GET /api/library per redraw of the list, shared by its cards

  function items() {
    if (!published) {
      published = C.api("GET", "/api/library").then((answer) => answer.items, () => []);
      setTimeout(() => { published = null; }, 2000);
    }
    return published;
  }

  function field(recording, name, label, value = "", type = "text") {
    const id = `library-${name}-${recording.id}`;
    return [el("label", { for: id, class: "inline" }, label),
      el("input", { id, name, type, value, maxlength: 200, required: name === "title" })];
  }

  function shown(slot, item) {
    const page = new URL(item.page_url, window.location.href);
    slot.replaceChildren(el("p", { class: "hint library-published" }, "In the sermon library · ",
      el("a", { href: page.pathname + page.search, target: "_blank", rel: "noopener" }, "View the public page")));
  }

  function form(recording, slot) {
    const today = (recording.created_at || "").slice(0, 10);
    const box = el("form", { class: "library-publish row", "aria-label": `Publish ${recording.title} to the library` },
      ...field(recording, "title", "Title", recording.title), ...field(recording, "speaker", "Speaker"),
      ...field(recording, "series", "Series"), ...field(recording, "scripture", "Scripture"),
      ...field(recording, "date", "Date", today, "date"),
      el("button", { type: "submit", class: "primary" }, "Publish"),
      el("button", { type: "button", on: { click: () => start(recording, slot) } }, "Cancel"));
    box.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = { stream_id: recording.stream_id, recording_id: recording.id };
      for (const input of box.querySelectorAll("input")) if (input.value.trim()) body[input.name] = input.value.trim();
      const item = await C.attempt(() => C.api("POST", "/api/library", body), "Published to the library");
      if (item) shown(slot, item);
    });
    slot.replaceChildren(box);
  }

  function start(recording, slot) {
    slot.replaceChildren(el("button", { type: "button", "aria-label": `Publish ${recording.title} to the library`,
      on: { click: () => form(recording, slot) } }, "Publish to the library"));
  }

  window.LibraryPublish = {
    block(recording, box) {
      const slot = el("div", { class: "library-slot" });
      box.append(slot);
      items().then((list) => {
        const item = list.find((i) => i.recording_id === recording.id);
        if (item) shown(slot, item); else start(recording, slot);
      });
    },
  };
})();

// Simulated live: "Re-air" on each recording schedules it to air again on its stream as a live service
// (POST /api/streams/{id}/simulated-live); chat, webhooks and the watch page behave as for a live service.
(() => {
  const C = window.Console;
  const { el } = C;

  function form(recording, slot) {
    const id = `reair-${recording.id}`;
    const soon = new Date(Date.now() + 10 * 60 * 1000);
    soon.setSeconds(0, 0);
    const local = new Date(soon.getTime() - soon.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
    const input = el("input", { id, type: "datetime-local", value: local, required: true });
    const box = el("form", { class: "reair row", "aria-label": `Re-air ${recording.title}` },
      el("label", { for: id, class: "inline" }, "Air at"), input,
      el("button", { type: "submit", class: "primary" }, "Schedule re-air"),
      el("button", { type: "button", on: { click: () => start(recording, slot) } }, "Cancel"));
    box.addEventListener("submit", async (event) => {
      event.preventDefault();
      const airAt = new Date(input.value).toISOString().replace(/\.\d{3}Z$/, "Z");
      const answer = await C.attempt(() => C.api("POST",
        `/api/streams/${encodeURIComponent(recording.stream_id)}/simulated-live`,
        { recording_id: recording.id, air_at: airAt }), "Re-air scheduled");
      if (answer) slot.replaceChildren(el("p", { class: "hint" }, `Airs ${new Date(airAt).toLocaleString()}`));
    });
    slot.replaceChildren(box);
  }

  function start(recording, slot) {
    slot.replaceChildren(el("button", { type: "button", "aria-label": `Re-air ${recording.title}`,
      on: { click: () => form(recording, slot) } }, "Re-air"));
  }

  window.Reair = {
    block(recording, box) {
      const slot = el("div", { class: "reair-slot" });
      box.append(slot);
      start(recording, slot);
    },
  };
})();

// Chat replay: "Chat replay" on each recording lists what its replay shows (messages, announcements, giving
// moments at their time in the recording), each with Hide/Unhide: a hidden message never shows in the public
// replay (web/replay_api.py; audit-logged as replay_hide / replay_unhide).
(() => {
  const C = window.Console;
  const { el } = C;

  const clock = (seconds) => {
    const s = Math.max(0, Math.floor(seconds));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  };

  function base(recording) {
    return `/api/streams/${encodeURIComponent(recording.stream_id)}/recordings/${encodeURIComponent(recording.id)}` +
      "/chat-replay";
  }

  function row(recording, item) {
    const line = el("li", { class: `replay-item${item.hidden ? " hidden-item" : ""}`, "data-message-id": item.id },
      el("span", { class: "muted" }, `${clock(item.media_time)} `),
      el("strong", {}, item.author || ""), " ", item.kind === "giving"
        ? `Giving moment: ${item.text}${item.card && item.card.text ? ` — ${item.card.text}` : ""}` : item.text,
      item.hidden ? el("span", { class: "badge" }, " hidden from the replay") : "");
    const action = item.hidden ? "unhide" : "hide";
    const button = el("button", { type: "button", "aria-label": `${item.hidden ? "Unhide" : "Hide"} “${item.text}”` },
      item.hidden ? "Unhide" : "Hide");
    button.addEventListener("click", async () => {
      const answer = await C.attempt(() => C.api("POST", `${base(recording)}/${encodeURIComponent(item.id)}/${action}`),
        item.hidden ? "Shown in the replay again" : "Hidden from the replay");
      if (answer) line.replaceWith(row(recording, { ...item, hidden: answer.hidden }));
    });
    line.append(" ", button);
    return line;
  }

  async function open(recording, slot) {
    const answer = await C.attempt(() => C.api("GET", base(recording)));
    if (!answer) return;
    const shown = answer.items.filter((item) => item.kind !== "reaction");
    const list = el("ol", { class: "replay-items", "aria-label": `Chat replay of ${recording.title}` },
      ...shown.map((item) => row(recording, item)));
    slot.replaceChildren(el("div", { class: "row" }, el("h3", {}, "Chat replay"),
      el("button", { type: "button", on: { click: () => start(recording, slot) } }, "Close")),
    shown.length ? list : el("p", { class: "muted replay-items" }, "No chat during this broadcast."));
  }

  function start(recording, slot) {
    slot.replaceChildren(el("button", { type: "button", "aria-label": `Chat replay of ${recording.title}`,
      on: { click: () => open(recording, slot) } }, "Chat replay"));
  }

  window.ReplayModeration = {
    block(recording, box) {
      const slot = el("div", { class: "replay-slot" });
      box.append(slot);
      start(recording, slot);
    },
  };
})();
