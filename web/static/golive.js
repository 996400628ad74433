// The "Go live from this browser" page: camera and microphone pickers, a preview, a level meter, and a WHIP
// publish (RFC 9725) to /whip/{stream} with the stream key as Bearer. The key lives only in this page's memory:
// never in the URL, never in storage. Plain script, no build step.
//
// The offer is sent once ICE gathering is complete (the server does no trickle ICE). If the connection drops
// (a phone changing networks), the page publishes again by itself: inside the server's reconnect window that
// continues the same broadcast. Stop sends DELETE, which ends the broadcast at once.
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("golive-config").textContent);
  const $ = (id) => document.getElementById(id);
  const preview = $("preview"), cameraButton = $("camera"), cameraSelect = $("camera-select");
  const micSelect = $("mic-select"), level = $("level"), keyInput = $("key"), form = $("form");
  const startButton = $("start"), stopButton = $("stop"), statusLine = $("status"), onAir = $("on-air");

  const GATHER_TIMEOUT_MS = 3000;   // send the offer with what was gathered by then
  const RETRY_MS = 2000;            // between reconnect attempts after a drop
  const MAX_RETRIES = 15;           // ~30 s of trying: the server's reconnect window is usually longer
  const VIDEO = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };

  let media = null;        // the MediaStream from getUserMedia
  let pc = null;           // the RTCPeerConnection while publishing
  let location_ = null;    // the WHIP session URL (for DELETE)
  let key = "";            // kept in memory while live, for DELETE and reconnects
  let live = false;        // the user pressed Start and not Stop
  let retries = 0;
  let wakeLock = null;
  let audioContext = null, meterSource = null;

  if (cfg.title) $("title").textContent = `Go live: ${cfg.title}`;
  function setStatus(text) { statusLine.textContent = text; }
  function setLive(on) {
    startButton.disabled = on; stopButton.disabled = !on; keyInput.disabled = on;
    onAir.hidden = !on || !pc || pc.connectionState !== "connected";
  }

  if (!window.isSecureContext || !navigator.mediaDevices) {
    setStatus("This page needs a secure address (https://, or http://localhost) to use the camera.");
    cameraButton.disabled = startButton.disabled = true;
    return;
  }

  // -- camera, microphone, level meter ------------------------------------------------------------
  async function openMedia() {
    const constraints = {
      video: cameraSelect.value ? { ...VIDEO, deviceId: { exact: cameraSelect.value } } : VIDEO,
      audio: micSelect.value ? { deviceId: { exact: micSelect.value }, echoCancellation: false }
                             : { echoCancellation: false },
    };
    const next = await navigator.mediaDevices.getUserMedia(constraints);
    const previous = media;
    media = next;
    preview.srcObject = media;
    if (pc) {  // switching devices while live: the new tracks take the old ones' places
      for (const sender of pc.getSenders()) {
        const track = sender.track && media.getTracks().find((t) => t.kind === sender.track.kind);
        if (track) await sender.replaceTrack(track);
      }
    }
    if (previous) previous.getTracks().forEach((t) => t.stop());
    await listDevices();
    watchLevel();
    cameraButton.hidden = true;
  }

  async function listDevices() {
    const devices = await navigator.mediaDevices.enumerateDevices();  // labels appear once permission is given
    fill(cameraSelect, devices.filter((d) => d.kind === "videoinput"), media.getVideoTracks()[0], "Camera");
    fill(micSelect, devices.filter((d) => d.kind === "audioinput"), media.getAudioTracks()[0], "Microphone");
  }

  function fill(select, devices, track, noun) {
    const current = track ? track.getSettings().deviceId : "";
    select.replaceChildren(...devices.map((d, i) => {
      const option = new Option(d.label || `${noun} ${i + 1}`, d.deviceId);
      option.selected = d.deviceId === current;
      return option;
    }));
    select.disabled = devices.length === 0;
  }

  function watchLevel() {
    const track = media.getAudioTracks()[0];
    if (!track) { level.value = 0; return; }
    audioContext = audioContext || new AudioContext();
    audioContext.resume();
    if (meterSource) meterSource.disconnect();
    const analyser = audioContext.createAnalyser();
    analyser.fftSize = 1024;
    meterSource = audioContext.createMediaStreamSource(new MediaStream([track]));
    meterSource.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    let shown = 0;
    const source = meterSource;
    (function draw() {
      if (source !== meterSource) return;  // a newer microphone took over
      analyser.getFloatTimeDomainData(samples);
      let peak = 0;
      for (const s of samples) peak = Math.max(peak, Math.abs(s));
      shown = Math.max(peak, shown * 0.92);  // fast rise, slow fall, like a desk meter
      level.value = Math.min(1, shown);
      requestAnimationFrame(draw);
    })();
  }

  cameraButton.addEventListener("click", () => openMedia().catch(mediaError));
  cameraSelect.addEventListener("change", () => openMedia().catch(mediaError));
  micSelect.addEventListener("change", () => openMedia().catch(mediaError));

  function mediaError(err) {
    setStatus(err && err.name === "NotAllowedError"
      ? "The browser was not allowed to use the camera or microphone: allow it in the address bar, then try again."
      : `Camera or microphone unavailable: ${err && err.message ? err.message : err}`);
  }

  // -- WHIP ------------------------------------------------------------------------------------------
  function preferCodecs(transceiver) {
    if (!transceiver.setCodecPreferences || !window.RTCRtpReceiver || !RTCRtpReceiver.getCapabilities) return;
    const codecs = RTCRtpReceiver.getCapabilities("video").codecs;
    const h264 = codecs.filter((c) => c.mimeType === "video/H264" && /packetization-mode=1/.test(c.sdpFmtpLine || ""));
    const vp8 = codecs.filter((c) => c.mimeType === "video/VP8");
    const rtx = codecs.filter((c) => c.mimeType === "video/rtx");
    if (h264.length || vp8.length) transceiver.setCodecPreferences([...h264, ...vp8, ...rtx]);
  }

  function gathered(connection) {
    if (connection.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => { if (connection.iceGatheringState === "complete") resolve(); };
      connection.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, GATHER_TIMEOUT_MS);
    });
  }

  const REFUSALS = {
    401: "The stream key is not right for this stream.",
    403: "This stream can't go live now",
    409: "This stream already has an encoder sending to it. Stop that one first.",
    503: "The server is busy with other broadcasts; try again in a minute.",
  };

  async function publish() {
    const connection = new RTCPeerConnection({ bundlePolicy: "max-bundle" });
    pc = connection;
    for (const track of media.getTracks()) {
      // A pulpit camera: when the upload or the device's CPU is short, keep the picture size (the ladder's
      // rungs come from it) and give up frame rate instead, as "detail" tells the browser to.
      if (track.kind === "video" && "contentHint" in track) track.contentHint = "detail";
      const transceiver = connection.addTransceiver(track, { direction: "sendonly", streams: [media] });
      if (track.kind === "video") preferCodecs(transceiver);
    }
    connection.addEventListener("connectionstatechange", () => stateChanged(connection));
    await connection.setLocalDescription(await connection.createOffer());
    await gathered(connection);
    const response = await fetch(cfg.whip_url, {
      method: "POST", cache: "no-store",
      headers: { "Content-Type": "application/sdp", "Authorization": `Bearer ${key}` },
      body: connection.localDescription.sdp,
    });
    const text = await response.text();
    if (response.status !== 201) {
      connection.close();
      const reason = REFUSALS[response.status] || "The server refused the broadcast";
      const error = new Error(response.status === 401 || response.status === 409 ? reason : `${reason}: ${text.trim()}`);
      error.final = response.status !== 503;
      throw error;
    }
    location_ = new URL(response.headers.get("Location"), response.url).href;
    await connection.setRemoteDescription({ type: "answer", sdp: text });
  }

  function stateChanged(connection) {
    if (connection !== pc) return;
    const state = connection.connectionState;
    if (state === "connected") {
      retries = 0;
      setStatus("You are live. Press Stop when the service is over.");
      keepScreenOn();
    } else if (state === "connecting") {
      setStatus("Connecting…");
    } else if ((state === "failed" || state === "disconnected") && live) {
      setStatus("The connection dropped; reconnecting…");
      reconnect(connection);
    }
    setLive(live);
  }

  async function reconnect(dropped) {
    if (dropped !== pc) return;
    pc = null;
    dropped.close();
    while (live && retries < MAX_RETRIES) {
      retries += 1;
      await new Promise((r) => setTimeout(r, RETRY_MS));
      if (!live) return;
      try {
        await publish();
        return;
      } catch (err) {
        setStatus(`Reconnecting (attempt ${retries})… ${err.message}`);
        if (err.final && !/already has an encoder/.test(err.message)) break;
      }
    }
    if (live) { live = false; setLive(false); setStatus("Could not reconnect. Press Start to try again."); }
  }

  async function start(event) {
    event.preventDefault();
    key = keyInput.value.trim();
    if (!key) { setStatus("Paste the stream key first."); keyInput.focus(); return; }
    try {
      if (!media) await openMedia();
    } catch (err) { mediaError(err); return; }
    live = true; retries = 0;
    setLive(true);
    setStatus("Starting…");
    try {
      await publish();
    } catch (err) {
      live = false;
      if (pc) { pc.close(); pc = null; }
      setLive(false);
      setStatus(err.message || String(err));
    }
  }

  async function stop() {
    live = false;
    stopButton.disabled = true;
    setStatus("Stopping…");
    const connection = pc, url = location_;
    pc = null; location_ = null;
    try {
      if (url) {
        const response = await fetch(url, { method: "DELETE", headers: { "Authorization": `Bearer ${key}` } });
        setStatus(response.ok || response.status === 404 ? "Stopped. The broadcast has ended."
                                                         : `Stop failed: ${(await response.text()).trim()}`);
      } else {
        setStatus("Stopped.");
      }
    } catch (err) {
      setStatus(`Stop failed: ${err.message}`);
    } finally {
      if (connection) connection.close();
      releaseScreen();
      setLive(false);
    }
  }

  async function keepScreenOn() {
    try { if (navigator.wakeLock && !wakeLock) wakeLock = await navigator.wakeLock.request("screen"); } catch (e) { /* optional */ }
  }
  function releaseScreen() { if (wakeLock) { wakeLock.release().catch(() => {}); wakeLock = null; } }

  form.addEventListener("submit", start);
  stopButton.addEventListener("click", stop);
  window.addEventListener("beforeunload", (event) => { if (live) { event.preventDefault(); event.returnValue = ""; } });
})();
