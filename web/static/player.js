// The built-in player: hls.js (MSE) with a LIVE badge / "Go live", a DVR seek bar and a quality menu;
// native HLS only where MSE is missing (iPhone Safari). Plain script, no build step.
//
// The DVR range comes from hls.js's level details (first fragment's start .. live edge), never from
// video.seekable: Chromium reports 0..edge there, whatever the playlist covers.
//
// Latency: hls.js decides how far behind the edge to play from the playlist itself (PART-HOLD-BACK on a
// Low-Latency HLS stream, HOLD-BACK, else three target durations), so the config below sets no
// liveSyncDuration(Count): either would override the playlist. Playback is never sped up to catch up; the
// player only moves onto the live point (inside the buffer) just after start and "Go live" (settleOnLivePoint).
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("player-config").textContent);
  const $ = (id) => document.getElementById(id);
  const video = $("video"), seek = $("seek"), badge = $("live-badge"), goLive = $("go-live");
  const quality = $("quality"), statusLine = $("status"), position = $("position"), liveState = $("live-state");
  const playButton = $("play"), muteButton = $("mute"), unmute = $("unmute"), fullscreenButton = $("fullscreen");

  const DVR_SECONDS = Math.max(0, Number(cfg.dvr_window_seconds) || 0);
  const SEGMENT_SECONDS = Number(cfg.segment_duration) || 2;  // only a fallback: the playlist's target wins
  const LOW_LATENCY = !!cfg.low_latency;  // the stream publishes LL-HLS parts (hls.js also reads it from the playlist)
  const HOLD_BACK_COUNT = 3;  // RFC 8216: start no closer than three target durations from the end
  const WINDOW_MARGIN = 3;    // target durations of slack past the DVR window before hls.js snaps to live
  const EDGE_TOLERANCE = 0.5; // target durations behind hls.js's live point that still count as "live" ...
  const MIN_EDGE_TOLERANCE = 1;  // ... but at least this many seconds
  const SETTLE_SLACK = 0.25;     // seconds behind the live point worth a jump at start / on "Go live"
  const SETTLE_FORWARD = 0.5;    // seconds of buffered media that must remain ahead after that jump
  const SETTLE_WINDOW_MS = 10000;  // how long after start / "Go live" such jumps may happen
  const EDGE_SAMPLES = 8;        // playlist advances the live-edge estimate looks back over
  const RETRY_MS = 4000;
  const OFFLINE = "Stream is offline — waiting for the broadcast to start…";

  // Icons as inline SVG (no icon font, no emoji: neither is on every congregation's phone).
  const ICONS = {
    play: "M8 5v14l11-7z",
    pause: "M6 5h4v14H6zm8 0h4v14h-4z",
    sound: "M3 9v6h4l5 5V4L7 9H3zm13.5 3A4.5 4.5 0 0 0 14 8v8a4.5 4.5 0 0 0 2.5-4zM14 3.2v2.1a7 7 0 0 1 0 " +
           "13.6v2.1a9 9 0 0 0 0-17.8z",
    muted: "M16.5 12A4.5 4.5 0 0 0 14 8v2.2l2.45 2.45c.03-.2.05-.41.05-.65zm2.5 0c0 .94-.2 1.82-.54 2.64l1.51 " +
           "1.51A8.8 8.8 0 0 0 21 12a9 9 0 0 0-7-8.77v2.06A7 7 0 0 1 19 12zM4.27 3 3 4.27 7.73 9H3v6h4l5 5v-6.73l4.25 " +
           "4.25c-.67.52-1.42.93-2.25 1.18v2.06a9 9 0 0 0 3.69-1.81L19.73 21 21 19.73l-9-9L4.27 3zM12 4 9.91 6.09 " +
           "12 8.18V4z",
    fullscreen: "M7 14H5v5h5v-2H7v-3zm-2-4h2V7h3V5H5v5zm12 7h-3v2h5v-5h-2v3zM14 5v2h3v3h2V5h-5z",
    exitFullscreen: "M5 16h3v3h2v-5H5v2zm3-8H5v2h5V5H8v3zm6 11h2v-3h3v-2h-5v5zm2-11V5h-2v5h5V8h-3z",
  };

  function setIcon(element, name) {
    if (element.dataset.icon === name) return;
    element.dataset.icon = name;
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
    path.setAttribute("d", ICONS[name]);
    svg.append(path);
    element.replaceChildren(svg);
  }

  let hls = null, lastDetails = null, dragging = false, retryTimer = null, lastMediaRecovery = 0;
  let mutedByBrowser = false;  // autoplay with sound was refused: offer "Tap to unmute"
  let settleUntil = 0;  // performance.now() until which settleOnLivePoint may still move the playhead
  let playedOnce = false;  // this hls.js instance has started playing (its start is settled from then on)
  let wasLive = null;   // last state announced to screen readers (true: at live, false: behind)
  let edgeOffsets = [];  // per playlist advance: its edge (media seconds) minus when it arrived (wall seconds)

  document.title = cfg.title ? cfg.title + " — Watch" : "Watch";
  $("title").textContent = cfg.title || "";  // textContent: a title is never markup
  const brand = cfg.branding || {};
  if (/^#[0-9A-Fa-f]{6}$/.test(brand.accent_color || "")) document.documentElement.style.setProperty("--accent", brand.accent_color);
  if (brand.church_name || brand.logo_url) {
    const church = document.createElement("p"); church.className = "church";
    if (brand.logo_url) { const logo = document.createElement("img"); logo.src = brand.logo_url; logo.alt = ""; logo.className = "church-logo"; church.append(logo); }
    church.append(document.createTextNode(brand.church_name || ""));
    $("title").before(church);
  }
  if (brand.pre_stream_image && !["LIVE", "ENDING", "ENDED"].includes(cfg.status)) video.poster = brand.pre_stream_image;

  function setStatus(text) { statusLine.textContent = text || ""; }

  function clock(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    const mm = String(m).padStart(2, "0"), ss = String(s).padStart(2, "0");
    return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
  }

  // A distance from live: "0:42", "12:05", "1:02:03" (minutes unpadded).
  function shortClock(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    const ss = String(s).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
  }

  // ---- where we are -------------------------------------------------------------------------------

  function levelDetails() { return (hls && hls.latestLevelDetails) || lastDetails; }

  function targetDuration() {
    const d = levelDetails();
    return (d && d.targetduration) || SEGMENT_SECONDS;
  }

  // The rewindable window: the first fragment's start to the live edge, from hls.js's own details.
  function windowRange() {
    const d = levelDetails();
    if (d && d.fragments && d.fragments.length) {
      const frags = d.fragments, last = frags[frags.length - 1];
      const start = frags[0].start;
      const end = typeof d.edge === "number" && d.edge > start ? d.edge : last.start + last.duration;
      return { start, end };
    }
    if (!hls && video.seekable.length) {  // native HLS (Safari reports the real DVR window here)
      return { start: video.seekable.start(0), end: video.seekable.end(video.seekable.length - 1) };
    }
    return null;
  }

  function isLive() {
    const d = levelDetails();
    if (d) return !!d.live;
    return !hls && video.duration === Infinity;
  }

  // hls.js estimates the live edge as the newest playlist's end plus the time since that playlist arrived. A
  // playlist polled some time after the server updated it (standard HLS reloads about once per target
  // duration) makes that estimate late by up to a target duration. Every arrival is such a lower bound of the
  // real edge; when polls fall at different moments (a reload that found nothing new retries sooner) the best
  // of the last few is the closest. (LL-HLS blocking reloads arrive the moment a part exists: no difference.)
  function noteEdge(d) {
    // From the first frame on: by then hls.js has aligned the playlist to the media's own timestamps.
    if (!playedOnce || !d || !d.live || !d.advanced || !d.advancedDateTime) return;
    edgeOffsets.push(d.edge - d.advancedDateTime / 1000);
    if (edgeOffsets.length > EDGE_SAMPLES) edgeOffsets.shift();
  }

  // The live point, where "Go live" takes the viewer: the live edge minus hls.js's target latency (the
  // playlist's hold-back), never behind hls.js's own liveSyncPosition, nor past its limit (the newest
  // segment's start, or part's with LL-HLS). Native HLS: three target durations behind the end of seekable.
  function liveSyncPosition() {
    if (!hls) {
      const range = windowRange();
      return range ? Math.max(range.start, range.end - HOLD_BACK_COUNT * targetDuration()) : null;
    }
    const sync = hls.liveSyncPosition, d = levelDetails(), target = targetDuration();
    // A playlist that stopped advancing (encoder gone) leaves the edge unknown: hls.js's estimate handles that.
    if (sync == null || !d || !edgeOffsets.length || d.age > HOLD_BACK_COUNT * target) return sync;
    const edge = Math.min(Date.now() / 1000 + Math.max(...edgeOffsets), d.edge + d.age + target);
    const limit = d.edge - ((hls.config.lowLatencyMode && d.partTarget) || target);
    return Math.max(sync, Math.min(edge - hls.targetLatency, limit));
  }

  // Seconds behind the live point (0 at live; grows while paused), or null when unknown.
  function behindLive() {
    if (!isLive()) return null;
    const sync = liveSyncPosition();
    return sync == null ? null : Math.max(0, sync - video.currentTime);
  }

  function edgeTolerance() {
    return Math.max(MIN_EDGE_TOLERANCE, EDGE_TOLERANCE * targetDuration());
  }

  function atLiveEdge() {
    const behind = behindLive();
    return isLive() && (behind == null || behind <= edgeTolerance());
  }

  // hls.js jumps back to live once the playhead is more than liveMaxLatencyDuration behind the edge; keep that
  // bound just past the rewindable window (the DVR window, or the playlist if it is longer), so scrubbing
  // anywhere in the bar stays put and only falling off the window snaps to live. Set on hls.config after
  // construction: in the constructor hls.js would insist on a liveSyncDuration too, which overrides the
  // playlist's hold-back.
  function fitLatencyToWindow(d) {
    if (!hls) return;
    const target = (d && d.targetduration) || SEGMENT_SECONDS;
    const windowSeconds = Math.max(DVR_SECONDS, (d && d.totalduration) || 0);
    hls.config.liveMaxLatencyDuration = windowSeconds + (HOLD_BACK_COUNT + WINDOW_MARGIN) * target;
  }

  // hls.js picks its start position when the playlist arrives and plays from there at rate 1, so the time it
  // then takes to load and append (and a busy page) stays as extra latency for good. Shortly after start and
  // after "Go live", move the playhead forward onto the live point, only inside what is already
  // buffered (no new download, no stall), keeping SETTLE_FORWARD seconds ahead. hls.js's estimate of the
  // edge firms up over the first playlist reloads, so this keeps watching for SETTLE_WINDOW_MS (forward
  // only, and only for more than SETTLE_SLACK: a handful of jumps at most, all in the first seconds).
  function settleOnLivePoint() {
    if (!settleUntil || !hls || video.paused || video.seeking || video.readyState < 3) return;
    if (performance.now() > settleUntil || !isLive()) { settleUntil = 0; return; }
    const sync = liveSyncPosition();
    if (sync == null) return;
    const t = video.currentTime, buffered = video.buffered;
    if (sync - t <= SETTLE_SLACK) return;  // there (or ahead: never move back)
    for (let i = 0; i < buffered.length; i++) {
      if (buffered.start(i) > t + 0.1 || buffered.end(i) < t) continue;
      const target = Math.min(sync, buffered.end(i) - SETTLE_FORWARD);
      if (target - t > SETTLE_SLACK) video.currentTime = target;  // else wait for more to be buffered
      return;
    }
  }

  // ---- drawing --------------------------------------------------------------------------------------

  function render() {
    const range = windowRange();
    const live = isLive();
    // On a live stream the bar ends at the live point, so "at live" is the thumb at the right end.
    const sync = live && range ? liveSyncPosition() : null;
    const end = sync != null && sync > range.start ? Math.min(range.end, sync) : range && range.end;
    seek.disabled = !range;
    if (range) {
      seek.min = String(range.start);
      seek.max = String(end);
      if (!dragging) seek.value = String(video.currentTime);
    }
    // Dragging shows where the thumb would land; otherwise how far the playhead is behind the live point.
    const behind = !live || !range ? null
      : dragging ? Math.max(0, end - Number(seek.value)) : behindLive();
    const edge = live && (behind == null || behind <= edgeTolerance());
    badge.hidden = !(live && edge);
    goLive.hidden = !(live && !edge);
    let time = "", words = "";
    if (live && !edge) {
      time = "\u2212" + shortClock(behind);  // "−0:42": a real minus sign
      words = " behind live";  // visually hidden on narrow screens by the stylesheet
    } else if (!live && range) {
      time = clock(video.currentTime - range.start) + " / " + clock(range.end - range.start);
    }
    if (position.dataset.text !== time + words) {
      position.dataset.text = time + words;
      const wordsSpan = document.createElement("span");
      wordsSpan.className = "position-words";
      wordsSpan.textContent = words;
      position.replaceChildren(time, wordsSpan);
    }
    seek.setAttribute("aria-valuetext", time ? time + words : (live ? "Live" : ""));
    if (live && wasLive !== edge && video.currentTime > 0) {
      wasLive = edge;  // one polite announcement per change, never per tick
      liveState.textContent = edge ? "Playing live" : "Behind live";
    }
    setIcon(playButton, video.paused ? "play" : "pause");
    playButton.setAttribute("aria-label", video.paused ? "Play" : "Pause");
    setIcon(muteButton, video.muted ? "muted" : "sound");
    muteButton.setAttribute("aria-label", video.muted ? "Unmute" : "Mute");
    unmute.hidden = !(mutedByBrowser && video.muted);
    setIcon(fullscreenButton, document.fullscreenElement ? "exitFullscreen" : "fullscreen");
    fullscreenButton.setAttribute("aria-label", document.fullscreenElement ? "Exit full screen" : "Full screen");
  }

  function buildQualityMenu() {
    const levels = hls.levels.map((level, index) => ({ index, height: level.height, bitrate: level.bitrate }));
    levels.sort((a, b) => b.height - a.height || b.bitrate - a.bitrate);
    const heights = levels.map((l) => l.height);
    quality.replaceChildren(new Option("Auto", "-1"));
    for (const level of levels) {
      const kbit = `${Math.round(level.bitrate / 1000)} kbit/s`;
      let label = level.height ? `${level.height}p` : kbit;
      if (level.height && heights.indexOf(level.height) !== heights.lastIndexOf(level.height)) label += ` (${kbit})`;
      quality.append(new Option(label, String(level.index)));
    }
    quality.value = String(hls.manualLevel != null ? hls.manualLevel : -1);
    quality.disabled = levels.length < 2;
  }

  // In Auto, say which rendition hls.js picked: "Auto (720p)".
  function showAutoLevel() {
    if (!hls || quality.value !== "-1" || !quality.options.length) return;
    const level = hls.levels[hls.currentLevel];
    quality.options[0].textContent = level && level.height ? `Auto (${level.height}p)` : "Auto";
  }

  // ---- playback -------------------------------------------------------------------------------------

  // Try with sound; where the browser forbids that without a tap, play muted and offer "Tap to unmute".
  async function tryPlay() {
    try {
      await video.play();
    } catch (err) {
      if (!err || err.name !== "NotAllowedError") return;  // AbortError: a newer load or seek took over
      video.muted = true;
      mutedByBrowser = true;
      try {
        await video.play();
      } catch (_) {
        setStatus("Press ▶ to start.");
      }
    }
    render();
  }

  function scheduleRetry(message) {
    setStatus(message);
    if (retryTimer) return;
    retryTimer = setTimeout(() => { retryTimer = null; start(); }, RETRY_MS);
  }

  function onFatalError(data) {
    const code = data.response && data.response.code;
    const playlistMissing = (data.details === Hls.ErrorDetails.MANIFEST_LOAD_ERROR ||
                             data.details === Hls.ErrorDetails.LEVEL_LOAD_ERROR) && code === 404;
    if (playlistMissing) {
      scheduleRetry(OFFLINE);
    } else if (code === 401 || code === 403) {
      const refused = hls;
      setTimeout(() => { refused.destroy(); if (hls === refused) hls = null; }, 0);  // not from inside hls.js's own error event
      setStatus("This link has expired or is not allowed here. Reload the page to try again.");
    } else if (data.type === Hls.ErrorTypes.MEDIA_ERROR && performance.now() - lastMediaRecovery > 10000) {
      lastMediaRecovery = performance.now();
      hls.recoverMediaError();
    } else {
      scheduleRetry("Connection lost — reconnecting…");
    }
  }

  function start() {
    if (hls) { hls.destroy(); hls = null; }
    lastDetails = null;
    render();
    if (cfg.mp4) {
      // A recording kept as its MP4 only (retention dropped its HLS segments): the browser plays it natively.
      window.player = { hls: null, video, mediaTime };
      quality.disabled = true;
      video.addEventListener("error", () => setStatus("This recording is no longer available."), { once: true });
      video.src = cfg.playback_url;
      tryPlay();
    } else if (window.Hls && Hls.isSupported()) {
      hls = new Hls({
        // No liveSyncDuration(Count) here: hls.js then plays at the playlist's PART-HOLD-BACK (LL-HLS, with
        // lowLatencyMode) or HOLD-BACK, else at three target durations, which is RFC 8216's hold-back.
        lowLatencyMode: true,        // parts, preload hints and blocking reloads when the playlist has them
        maxLiveSyncPlaybackRate: 1,  // never speed up speech to catch up
        // Wait for a hold-back's worth of segments on a broadcast that has just begun (the page is often open
        // before the service starts); hls.js would otherwise start at the first segment, closer than the spec
        // allows, and stall. An LL stream's part hold-back fits in fewer.
        initialLiveManifestSize: LOW_LATENCY ? 2 : HOLD_BACK_COUNT,
        backBufferLength: 90,
        enableWorker: true,
      });
      fitLatencyToWindow(null);
      playedOnce = false;
      edgeOffsets = [];
      // For tests: hls.js itself, the video, and whether the start (not played yet, or settling onto the live
      // point) or a "Go live" is still under way.
      window.player = { hls, video, mediaTime, settling: () => !playedOnce || settleUntil > performance.now() };
      hls.on(Hls.Events.MANIFEST_PARSED, () => { setStatus(""); buildQualityMenu(); tryPlay(); });
      hls.on(Hls.Events.LEVEL_LOADED, (_event, data) => {
        lastDetails = data.details;
        fitLatencyToWindow(data.details);
        // A playlist that already drops old segments is as long as it gets: start with what it lists.
        if (data.details.live && data.details.startSN > 0) hls.config.initialLiveManifestSize = 1;
        render();
      });
      hls.on(Hls.Events.LEVEL_UPDATED, (_event, data) => noteEdge(data.details));
      hls.on(Hls.Events.LEVEL_SWITCHED, () => { showAutoLevel(); render(); });
      hls.on(Hls.Events.ERROR, (_event, data) => { if (data.fatal) onFatalError(data); });
      hls.loadSource(cfg.playback_url);
      hls.attachMedia(video);
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      window.player = { hls: null, video, mediaTime };
      quality.disabled = true;  // Safari picks the rendition itself
      video.addEventListener("error", () => scheduleRetry(OFFLINE), { once: true });
      video.src = cfg.playback_url;
      tryPlay();
    } else {
      setStatus("This browser cannot play this stream. Please try a current Chrome, Firefox, Edge or Safari.");
    }
  }

  // Seek inside the window; on a live stream never past hls.js's sync point (the newest seconds are still
  // being published) nor onto the very first fragment (it may slide out before it loads).
  function seekTo(seconds) {
    const range = windowRange();
    if (!range) return;
    let target = Math.min(Math.max(seconds, range.start), range.end);
    if (isLive()) {
      const sync = liveSyncPosition();
      if (sync != null && target > sync) target = sync;
      target = Math.max(target, range.start + Math.min(targetDuration(), (range.end - range.start) / 4));
    }
    video.currentTime = target;
  }

  // ---- storyboard previews (recordings and the live DVR window) -------------------------------------
  // packager/thumbnails.py writes a sprite sheet and a WebVTT storyboard whose cues say, per stretch of media
  // time, which tile of the sheet shows it ("sprite.jpg#xywh=x,y,w,h"). Hovering or dragging the bar shows that
  // tile with the time under it; keyboard users keep the bar's own time label (aria-valuetext).
  // While live, /hls/ID/storyboard.vtt (packager/live_storyboard.py) dates its cues by EXT-X-PROGRAM-DATE-TIME,
  // counted from the origin in its header: a bar position maps to that date through hls.js's fragment under it.

  // Media time (seconds from the recording's start) at the playhead: what the storyboard and the chat replay use.
  function mediaTime() {
    const range = windowRange();
    return Math.max(0, video.currentTime - (range ? range.start : 0));
  }

  function vttSeconds(stamp) {
    const parts = stamp.split(":").map(Number);
    return parts.reduce((total, part) => total * 60 + part, 0);
  }

  // Cues of a storyboard: [{start, end, url, x, y, w, h}], the image URL resolved against the VTT's own (and
  // given the VTT's token, so a private recording's sheet loads too). cues.origin: the live storyboard's origin
  // (ms since the epoch), else null.
  function parseStoryboard(text, base) {
    const cues = [];
    const origin = /^X-PROGRAM-DATE-TIME-ORIGIN=(\S+)\s*$/m.exec(text.replace(/\r/g, ""));
    cues.origin = origin && Number.isFinite(Date.parse(origin[1])) ? Date.parse(origin[1]) : null;
    const baseUrl = new URL(base, location.href);
    const lines = text.replace(/\r/g, "").split("\n");
    for (let i = 0; i < lines.length - 1; i++) {
      const m = /^\s*(\S+)\s+-->\s+(\S+)/.exec(lines[i]);
      const target = /^(.*)#xywh=(\d+),(\d+),(\d+),(\d+)\s*$/.exec(lines[i + 1] || "");
      if (!m || !target) continue;
      const url = new URL(target[1], baseUrl);
      const token = baseUrl.searchParams.get("token");
      if (token && !url.searchParams.has("token")) url.searchParams.set("token", token);
      cues.push({ start: vttSeconds(m[1]), end: vttSeconds(m[2]), url: url.href,
                  x: +target[2], y: +target[3], w: +target[4], h: +target[5] });
    }
    return cues;
  }

  let storyboard = [];
  let storyboardOrigin = null;  // a live storyboard: cue times are seconds after this date (ms)
  const preloaded = new Set();
  const LIVE_STORYBOARD_MS = 5000;  // the live storyboard grows (and drops tiles) as the broadcast goes on
  const seekRow = seek.parentElement;
  const preview = document.createElement("div");
  preview.className = "storyboard";
  preview.setAttribute("aria-hidden", "true");  // the time is already the bar's aria-valuetext
  preview.hidden = true;
  const previewImage = document.createElement("div");
  previewImage.className = "storyboard-image";
  const previewTime = document.createElement("div");
  previewTime.className = "storyboard-time";
  preview.append(previewImage, previewTime);
  // Styled here: the tooltip belongs to this script (no stylesheet of its own to keep in step).
  Object.assign(preview.style, { position: "absolute", bottom: "100%", zIndex: "3", pointerEvents: "none",
    background: "#000", border: "1px solid rgba(255,255,255,.6)", borderRadius: "4px", padding: "0",
    boxShadow: "0 2px 8px rgba(0,0,0,.6)", transform: "translateX(-50%)" });
  Object.assign(previewImage.style, { backgroundRepeat: "no-repeat", display: "block" });
  Object.assign(previewTime.style, { textAlign: "center", font: "12px/1.6 system-ui, sans-serif", color: "#fff",
    fontVariantNumeric: "tabular-nums" });
  seekRow.style.position = "relative";
  seekRow.append(preview);

  async function loadStoryboard() {
    if (!cfg.storyboard_url) return;
    try {
      const reply = await fetch(cfg.storyboard_url);
      if (!reply.ok) return;  // not written (yet): the bar works without pictures
      useStoryboard(parseStoryboard(await reply.text(), cfg.storyboard_url));
    } catch (_) { /* no previews */ }
  }

  function useStoryboard(cues) {
    storyboard = cues;
    storyboardOrigin = cues.origin;
    preview.dataset.cues = String(storyboard.length);
    for (const cue of storyboard) {
      if (!preloaded.has(cue.url)) { preloaded.add(cue.url); new Image().src = cue.url; }  // ready before the hover
    }
  }

  // While a stream with DVR is live: its storyboard next to its master playlist (same token), reloaded.
  async function loadLiveStoryboard() {
    if (cfg.storyboard_url || cfg.mp4 || !DVR_SECONDS || !cfg.playback_url || !isLive()) return;
    const url = new URL(cfg.playback_url, location.href);
    url.pathname = url.pathname.replace(/master\.m3u8$/, "storyboard.vtt");
    try {
      const reply = await fetch(url.href, { cache: "no-cache" });
      if (reply.ok) useStoryboard(parseStoryboard(await reply.text(), url.href));
    } catch (_) { /* no previews this time */ }
  }

  // Seconds on a live storyboard's timeline at bar value `value`: the date of the fragment under it, plus how far
  // into it, minus the storyboard's origin. null where the playlist has no dates.
  function liveStoryboardSeconds(value) {
    const d = levelDetails();
    const frags = (d && d.fragments) || [];
    if (!frags.length || storyboardOrigin == null) return null;
    let frag = frags[0];
    for (const f of frags) { if (f.start <= value) frag = f; else break; }
    if (frag.programDateTime == null) return null;
    return (frag.programDateTime + (value - frag.start) * 1000 - storyboardOrigin) / 1000;
  }

  function cueAt(seconds) {
    for (const cue of storyboard) if (seconds >= cue.start && seconds < cue.end) return cue;
    const last = storyboard[storyboard.length - 1];
    return last && seconds >= last.end ? last : null;
  }

  // Show the tile for bar value `value` at horizontal pixel `left` inside the seek row.
  function showPreview(value, left) {
    const range = windowRange();
    const dated = storyboardOrigin != null;  // the live storyboard (also once the broadcast has just ended)
    if (!storyboard.length || !range || (isLive() && !dated)) { preview.hidden = true; return; }
    const seconds = dated ? liveStoryboardSeconds(value) : Math.max(0, value - range.start);
    const cue = seconds == null ? null : cueAt(seconds);
    if (!cue) { preview.hidden = true; return; }
    Object.assign(previewImage.style, { width: `${cue.w}px`, height: `${cue.h}px`,
      backgroundImage: `url("${cue.url.replace(/"/g, "%22")}")`, backgroundPosition: `-${cue.x}px -${cue.y}px` });
    // Live: how far behind the live point, as the bar's own label says it; a recording: the time from its start.
    previewTime.textContent = isLive() ? "\u2212" + shortClock(Math.max(0, Number(seek.max) - value)) : clock(seconds);
    const rowWidth = seekRow.clientWidth;
    const half = cue.w / 2 + 1;
    preview.style.left = `${Math.min(Math.max(left, half), Math.max(half, rowWidth - half))}px`;
    preview.dataset.start = String(cue.start);
    preview.hidden = false;
  }

  // The bar value under the pointer, the bar's width mapped onto its range (dragging moves the pointer too, so
  // this also follows a drag; keys move the thumb without a preview).
  function valueAtPointer(event) {
    const rect = seek.getBoundingClientRect();
    const fraction = rect.width ? Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width)) : 0;
    const min = Number(seek.min), max = Number(seek.max);
    return { value: min + fraction * (max - min), left: event.clientX - seekRow.getBoundingClientRect().left };
  }

  seek.addEventListener("pointermove", (event) => {
    if (seek.disabled) return;
    const { value, left } = valueAtPointer(event);
    showPreview(value, left);
  });
  seek.addEventListener("pointerleave", () => { if (!dragging) preview.hidden = true; });
  seek.addEventListener("change", () => { preview.hidden = true; });

  // ---- wiring ---------------------------------------------------------------------------------------

  seek.addEventListener("input", () => { dragging = true; render(); });
  seek.addEventListener("change", () => {
    dragging = false;
    settleUntil = 0;  // the viewer chose a place: stay there
    seekTo(Number(seek.value));
    render();
  });
  goLive.addEventListener("click", () => {
    const sync = liveSyncPosition();
    if (sync != null) video.currentTime = sync;
    settleUntil = performance.now() + SETTLE_WINDOW_MS;  // land on the live point once it has loaded again
    if (video.paused) tryPlay();
    render();
  });
  quality.addEventListener("change", () => {
    if (!hls) return;
    quality.options[0].textContent = "Auto";
    hls.currentLevel = Number(quality.value);  // -1: back to automatic
    showAutoLevel();
  });
  playButton.addEventListener("click", () => { if (video.paused) tryPlay(); else video.pause(); });
  muteButton.addEventListener("click", () => { video.muted = !video.muted; render(); });
  unmute.addEventListener("click", () => { video.muted = false; if (video.paused) tryPlay(); render(); });
  video.addEventListener("volumechange", () => { if (!video.muted) mutedByBrowser = false; });
  fullscreenButton.addEventListener("click", () => {
    const stage = video.parentElement;
    if (document.fullscreenElement) document.exitFullscreen();
    else if (stage.requestFullscreen) stage.requestFullscreen();
    else if (video.webkitEnterFullscreen) video.webkitEnterFullscreen();  // iPhone
  });
  for (const name of ["timeupdate", "play", "pause", "volumechange", "seeked", "durationchange"]) {
    video.addEventListener(name, render);
  }
  video.addEventListener("timeupdate", settleOnLivePoint);
  video.addEventListener("pause", () => { settleUntil = 0; });  // paused on purpose: resume where it was
  document.addEventListener("fullscreenchange", render);
  video.addEventListener("playing", () => {
    setStatus("");
    if (hls && !playedOnce) { playedOnce = true; settleUntil = performance.now() + SETTLE_WINDOW_MS; }
  });
  video.addEventListener("ended", () => setStatus("The broadcast has ended. Thank you for watching."));
  setIcon(unmute.querySelector(".unmute-icon"), "muted");
  setInterval(render, 500);

  if (cfg.locked) {
    // Private stream: only a password (exchanged for a playback token) or a token link opens it.
    const form = $("unlock");
    if (cfg.has_password) {
      form.hidden = false;
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
        try {
          const reply = await fetch(`/watch/${encodeURIComponent(cfg.stream_id)}/unlock`, {
            method: "POST", headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ password: $("password").value }),
          });
          if (reply.ok) {
            const { token } = await reply.json();
            location.search = "?token=" + encodeURIComponent(token);
          } else {
            setStatus("That password is not right.");
          }
        } catch (_) {
          setStatus("Could not reach the server. Please try again.");
        }
      });
    } else {
      setStatus("This stream is private. Open it with the link you were given.");
    }
  } else {
    start();
    loadStoryboard();
    setInterval(loadLiveStoryboard, LIVE_STORYBOARD_MS);
  }
})();
