// The go-live panel for one stream (#/stream/ID): what to type into OBS, a preview, the encoder's health as the
// server measures it (polled every 2 s), and the actions: start, go live, end, rotate the key, cancel.
"use strict";

(() => {
  const C = window.Console;
  const UI = window.StreamsUI;
  const { el } = C;
  const POLL_MS = 2000;
  // The README's default ladder, only if the server's own (GET /api/orgs/X server_defaults) can't be read.
  const SERVER_LADDER = [{ name: "1080p", height: 1080, video_bitrate: 5000000 }, { name: "720p", height: 720, video_bitrate: 2800000 },
    { name: "480p", height: 480, video_bitrate: 1200000 }, { name: "360p", height: 360, video_bitrate: 700000 }];

  const kbps = (bits) => (bits === null || bits === undefined ? "—" : bits >= 1e6 ? `${(bits / 1e6).toFixed(2)} Mbit/s`
    : `${Math.round(bits / 1000)} kbit/s`);
  const num = (value, digits, unit) => (value === null || value === undefined ? "—" : `${Number(value).toFixed(digits)} ${unit}`);

  // The health panel's verdict: grey while no encoder is connected, amber with the server's warnings, else green.
  function verdict(ingest) {
    if (!ingest) return { cls: "offline", text: "Waiting for the encoder" };
    if (ingest.warnings && ingest.warnings.length) return { cls: "warning", text: "Needs attention" };
    return { cls: "good", text: "Healthy" };
  }

  function fact(dl, label, value, key) {
    dl.append(el("dt", {}, label), el("dd", { "data-fact": key }, value));
  }

  function renderHealth(box, stream, platform) {
    const ingest = stream.ingest;
    const v = platform && !ingest ? { cls: "offline", text: UI.LIVE.includes(stream.status) ? `On air through ${platform}`
      : `Waiting for ${platform}` } : verdict(ingest);
    box.className = `panel health ${v.cls}`;
    box.dataset.state = v.cls;
    const status = box.querySelector(".health-state");
    status.replaceChildren(el("span", { class: `badge ${v.cls === "good" ? "ok" : v.cls === "warning" ? "warn" : ""}` }, v.text));
    const warnings = box.querySelector(".warnings");
    warnings.replaceChildren(...(ingest ? ingest.warnings : []).map((w) => el("li", {}, w)));
    warnings.hidden = !warnings.children.length;
    const dl = box.querySelector("dl");
    dl.replaceChildren();
    if (!ingest) {
      box.querySelector(".health-hint").textContent = stream.error ? `Last error: ${stream.error}`
        : platform ? `The encoder connects to ${platform}, which tells this server when the stream goes live and ends; ` +
          `its encoder numbers are in ${platform}'s own dashboard.`
        : "Start streaming in OBS with the settings below; the numbers appear within a few seconds.";
      return;
    }
    box.querySelector(".health-hint").textContent = stream.error || "";
    const video = ingest.video || {};
    const audio = ingest.audio || {};
    fact(dl, "Protocol", ingest.protocol.toUpperCase(), "protocol");
    fact(dl, "Connected for", C.duration(ingest.connected_seconds), "connected");
    fact(dl, "Resolution", video.width && video.height ? `${video.width}×${video.height}` : "—", "resolution");
    fact(dl, "Video codec", video.codec || "—", "video-codec");
    fact(dl, "Frame rate", num(video.frame_rate, 1, "fps"), "frame-rate");
    fact(dl, "Incoming video bitrate", kbps(video.bitrate), "video-bitrate");
    fact(dl, "Keyframe interval", num(video.keyframe_interval, 1, "s"), "keyframe-interval");
    fact(dl, "Dropped / late frames", String(video.dropped_frames ?? 0), "dropped");
    fact(dl, "Behind real time", num(ingest.behind_real_time, 2, "s"), "behind");
    fact(dl, "Audio", audio.present ? `${audio.codec || "yes"}, ${kbps(audio.bitrate)}` : "none", "audio");
    if ("level_dbfs" in audio) {
      fact(dl, "Audio level", audio.level_dbfs === null || audio.level_dbfs === undefined
        ? (audio.silent ? "silent" : "—") : `${audio.level_dbfs.toFixed(1)} dBFS${audio.silent ? " (silent)" : ""}`, "audio-level");
    }
    if (ingest.segment_delay_seconds !== undefined) {
      // A segment can land a hair before its nominal end (clock jitter): show that as 0, not "-0.00".
      fact(dl, "Segment delay", num(ingest.segment_delay_seconds === null ? null : Math.max(0, ingest.segment_delay_seconds), 2, "s"), "segment-delay");
    }
    for (const rung of ingest.transcode || []) {
      fact(dl, `Transcode ${rung.rendition}`, rung.passthrough ? "copied (passthrough)" : num(rung.speed, 1, "× real time"),
        `transcode-${rung.rendition}`);
    }
    fact(dl, "Reconnects", String(ingest.reconnects), "reconnects");
  }

  // hls.js on the stream's master playlist: the session cookie authorizes private streams, so no token in the URL.
  // A cloud stream (Mux, IVS) plays from its platform: playback_url, signed there when private.
  function preview(video, streamId, cloudSource) {
    let hls = null;
    const source = cloudSource || `/hls/${encodeURIComponent(streamId)}/master.m3u8`;
    return {
      get playing() { return hls !== null || video.src !== ""; },
      start() {
        if (this.playing) return;
        if (window.Hls && window.Hls.isSupported()) {
          hls = new window.Hls({ lowLatencyMode: true, liveSyncDurationCount: 2 });
          hls.loadSource(source);
          hls.attachMedia(video);
          hls.on(window.Hls.Events.ERROR, (_event, data) => { if (data.fatal) this.stop(); });
        } else {
          video.src = source;
        }
        video.play().catch(() => { /* muted autoplay may still be refused; the controls are there */ });
      },
      stop() {
        if (hls) { hls.destroy(); hls = null; }
        if (video.src) { video.removeAttribute("src"); video.load(); }
      },
    };
  }

  function obsSettings(stream, ladder, key, ownLadder, platform) {
    const top = [...ladder].sort((a, b) => b.height - a.height)[0] || SERVER_LADDER[0];
    const width = Math.round((top.height * 16) / 9 / 2) * 2;
    const cloud = stream.backend && stream.backend !== "builtin";
    const box = el("section", { class: "panel obs", id: "obs-settings", "aria-labelledby": "obs-heading" },
      el("h2", { id: "obs-heading" }, "OBS settings"),
      el("p", { class: "hint" }, "In OBS: Settings → Stream, then Settings → Output (Output Mode: Advanced)."),
      cloud ? el("p", { class: "notice", id: "obs-platform-note" },
        `This stream runs on ${platform}: the server and stream key below are ${platform}'s. OBS sends straight to ` +
        `${platform}, not to this server; ${platform} makes the qualities viewers get.`) : null,
      UI.copyRow("Service", "Custom…", "obs-service"),
      UI.copyRow("Server", stream.rtmp_url, "obs-server"),
      stream.rtmps_url ? UI.copyRow("Server (RTMPS, encrypted)", stream.rtmps_url, "obs-rtmps") : null,
      stream.srt_url ? UI.copyRow("SRT URL (hardware encoders)", stream.srt_url, "obs-srt") : null,
      key ? UI.copyRow("Stream key", key, "obs-key")
        : el("p", { class: "hint", id: "obs-key-hint" },
          "Stream key: the one you were given when the stream was created. Lost it? Press Rotate key (above) for a new one."),
      UI.copyRow("Keyframe interval", "2 s", "obs-keyframe"),
      UI.copyRow("Rate control", "CBR", "obs-rate-control"),
      UI.copyRow("Bitrate", `${Math.round((top.video_bitrate * 1.2) / 1000)} Kbps`, "obs-bitrate"),
      UI.copyRow("Output resolution", `${width}x${top.height}`, "obs-resolution"),
      UI.copyRow("Audio", "AAC, 128 Kbps, 48 kHz", "obs-audio"),
      cloud ? null : el("p", { class: "hint" }, `${ownLadder ? "Your organization's" : "The server's default"} ladder tops out at ` +
        `${top.name}, ${kbps(top.video_bitrate)}: send at least that, ` +
        "with a 2 s keyframe interval, so viewers get your picture untouched."));
    return box;
  }

  async function render(main, params) {
    const id = params[0];
    if (!id) { C.go("#/streams"); return; }
    let stream = await C.api("GET", `/api/streams/${encodeURIComponent(id)}`);
    const org = await C.api("GET", `/api/orgs/${encodeURIComponent(stream.org_id)}`).catch(() => null);
    const ownLadder = Boolean(org && org.settings && org.settings.default_ladder && org.settings.default_ladder.length);
    const serverLadder = (org && org.server_defaults && org.server_defaults.ladder) || SERVER_LADDER;
    const ladder = ownLadder ? org.settings.default_ladder : serverLadder;
    let key = UI.freshKeys.get(stream.id) || null;
    // Which platform carries it: named by the server (GET /api/backends); a badge when there is a choice to see.
    const configured = await UI.platforms().catch(() => null);
    const known = configured && configured.backends.find((b) => b.name === stream.backend);
    const platform = known ? (known.name === "builtin" ? "this server" : known.label) : stream.backend;
    const cloud = stream.backend && stream.backend !== "builtin";
    const platformBadge = cloud || (configured && configured.backends.length > 1)
      ? el("span", { class: `badge platform ${stream.backend}`, id: "stream-platform" }, `Runs on ${platform}`) : null;

    const badge = el("span", { id: "stream-status" });
    const actions = el("div", { class: "row", id: "stream-actions" });
    const keySlot = el("div", { id: "key-slot" });
    const health = el("section", { class: "panel health offline", id: "health", "aria-labelledby": "health-heading",
      "aria-live": "polite" },
    el("div", { class: "row" }, el("h2", { id: "health-heading" }, "Encoder health"), el("span", { class: "health-state" })),
    el("p", { class: "hint health-hint" }),
    el("ul", { class: "warnings", hidden: true }),
    el("dl", { class: "facts" }));
    const video = el("video", { id: "preview", muted: true, autoplay: true, playsinline: true, controls: true,
      "aria-label": "Preview of the broadcast" });
    video.muted = true;
    const player = preview(video, stream.id, cloud ? stream.playback_url : null);
    C.onLeave(() => player.stop());
    const previewNote = el("p", { class: "hint", id: "preview-note" });
    let obs = obsSettings(stream, ladder, key, ownLadder, platform);

    main.append(
      el("p", {}, el("a", { href: "#/streams" }, "← Streams")),
      el("div", { class: "row page-head" }, el("h1", { id: "stream-title" }, stream.title), platformBadge, badge),
      actions, keySlot,
      el("div", { class: "grid golive-grid" },
        health,
        el("section", { class: "panel", "aria-labelledby": "preview-heading" },
          el("h2", { id: "preview-heading" }, "Preview"), video, previewNote,
          el("p", { class: "hint" }, "Viewers watch at ", el("a", { href: stream.watch_url, target: "_blank", rel: "noopener" }, stream.watch_url)))),
      obs);
    if (window.SimulcastPanel) main.append(window.SimulcastPanel(stream.id, ladder, cloud ? known : null));

    const act = async (path, body, done) => {
      const answer = await C.attempt(() => C.api("POST", `/api/streams/${stream.id}/${path}`, body), done);
      if (answer) { stream = answer; update(); }
      return answer;
    };

    function rotateButton() {
      const button = el("button", { type: "button", id: "rotate-key" }, "Rotate key");
      const disconnect = el("label", { class: "inline", for: "rotate-disconnect" },
        el("input", { type: "checkbox", id: "rotate-disconnect" }), "Also disconnect the encoder now");
      button.addEventListener("click", () => UI.confirmInline(button,
        "Make a new stream key? The old key stops working for new connections at once; OBS needs the new one.",
        "Rotate the key", async () => {
          const answer = await act("rotate-key", { disconnect: disconnect.querySelector("input").checked }, "New key made");
          if (answer && answer.stream_key) {
            key = answer.stream_key;
            UI.freshKeys.set(stream.id, key);
            keySlot.replaceChildren(UI.keyNotice(key, answer));
            const fresh = obsSettings(stream, ladder, key, ownLadder, platform);
            obs.replaceWith(fresh);
            obs = fresh;
          }
        }, disconnect));
      return button;
    }

    function update() {
      badge.replaceChildren(UI.statusBadge(stream.status));
      const live = UI.LIVE.includes(stream.status);
      const buttons = [];
      // A cloud stream's encoder goes straight to its platform, which puts it live: no opening, no preview to put live.
      if (stream.status === "SCHEDULED" && !cloud) {
        buttons.push(el("button", { type: "button", id: "start-stream", on: { click: () => act("start", undefined, "Open for the encoder") } },
          "Open for the encoder"));
      }
      if (live && !stream.auto_publish && !cloud) {
        buttons.push(el("button", { type: "button", class: "primary", id: "go-live",
          on: { click: () => act("go-live", undefined, "You are live") } }, "Go live"));
      }
      if (live) {
        const end = el("button", { type: "button", class: "danger", id: "end-stream" }, "End broadcast");
        end.addEventListener("click", () => UI.confirmInline(end, "End the broadcast now? Viewers see the end at once; " +
          "the recording is saved.", "End now", () => act("end", undefined, "Broadcast ended")));
        buttons.push(end);
      }
      if (!["CANCELLED", "FAILED"].includes(stream.status)) buttons.push(rotateButton());
      if (["SCHEDULED", "STARTING"].includes(stream.status) && !stream.ingest) {
        const cancel = el("button", { type: "button", class: "danger", id: "cancel-stream" }, "Cancel stream");
        cancel.addEventListener("click", () => UI.confirmInline(cancel, "Cancel this stream? Its key stops working.",
          "Cancel the stream", () => act("cancel", undefined, "Cancelled")));
        buttons.push(cancel);
      }
      buttons.push(el("a", { class: "button", href: stream.watch_url, target: "_blank", rel: "noopener" }, "Open the watch page"));
      // Keep an open confirmation (the volunteer is answering it) instead of redrawing under their finger.
      if (!actions.querySelector(".confirm")) actions.replaceChildren(...buttons);
      renderHealth(health, stream, cloud ? platform : null);
      if (stream.status === "LIVE") {
        player.start();
        previewNote.textContent = stream.auto_publish ? "On air." : "Preview: viewers see it once you press Go live.";
      } else {
        if (!live) player.stop();
        previewNote.textContent = live ? "Starting: the preview appears with the first segment." : "The preview plays while the stream is live.";
      }
    }

    update();
    let polling = false;
    C.every(POLL_MS, async () => {
      if (polling) return;
      polling = true;
      try {
        stream = await C.api("GET", `/api/streams/${encodeURIComponent(id)}`);
        update();
      } catch (error) {
        if (error.status === 404) { C.toast("This stream was deleted.", "error"); C.go("#/streams"); }
      } finally {
        polling = false;
      }
    });
  }

  C.page("stream", { title: "Go-live panel", section: "streams", render });
})();

