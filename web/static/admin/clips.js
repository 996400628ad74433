// Clips (#/clips): cut a moment out of the service on air (its rewind window) or out of a recording, by minutes
// and seconds from the start; each clip has a playlist (plays at once) and an MP4 cut at the exact frames to
// download. The server makes the MP4 in the background: the list looks again while one is being made.
"use strict";

(() => {
  const C = window.Console;
  const { el } = C;

  // "1:02:03", "12:30" or "95.5" as seconds; NaN when it is none of these.
  function seconds(text) {
    const parts = text.trim().split(":");
    if (!parts.length || parts.length > 3 || parts.some((p) => !/^\d+(\.\d+)?$/.test(p))) return NaN;
    return parts.reduce((total, p) => total * 60 + Number(p), 0);
  }

  function clock(s) {
    const whole = Math.floor(s);
    const h = Math.floor(whole / 3600);
    const m = Math.floor((whole % 3600) / 60);
    const rest = (s - h * 3600 - m * 60).toFixed(s % 1 ? 2 : 0).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
  }

  function statusBadge(status) {
    const kind = { READY: "ok", FAILED: "bad", PROCESSING: "warn" }[status] || "";
    return el("span", { class: `badge ${kind}` }, status === "PROCESSING" ? "Being made" : status === "READY" ? "Ready" : "Failed");
  }

  function clipRow(clip, reload) {
    const path = (url) => new URL(url, window.location.href).pathname;
    const actions = el("div", { class: "row" });
    if (clip.status === "READY") {
      actions.append(
        el("a", { class: "button", href: path(clip.mp4_url), target: "_blank", rel: "noopener" }, "Play"),
        el("a", { class: "button", href: `${path(clip.mp4_url)}?download=1` }, "Download MP4"),
        C.copyButton(() => clip.playlist_url, `Copy the playlist address of ${clip.title}`));
    }
    actions.append(el("button", { type: "button", "aria-label": `Delete clip ${clip.title}`, on: { click: async () => {
      if (!window.confirm(`Delete the clip "${clip.title}"? The recording stays.`)) return;
      const ok = await C.attempt(() => C.api("DELETE",
        `/api/streams/${encodeURIComponent(clip.stream_id)}/clips/${encodeURIComponent(clip.id)}`), "Clip deleted");
      if (ok !== undefined) reload();
    } } }, "Delete"));
    return el("li", { class: "panel", "data-clip": clip.id, "data-status": clip.status },
      el("strong", {}, clip.title), " ", statusBadge(clip.status),
      el("p", { class: "muted" }, `${clock(clip.start)} to ${clock(clip.end)} (${C.duration(clip.duration)})` +
        (clip.recording_id ? "" : " · from the live rewind window") + (clip.error ? ` · ${clip.error}` : "")),
      actions);
  }

  async function sources() {
    const org = C.org();
    const mine = (s) => !org || !s.org_id || s.org_id === org.id;
    const [live, recordings] = await Promise.all([
      C.api("GET", "/api/streams?state=live&limit=50"), C.api("GET", "/api/recordings?limit=200")]);
    return [
      ...live.streams.filter(mine).map((s) => ({ value: `live:${s.id}`, label: `On air: ${s.title}`, stream: s.id, recording: null })),
      ...recordings.recordings.filter(mine).map((r) => ({
        value: `rec:${r.id}`, label: `${r.title} · ${C.when(r.created_at, org?.timezone)} · ${C.duration(r.duration)}`,
        stream: r.stream_id, recording: r.id })),
    ];
  }

  async function render(main, params) {
    main.append(el("h1", {}, "Clips"),
      el("p", { class: "muted" }, "Cut a moment (a song, the sermon, a testimony) out of the service on air or a recording."));
    const choices = await sources();
    if (!choices.length) {
      main.append(el("p", { class: "muted" }, "Nothing to clip yet: clips come from a service on air or a recording."));
      return;
    }
    const select = el("select", { id: "clip-source" }, choices.map((c) => el("option", { value: c.value }, c.label)));
    if (params[0]) select.value = params[0];
    const title = el("input", { id: "clip-title", required: true, maxlength: 200 });
    const start = el("input", { id: "clip-start", required: true, placeholder: "12:30", inputmode: "decimal" });
    const end = el("input", { id: "clip-end", required: true, placeholder: "48:05", inputmode: "decimal" });
    const list = el("ul", { class: "clips stack", "aria-label": "Clips of this service" });
    const chosen = () => choices.find((c) => c.value === select.value) || choices[0];

    async function reload() {
      const source = chosen();
      const data = await C.attempt(() => C.api("GET", `/api/streams/${encodeURIComponent(source.stream)}/clips`));
      if (!data) return;
      const clips = data.clips.filter((c) => !source.recording || c.recording_id === source.recording || !c.recording_id);
      list.replaceChildren(...clips.map((c) => clipRow(c, reload)));
      if (!clips.length) list.append(el("li", { class: "muted" }, "No clips of this service yet."));
    }

    const form = el("form", { class: "panel stack", on: { submit: async (event) => {
      event.preventDefault();
      const from = seconds(start.value);
      const to = seconds(end.value);
      if (Number.isNaN(from) || Number.isNaN(to)) { C.toast("Write start and end as minutes:seconds, e.g. 12:30.", "error"); return; }
      const source = chosen();
      const body = { title: title.value.trim(), start: from, end: to };
      if (source.recording) body.recording_id = source.recording;
      const made = await C.attempt(() => C.api("POST", `/api/streams/${encodeURIComponent(source.stream)}/clips`, body),
        "Clip requested: it is ready in a moment.");
      if (made) { title.value = ""; await reload(); }
    } } },
    el("label", { for: "clip-source" }, "Clip from"), select,
    el("label", { for: "clip-title" }, "Title"), title,
    el("div", { class: "row" },
      el("label", { for: "clip-start", class: "inline" }, "Start (from the service's start)"), start,
      el("label", { for: "clip-end", class: "inline" }, "End"), end),
    el("p", { class: "hint" }, "The MP4 starts and ends on exactly these frames; the playlist plays at once but " +
      "may begin and end a second or two outside them."),
    el("div", { class: "row" }, el("button", { type: "submit", class: "primary" }, "Make clip")));
    select.addEventListener("change", reload);
    main.append(form, el("h2", {}, "Clips"), list);
    await reload();
    C.every(2000, () => { if (list.querySelector('[data-status="PROCESSING"]')) reload(); });
  }

  C.page("clips", { nav: "Clips", title: "Clips", render });
})();
