// Organization settings: name and time zone, how services stream (latency, rewind window, recording), the quality
// ladder, chat moderation, branding (colours, logo, poster) and where the player may be embedded. Each section
// saves on its own (PATCH /api/orgs/{org} merges settings by key), so one mistake never loses another's edits.
"use strict";

(() => {
  const C = window.Console;
  const { el } = C;
  const IMAGE_TYPES = "image/png,image/jpeg,image/webp";

  function section(id, title, hint, ...children) {
    return el("section", { class: "panel settings-section", "aria-labelledby": `${id}-h`, id },
      el("h2", { id: `${id}-h` }, title), hint ? el("p", { class: "hint" }, hint) : null, ...children);
  }

  function field(id, label, input, hint) {
    input.id = id;
    return el("div", { class: "field" }, el("label", { for: id }, label), input, hint ? el("p", { class: "hint" }, hint) : null);
  }

  function check(id, label, checked) {
    const box = el("input", { type: "checkbox", id, checked });
    return [box, el("label", { class: "inline", for: id }, box, label)];
  }

  function saveRow(label) {
    return el("div", { class: "row" }, el("button", { type: "submit", class: "primary" }, label));
  }

  async function render(main) {
    const current = C.org();
    if (!current) { main.append(el("p", { class: "notice" }, "No organization to set up.")); return; }
    let org = await C.api("GET", `/api/orgs/${encodeURIComponent(current.id)}`);
    const path = `/api/orgs/${encodeURIComponent(org.id)}`;
    const settings = () => org.settings || {};

    async function patch(body, done) {
      const updated = await C.attempt(() => C.api("PATCH", path, body), done);
      if (updated) org = updated;
      return updated;
    }

    main.append(el("h1", {}, "Settings"),
      el("p", { class: "muted" }, `For ${org.name}. New streams start from these; the ladder, the rewind window and chat moderation apply to every service at once.`));

    // -- organization -------------------------------------------------------------------------------------
    const name = el("input", { value: org.name, maxlength: 200, required: true });
    const zones = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];
    const zone = el("input", { value: org.timezone, list: "tz-list", autocomplete: "off", required: true });
    main.append(section("set-org", "Organization", null,
      el("form", { on: { submit: (e) => { e.preventDefault(); patch({ name: name.value.trim(), timezone: zone.value.trim() }, "Saved."); } } },
        field("org-name", "Name", name),
        field("org-tz", "Time zone", zone, "Service times and the calendar use it, e.g. America/Chicago."),
        el("datalist", { id: "tz-list" }, zones.map((z) => el("option", { value: z }))),
        saveRow("Save organization"))));

    // -- streaming ----------------------------------------------------------------------------------------
    const s = settings();
    const lowLatency = el("input", { type: "radio", name: "latency", id: "lat-low", value: "LOW", checked: s.latency_mode !== "STANDARD" });
    const standard = el("input", { type: "radio", name: "latency", id: "lat-std", value: "STANDARD", checked: s.latency_mode === "STANDARD" });
    const [dvr, dvrLabel] = check("dvr-enabled", "Viewers can rewind (DVR)", s.dvr_enabled !== false);
    const dvrWindow = el("input", { type: "number", min: 0, max: 720, step: 1, value: s.dvr_window_minutes ?? "" ,
      placeholder: "server default" });
    const [recording, recordingLabel] = check("recording-enabled", "Keep every service as a recording", s.recording_enabled !== false);
    const [autoPublish, autoPublishLabel] = check("auto-publish", "Go live as soon as the encoder connects", s.auto_publish !== false);
    main.append(section("set-streaming", "Streaming", "Latency, recording and going live apply to streams created from now on.",
      el("form", { on: { submit: (e) => {
        e.preventDefault();
        const next = { latency_mode: lowLatency.checked ? "LOW" : "STANDARD", dvr_enabled: dvr.checked,
          recording_enabled: recording.checked, auto_publish: autoPublish.checked };
        if (dvrWindow.value !== "") {
          const minutes = Number(dvrWindow.value);
          if (!Number.isInteger(minutes) || minutes < 0 || minutes > 720) {
            C.toast("The rewind window is 0 to 720 minutes.", "error");
            return;
          }
          next.dvr_window_minutes = minutes;
        }
        patch({ settings: next }, "Streaming settings saved.");
      } } },
      el("fieldset", {}, el("legend", {}, "Latency"),
        el("label", { class: "inline", for: "lat-low" }, lowLatency, "Low latency (about 2 s behind; the default)"),
        el("label", { class: "inline", for: "lat-std" }, standard, "Standard (more robust on weak connections)")),
      dvrLabel,
      field("dvr-window", "Rewind window (minutes)", dvrWindow, "How far back viewers can go during a live service; 0 keeps only the live edge; empty: the server's default."),
      recordingLabel, autoPublishLabel,
      saveRow("Save streaming"))));

    // -- video platform: where new streams run (builtin, Mux, AWS IVS), from what this server has configured ------
    const configured = await C.api("GET", `/api/backends?org=${encodeURIComponent(org.id)}`).catch(() => null);
    if (configured && configured.backends.length > 1) {
      const platform = el("select", {}, configured.backends.map((b) => el("option", { value: b.name }, b.summary)));
      platform.value = configured.default_available ? configured.default : "builtin";
      const notes = el("ul", { class: "hint platform-notes", id: "org-backend-notes" });
      const showNotes = () => {
        const chosen = configured.backends.find((b) => b.name === platform.value);
        notes.replaceChildren(...(chosen ? chosen.notes : []).map((n) => el("li", {}, n)));
      };
      platform.addEventListener("change", showNotes);
      showNotes();
      main.append(section("set-platform", "Video platform",
        "Where new streams and series run unless one says otherwise. Streams already made stay where they are.",
        configured.default_available ? null : el("p", { class: "notice", role: "alert" },
          `Your default, ${configured.default}, is no longer configured on this server: choose another.`),
        el("form", { on: { submit: (e) => {
          e.preventDefault();
          patch({ settings: { backend: platform.value } }, "Video platform saved.");
        } } },
        field("org-backend", "New streams run on", platform), notes,
        saveRow("Save video platform"))));
    }

    // -- quality ladder ---------------------------------------------------------------------------------
    const rungs = el("tbody", {});
    let rungSerial = 0;
    function rungRow(r = { name: "", height: 720, video_bitrate: 2800000, passthrough: false }) {
      const n = ++rungSerial;
      const row = el("tr", { class: "rung" },
        el("td", {}, el("input", { class: "rung-name", value: r.name, "aria-label": `Rung ${n} name`, size: 8 })),
        el("td", {}, el("input", { class: "rung-height", type: "number", min: 64, max: 4320, value: r.height, "aria-label": `Rung ${n} height (pixels)` })),
        el("td", {}, el("input", { class: "rung-kbps", type: "number", min: 50, max: 50000, value: Math.round(r.video_bitrate / 1000), "aria-label": `Rung ${n} video bitrate (kbit/s)` })),
        el("td", {}, el("input", { class: "rung-pass", type: "checkbox", checked: r.passthrough, "aria-label": `Rung ${n}: copy the source (passthrough)` })),
        el("td", {}, el("button", { type: "button", class: "danger", "aria-label": `Remove rung ${n}`, on: { click: () => row.remove() } }, "Remove")));
      return row;
    }
    for (const r of s.default_ladder || []) rungs.append(rungRow(r));
    main.append(section("set-ladder", "Quality ladder",
      "The qualities each service is made in. Leave it empty to use the server's ladder. Rungs taller than the camera are skipped.",
      el("form", { on: { submit: (e) => {
        e.preventDefault();
        const ladder = [...rungs.querySelectorAll("tr.rung")].map((row) => ({
          name: row.querySelector(".rung-name").value.trim(),
          height: Number(row.querySelector(".rung-height").value),
          video_bitrate: Number(row.querySelector(".rung-kbps").value) * 1000,
          passthrough: row.querySelector(".rung-pass").checked,
        }));
        patch({ settings: { default_ladder: ladder } }, ladder.length ? "Ladder saved." : "Using the server's ladder.");
      } } },
      el("div", { class: "table-wrap" }, el("table", {},
        el("thead", {}, el("tr", {}, ["Name", "Height (px)", "Bitrate (kbit/s)", "Copy source", ""].map((h) => el("th", { scope: "col" }, h)))),
        rungs)),
      el("div", { class: "row" },
        el("button", { type: "button", on: { click: () => rungs.append(rungRow()) } }, "Add a rung"),
        el("button", { type: "submit", class: "primary" }, "Save ladder")))));

    // -- chat moderation ----------------------------------------------------------------------------------
    const chat = s.chat || {};
    const words = el("textarea", { rows: 5 });
    words.value = (chat.blocked_words || []).join("\n");
    const [links, linksLabel] = check("chat-links", "Hold messages with links for review", chat.link_filter !== false);
    const [holdAll, holdAllLabel] = check("chat-hold", "Hold every guest's message for review", Boolean(chat.hold_for_review));
    const slow = el("input", { type: "number", min: 0, max: 3600, step: 1, value: chat.slow_mode_seconds || 0 });
    main.append(section("set-chat", "Chat moderation", "Applies at once, in rooms already open too.",
      el("form", { on: { submit: (e) => {
        e.preventDefault();
        const list = [...new Set(words.value.split("\n").map((w) => w.trim()).filter(Boolean))];
        if (list.some((w) => w.length > 100)) { C.toast("A blocked word is longer than 100 characters.", "error"); return; }
        patch({ settings: { chat: { blocked_words: list, link_filter: links.checked, hold_for_review: holdAll.checked,
          slow_mode_seconds: Number(slow.value) || 0 } } }, "Chat moderation saved.");
      } } },
      field("chat-words", "Blocked words (one per line)", words, "A message containing one waits in the review queue of the Moderation page."),
      linksLabel, holdAllLabel,
      field("chat-slow", "Slow mode (seconds between one guest's messages; 0: off)", slow),
      saveRow("Save chat moderation"))));

    // -- giving -------------------------------------------------------------------------------------------
    const giving = s.giving || {};
    const [givingOn, givingOnLabel] = check("giving-enabled", "Show a Give button on new streams", Boolean(giving.enabled));
    const givingUrl = el("input", { type: "url", value: giving.url || "", placeholder: "https://", maxlength: 2000 });
    const givingMessage = el("input", { value: giving.message || "", maxlength: 200 });
    main.append(section("set-giving", "Giving",
      "What new streams start with (each stream can change its own). During a service, send a giving moment from the Moderation page.",
      el("form", { on: { submit: (e) => {
        e.preventDefault();
        const url = givingUrl.value.trim();
        if (url && !/^https?:\/\//i.test(url)) { C.toast("The giving link must start with https://", "error"); return; }
        if (givingOn.checked && !url) { C.toast("A Give button needs a giving link.", "error"); return; }
        patch({ settings: { giving: { enabled: givingOn.checked, url: url || null, message: givingMessage.value.trim() || null } } },
          "Giving saved.");
      } } },
      givingOnLabel,
      field("giving-url", "Giving link", givingUrl, "Your online giving page (e.g. your church's giving provider)."),
      field("giving-message", "Message beside the button (optional)", givingMessage),
      saveRow("Save giving"))));

    // -- podcast (the sermon library's feed) ----------------------------------------------------------------
    const contact = el("input", { type: "email", value: s.contact_email || "", maxlength: 254, placeholder: "office@yourchurch.org" });
    const podcastWarning = el("p", { class: "notice", id: "podcast-warning", role: "status" });
    const showWarnings = () => {
      podcastWarning.textContent = (org.warnings || []).join(" ");
      podcastWarning.hidden = !podcastWarning.textContent;
    };
    showWarnings();
    main.append(section("set-podcast", "Podcast",
      "The sermon library's podcast feed names your church as its owner with this e-mail; Apple Podcasts requires it.",
      podcastWarning,
      el("form", { on: { submit: async (e) => {
        e.preventDefault();
        const value = contact.value.trim();
        if (value && !contact.checkValidity()) { C.toast(`${value} is not an e-mail address.`, "error"); return; }
        await patch({ settings: { contact_email: value || null } }, "Contact e-mail saved.");
        showWarnings();
      } } },
      field("contact-email", "Contact e-mail", contact),
      saveRow("Save contact e-mail"))));

    // -- branding -----------------------------------------------------------------------------------------
    const brand = s.branding || {};
    const display = el("input", { value: brand.display_name || "", maxlength: 200, placeholder: org.name });
    function colorField(id, label, value, hint) {
      const text = el("input", { id, value: value || "", placeholder: "#rrggbb", size: 9, class: "color-text" });
      const picker = el("input", { type: "color", value: value || "#1f5fbf", "aria-label": `${label}: pick`, class: "color-pick" });
      picker.addEventListener("input", () => { text.value = picker.value; });
      text.addEventListener("input", () => { if (/^#[0-9a-f]{6}$/i.test(text.value)) picker.value = text.value; });
      return { text, node: el("div", { class: "field" }, el("label", { for: id }, label), el("div", { class: "row" }, text, picker),
        hint ? el("p", { class: "hint" }, hint) : null) };
    }
    const primary = colorField("brand-primary", "Main colour", brand.primary_color || brand.accent_color, "Buttons, the LIVE badge, the seek bar.");
    const background = colorField("brand-background", "Background colour", brand.background_color);
    const textColor = colorField("brand-text", "Text colour", brand.text_color, "Empty: black or white, whichever reads better.");
    const colors = [primary, background, textColor];

    function imageBox(kind, label) {
      const wrap = el("div", { class: "brand-image" });
      function draw() {
        const meta = (settings().branding || {})[kind];
        const input = el("input", { type: "file", accept: IMAGE_TYPES, id: `brand-${kind}` });
        input.addEventListener("change", async () => {
          const file = input.files && input.files[0];
          if (!file) return;
          if (file.size > 2 * 1024 * 1024) { C.toast(`${label}: at most 2 MB.`, "error"); return; }
          const updated = await C.attempt(() => C.api("PUT", `${path}/branding/${kind}`, file, { contentType: file.type || "application/octet-stream" }),
            `${label} uploaded.`);
          if (updated) { org = updated; draw(); }
        });
        wrap.replaceChildren(
          el("label", { for: `brand-${kind}` }, `${label} (PNG, JPEG or WebP, at most 2 MB)`),
          meta ? el("img", { src: `/brand/${encodeURIComponent(org.slug)}/${kind}?v=${meta.sha256.slice(0, 16)}`, alt: `Current ${label.toLowerCase()}`,
            class: `brand-preview ${kind}` }) : el("p", { class: "muted" }, `No ${label.toLowerCase()} yet.`),
          input,
          meta ? el("button", { type: "button", class: "danger", on: { click: async () => {
            const updated = await C.attempt(() => C.api("DELETE", `${path}/branding/${kind}`), `${label} removed.`);
            if (updated) { org = updated; draw(); }
          } } }, `Remove ${label.toLowerCase()}`) : "");
      }
      draw();
      return wrap;
    }
    main.append(section("set-branding", "Branding", "How the watch page and the embedded player look.",
      el("form", { on: { submit: (e) => {
        e.preventDefault();
        const next = { display_name: display.value.trim() || null };
        for (const [key, f] of [["primary_color", primary], ["background_color", background], ["text_color", textColor]]) {
          const value = f.text.value.trim();
          if (value && !/^#[0-9a-f]{6}$/i.test(value)) { C.toast(`${value} is not a colour like #1d4ed8.`, "error"); return; }
          next[key] = value || null;
        }
        const kept = { ...(settings().branding || {}) };
        delete kept.logo; delete kept.poster;  // the images have their own buttons
        patch({ settings: { branding: { ...kept, ...next } } }, "Branding saved.");
      } } },
      field("brand-name", "Name shown on the pages", display),
      ...colors.map((c) => c.node),
      saveRow("Save branding")),
      el("div", { class: "grid" }, imageBox("logo", "Logo"), imageBox("poster", "Poster"))));

    // -- embedding ----------------------------------------------------------------------------------------
    const origins = el("textarea", { rows: 3, placeholder: "https://www.yourchurch.org" });
    origins.value = (s.embed_origins || []).filter((o) => o !== "*").join("\n");
    main.append(section("set-embed", "Embedding", "Websites allowed to show the player in an iframe. Empty: any website.",
      el("form", { on: { submit: (e) => {
        e.preventDefault();
        const list = origins.value.split("\n").map((o) => o.trim().replace(/\/$/, "")).filter(Boolean);
        // An empty list would let no other site embed: "*" says any site, as the hint promises.
        patch({ settings: { embed_origins: list.length ? list : ["*"] } }, "Embedding saved.");
      } } },
      field("embed-origins", "Websites (one per line, like https://www.yourchurch.org)", origins),
      saveRow("Save embedding"))));
  }

  C.page("settings", { nav: "Settings", title: "Settings", render });
})();