// Simulcast (go-live panel): the stream's targets (YouTube, Facebook, any RTMP/RTMPS server) with each push's
// status, polled every 2 s; add one (its key is sent once and never shown again), pause, resume or remove one.
(() => {
  const C = window.Console;
  const { el } = C;
  const KIND_NAMES = { youtube: "YouTube", facebook: "Facebook", rtmp: "RTMP server" };

  // platform: a Mux/IVS stream's back-end (GET /api/backends): it pushes the targets itself, as the encoder sends
  // the stream (no quality choice), or can't push at all (IVS), which the panel says instead of offering a form.
  window.SimulcastPanel = (streamId, ladder, platform) => {
    const base = `/api/streams/${encodeURIComponent(streamId)}/simulcast-targets`;
    const list = el("ul", { class: "simulcast-targets", id: "simulcast-list", "aria-live": "polite" });
    const kind = el("select", { id: "simulcast-kind", name: "kind" },
      ...Object.entries(KIND_NAMES).map(([value, label]) => el("option", { value }, label)));
    const name = el("input", { id: "simulcast-name", name: "name", maxlength: 100, placeholder: "optional" });
    const url = el("input", { id: "simulcast-url", name: "url", maxlength: 500, placeholder: "rtmp://… or rtmps://… (YouTube and Facebook: leave empty)" });
    const key = el("input", { id: "simulcast-key", name: "key", type: "password", required: true, autocomplete: "off" });
    const insecure = el("input", { type: "checkbox", id: "simulcast-insecure" });
    // What is pushed: the encoder's own stream, or one quality of the ladder as already encoded (no extra CPU).
    const rendition = el("select", { id: "simulcast-rendition", name: "rendition" },
      el("option", { value: "source" }, "As the encoder sends it"),
      ...[...(ladder || [])].sort((a, b) => b.height - a.height).map((rung) => el("option", { value: rung.name }, rung.name)));
    const form = el("form", { id: "simulcast-form", class: "stack" },
      el("label", { for: "simulcast-kind" }, "Where"), kind,
      el("label", { for: "simulcast-name" }, "Name"), name,
      el("label", { for: "simulcast-url" }, "Server URL"), url,
      el("label", { for: "simulcast-key" }, "Stream key"), key,
      el("label", { for: "simulcast-rendition" }, "Quality"), rendition,
      el("label", { class: "inline", for: "simulcast-insecure" }, insecure,
        "Don't check the server's certificate (RTMPS with a self-signed certificate only)"),
      el("button", { type: "submit" }, "Add target"));

    async function refresh() {
      const answer = await C.api("GET", base);
      list.replaceChildren(...(answer.targets.length ? answer.targets.map(row) :
        [el("li", { class: "hint" }, "No targets: the service goes to this server only.")]));
    }

    function row(target) {
      const toggle = el("button", { type: "button", on: { click: async () => {
        if (await C.attempt(() => C.api("PATCH", `${base}/${target.id}`, { enabled: !target.enabled }),
          target.enabled ? "Paused" : "Resumed")) refresh();
      } } }, target.enabled ? "Pause" : "Resume");
      const remove = el("button", { type: "button", class: "danger", on: { click: async () => {
        if (!window.confirm(`Remove ${target.name}? Its push stops now.`)) return;
        if (await C.attempt(() => C.api("DELETE", `${base}/${target.id}`).then(() => true), "Removed")) refresh();
      } } }, "Remove");
      return el("li", { "data-target": target.id },
        el("strong", {}, target.name), " ", el("span", { class: `badge simulcast-${target.status.toLowerCase()}` },
          target.enabled ? target.status : "PAUSED"),
        " ", el("span", { class: "hint" }, target.url),
        " ", el("span", { class: "hint simulcast-rendition" }, target.rendition === "source" ? "source" : target.rendition),
        target.detail ? el("p", { class: "hint simulcast-detail" }, target.detail) : null,
        target.error ? el("p", { class: "hint warning" }, target.error) : null, " ", toggle, " ", remove);
    }

    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = { kind: kind.value, key: key.value, tls_verify: !insecure.checked, rendition: rendition.value };
      if (name.value.trim()) body.name = name.value.trim();
      if (url.value.trim()) body.url = url.value.trim();
      if (await C.attempt(() => C.api("POST", base, body), "Target added")) {
        form.reset();
        refresh();
      }
    });
    refresh().catch(() => {});
    C.every(2000, () => refresh().catch(() => {}));
    let intro = "While the service is live, it is also sent to each target below: as it comes from the encoder, or one quality of the ladder (no extra encoding).";
    if (platform && !platform.simulcast) {
      intro = `${platform.label} can't send the service to other platforms: to reach YouTube or Facebook too, run this stream on another platform, or send to them from your encoder.`;
      form.hidden = true;
    } else if (platform) {
      intro = `${platform.label} sends the service to each target below itself, as the encoder sends it. Add targets before the service starts: ${platform.label} takes new ones only while the stream is not live.`;
      rendition.replaceChildren(el("option", { value: "source" }, "As the encoder sends it"));
    }
    return el("section", { class: "panel", id: "simulcast", "aria-labelledby": "simulcast-heading" },
      el("h2", { id: "simulcast-heading" }, "Simulcast"),
      el("p", { class: "hint", id: "simulcast-intro" }, intro),
      list, form);
  };
})();
