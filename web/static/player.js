// The built-in player: hls.js with a LIVE badge, a DVR seek bar, "Go live" and a quality menu.
// The DVR range comes from hls.js's level details, not video.seekable (Chromium reports 0..edge there).
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("player-config").textContent);
  const $ = (id) => document.getElementById(id);
  const video = $("video"), seek = $("seek"), badge = $("live-badge"), goLive = $("go-live");
  const quality = $("quality"), statusLine = $("status"), position = $("position");
  const playButton = $("play"), unmute = $("unmute");
  const segment = cfg.segment_duration || 2;
  const dvr = Math.max(0, cfg.dvr_window_seconds || 0);
  let hls = null, details = null, dragging = false, retryTimer = null;

  document.title = cfg.title + " — Watch";
  $("title").textContent = cfg.title;  // textContent: a title is never markup

  function setStatus(text) { statusLine.textContent = text || ""; }

  function clock(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    const mm = String(m).padStart(h ? 2 : 1, "0"), ss = String(s).padStart(2, "0");
    return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
  }

  // The rewindable window: first fragment's start to the live edge, from hls.js's own details.
  function windowRange() {
    if (details && details.fragments && details.fragments.length) {
      const frags = details.fragments, last = frags[frags.length - 1];
      const start = frags[0].start;
      const end = typeof details.edge === "number" && details.edge > 0 ? details.edge : last.start + last.duration;
      return { start, end };
    }
    if (video.duration && isFinite(video.duration)) return { start: 0, end: video.duration };
    return null;
  }

  function isLive() { return !!(details && details.live); }

  function atLiveEdge() {
    if (!isLive() || !hls) return false;
    const sync = hls.liveSyncPosition;
    const target = details.targetduration || segment;
    if (sync == null) return true;
    return video.currentTime >= sync - 2 * target;
  }

  function render() {
    const range = windowRange();
    if (range) {
      seek.min = String(range.start);
      seek.max = String(range.end);
      if (!dragging) seek.value = String(video.currentTime);
    }
    const live = isLive(), edge = atLiveEdge();
    badge.hidden = !(live && edge);
    goLive.hidden = !(live && !edge);
    if (live && range) {
      position.textContent = edge ? "" : "-" + clock(range.end - video.currentTime) + " behind live";
    } else if (range) {
      position.textContent = clock(video.currentTime - range.start) + " / " + clock(range.end - range.start);
    } else {
      position.textContent = "";
    }
    playButton.textContent = video.paused ? "▶" : "❚❚";
    playButton.setAttribute("aria-label", video.paused ? "Play" : "Pause");
    unmute.hidden = !video.muted;
  }

  function buildQualityMenu() {
    const levels = hls.levels.map((level, index) => ({ index, height: level.height, bitrate: level.bitrate }));
    levels.sort((a, b) => b.height - a.height || b.bitrate - a.bitrate);
    quality.replaceChildren();
    const auto = document.createElement("option");
    auto.value = "-1";
    auto.textContent = "Auto";
    quality.append(auto);
    for (const level of levels) {
      const option = document.createElement("option");
      option.value = String(level.index);
      option.textContent = level.height ? `${level.height}p` : `${Math.round(level.bitrate / 1000)} kbit/s`;
      quality.append(option);
    }
    quality.value = "-1";
  }

  function showAutoLevel() {
    if (!hls || hls.autoLevelEnabled === false || quality.value !== "-1") return;
    const level = hls.levels[hls.currentLevel];
    quality.options[0].textContent = level && level.height ? `Auto (${level.height}p)` : "Auto";
  }

  function tryPlay() {
    const attempt = video.play();
    if (attempt && attempt.catch) attempt.catch(() => setStatus("Press play to start."));
  }

  function scheduleRetry(message) {
    setStatus(message);
    if (retryTimer) return;
    retryTimer = setTimeout(() => { retryTimer = null; start(); }, 4000);
  }

  function start() {
    if (hls) { hls.destroy(); hls = null; }
    details = null;
    if (window.Hls && Hls.isSupported()) {
      hls = new Hls({
        // Seeking back through the whole DVR window must not snap to live.
        liveSyncDuration: 3 * segment,
        liveMaxLatencyDuration: Math.max(dvr + 6 * segment, 10 * segment),
        backBufferLength: 90,
        enableWorker: true,
      });
      window.player = { hls, video };
      hls.on(Hls.Events.MANIFEST_PARSED, () => { setStatus(""); buildQualityMenu(); tryPlay(); });
      hls.on(Hls.Events.LEVEL_LOADED, (_event, data) => { details = data.details; render(); });
      hls.on(Hls.Events.LEVEL_SWITCHED, () => { showAutoLevel(); render(); });
      hls.on(Hls.Events.ERROR, (_event, data) => {
        if (!data.fatal) return;
        const code = data.response && data.response.code;
        if (data.details === Hls.ErrorDetails.MANIFEST_LOAD_ERROR && code === 404) {
          scheduleRetry("Stream is offline — waiting for the broadcast to start…");
        } else if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
          hls.recoverMediaError();
        } else {
          scheduleRetry("Connection lost — reconnecting…");
        }
      });
      hls.loadSource(cfg.playback_url);
      hls.attachMedia(video);
    } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
      window.player = { hls: null, video };
      video.src = cfg.playback_url;  // Safari on iPhone: native HLS
      video.addEventListener("error", () => scheduleRetry("Stream is offline — waiting for the broadcast to start…"), { once: true });
      tryPlay();
    } else {
      setStatus("This browser cannot play this stream.");
    }
  }

  seek.addEventListener("input", () => {
    dragging = true;
    const range = windowRange();
    if (range && isLive()) position.textContent = "-" + clock(range.end - Number(seek.value)) + " behind live";
  });
  seek.addEventListener("change", () => {
    dragging = false;
    video.currentTime = Number(seek.value);
    render();
  });
  goLive.addEventListener("click", () => {
    if (hls && hls.liveSyncPosition != null) video.currentTime = hls.liveSyncPosition;
    tryPlay();
    render();
  });
  quality.addEventListener("change", () => {
    if (!hls) return;
    hls.currentLevel = Number(quality.value);
    quality.options[0].textContent = "Auto";
    showAutoLevel();
  });
  playButton.addEventListener("click", () => { if (video.paused) tryPlay(); else video.pause(); });
  unmute.addEventListener("click", () => { video.muted = false; render(); });
  $("fullscreen").addEventListener("click", () => {
    const stage = video.parentElement;
    if (document.fullscreenElement) document.exitFullscreen();
    else if (stage.requestFullscreen) stage.requestFullscreen();
  });
  for (const name of ["timeupdate", "play", "pause", "volumechange", "seeked"]) video.addEventListener(name, render);
  video.addEventListener("playing", () => setStatus(""));
  setInterval(render, 500);
  if (cfg.locked) {
    // Private stream: only a password (exchanged for a playback token) or a token link opens it.
    const form = $("unlock");
    if (cfg.has_password) {
      form.hidden = false;
      form.addEventListener("submit", async (event) => {
        event.preventDefault();
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
      });
    } else {
      setStatus("This stream is private. Open it with the link you were given.");
    }
  } else {
    start();
  }
})();
