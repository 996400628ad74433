"""WHIP ingest end to end: aiortc as the WHIP client (a 320x180 picture carrying its frame number, and a sine),
through the running server's ladder, read back as a player would (PyAV)."""
from __future__ import annotations

import asyncio
import fractions
import io
import math
import os
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import av
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack, VideoStreamTrack

from bench import frame_code
from ingest.whip import EncodedFrame, OfferError, Timeline, check_offer, is_keyframe
from tests.hls_reader import decode_segment, parse_master, parse_media
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.test_broadcast import fetch_text, stream_status, wait_for, wait_recording

WIDTH, HEIGHT = 320, 180
SAMPLE_RATE, AUDIO_SAMPLES = 48000, 960  # 20 ms Opus frames


class NumberedVideo(VideoStreamTrack):
    """30 fps frames, each with its frame number drawn (bench/frame_code) over a moving gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        yuv = np.full((HEIGHT * 3 // 2, WIDTH), 128, np.uint8)
        yuv[:HEIGHT] = ((np.arange(WIDTH)[None, :] + self.sent * 4) % 200 + 28).astype(np.uint8)
        frame_code.draw(yuv[:HEIGHT], self.sent)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts, frame.time_base = pts, time_base
        self.sent += 1
        return frame


class Sine(MediaStreamTrack):
    """A 440 Hz tone, 48 kHz mono, paced in real time."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        wait = self._start + self._pts / SAMPLE_RATE - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (self._pts + np.arange(AUDIO_SAMPLES)) / SAMPLE_RATE
        samples = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, self._pts, fractions.Fraction(1, SAMPLE_RATE)
        self._pts += AUDIO_SAMPLES
        return frame


# -- sans-IO parts -----------------------------------------------------------------------------------
def encoded_packets(codec: str, count: int = 12) -> list[av.Packet]:
    """Real encoder output (PyAV): a keyframe every 5 frames, Annex B for H.264."""
    context = av.CodecContext.create(codec, "w")
    context.width, context.height, context.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    context.time_base = fractions.Fraction(1, 30)
    context.gop_size = 5
    context.options = {"x264-params": "keyint=5:min-keyint=5:scenecut=0:bframes=0"} if codec == "libx264" else {}
    packets: list[av.Packet] = []
    for i in range(count):
        yuv = np.full((HEIGHT * 3 // 2, WIDTH), 128, np.uint8)
        yuv[:HEIGHT] = (np.arange(WIDTH)[None, :] + i * 9) % 256
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = i
        packets += context.encode(frame)
    packets += context.encode(None)
    return packets


@pytest.mark.parametrize("encoder,codec", [("libx264", "H264"), ("libvpx", "VP8")])
def test_keyframes_are_found_as_the_encoder_marked_them(encoder: str, codec: str) -> None:
    packets = encoded_packets(encoder)
    flags = [p.is_keyframe for p in packets]
    assert flags[0] and not all(flags)
    assert [is_keyframe(codec, bytes(p)) for p in packets] == flags


async def _real_offer(codec: str = "H264") -> str:
    pc = RTCPeerConnection()
    video = pc.addTransceiver("video", direction="sendonly")
    video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs if c.name == codec])
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def test_offers_we_cannot_answer_are_refused_with_the_reason() -> None:
    offer = asyncio.run(_real_offer())
    assert check_offer(offer) == ["video", "audio"]
    video_section = "m=video" + offer.split("m=video", 1)[1].split("m=audio", 1)[0]
    cases = {
        "": "must start with v=0",
        "hello": "must start with v=0",
        offer.split("m=video", 1)[0]: "no media section",
        offer + video_section: "2 video sections",
        offer.replace("a=sendonly", "a=recvonly"): "is recvonly",
        offer.replace("opus/48000", "speex/48000"): "no audio codec we take (Opus)",
        offer.replace("H264/90000", "H265/90000"): "no video codec we take",
        offer.replace("a=fingerprint:", "a=x-fingerprint:"): "no DTLS fingerprint",
        offer.replace("a=ice-pwd:", "a=x-ice-pwd:"): "no ICE username fragment or password",
        "v=0\r\n" + "a=x\r\n" * 20000: "the limit is",
    }
    for sdp, reason in cases.items():
        with pytest.raises(OfferError, match=re.escape(reason)):
            check_offer(sdp)
    packetization_0 = offer.replace("packetization-mode=1", "packetization-mode=0")
    with pytest.raises(OfferError, match="packetization-mode=1"):
        check_offer(packetization_0)


def test_timeline_anchors_each_track_on_its_least_delayed_frame() -> None:
    """A browser's first keyframe is paced out slowly (300 ms late, the next frames queue behind it); audio
    arrives after a steady 40 ms. Anchoring on the first arrival would put video 260 ms late; the timeline
    must keep the two within 5 ms of their true capture times."""
    t0 = 1000.0
    timeline = Timeline(origin=t0, settle=1.0)
    events: list[tuple[float, str, EncodedFrame, float]] = []  # (arrival, kind, frame, capture time)
    for i in range(90):  # 3 s of 30 fps video
        capture = t0 + i / 30
        delay = max(0.04, 0.30 - i * 0.03)
        events.append((capture + delay, "video", EncodedFrame("H264", b"", round(i * 3000), capture + delay), capture))
    for i in range(150):  # 3 s of 20 ms Opus frames, starting 13 ms after the video
        capture = t0 + 0.013 + i * 0.02
        events.append((capture + 0.04, "audio", EncodedFrame("opus", b"", i * 960, capture + 0.04), capture))
    events.sort(key=lambda e: e[0])
    captured = {(kind, id(frame)): capture for _, kind, frame, capture in events}
    out: list[tuple[str, int, float]] = []
    released: list[int] = []  # how many frames each arrival released
    for arrival, kind, frame, _ in events:
        placed = timeline.add(kind, frame)  # type: ignore[arg-type]
        released.append(len(placed))
        out += [(k, dts, captured[(k, id(f))]) for k, dts, f in placed]
    assert len(out) == len(events)
    # Held for the settle window (1 s from the first arrival), released at once, then one frame per arrival.
    burst = next(i for i, n in enumerate(released) if n)
    assert events[burst][0] >= events[0][0] + 1.0 > events[burst - 1][0]
    assert released[burst] == burst + 1 and set(released[burst + 1:]) == {1}
    # Each track's dts rises strictly; the burst comes out in timeline order.
    for kind in ("video", "audio"):
        dts = [d for k, d, _ in out if k == kind]
        assert dts == sorted(dts) and len(set(dts)) == len(dts)
    assert [d for _, d, _ in out[:burst + 1]] == sorted(d for _, d, _ in out[:burst + 1])
    # A/V sync: dts minus true capture time is the same for both tracks (within 5 ms).
    skews = {kind: {d - round((c - t0) * 1000) for k, d, c in out if k == kind} for kind in ("video", "audio")}
    assert max(skews["video"]) - min(skews["video"]) <= 2 and max(skews["audio"]) - min(skews["audio"]) <= 2
    assert abs(min(skews["video"]) - min(skews["audio"])) <= 5, skews


class ClientLoop:
    """The WHIP clients' own event loop in a thread (the server runs in another), so tests stay synchronous."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def http(method: str, url: str, body: bytes | None = None, key: str | None = None,
         content_type: str = "application/sdp") -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, data=body, method=method)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    if body is not None:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


class WhipClient:
    """An aiortc peer connection publishing NumberedVideo and Sine over WHIP."""

    def __init__(self, loop: ClientLoop, server: ServerHandle, stream_id: str, key: str, codec: str = "H264") -> None:
        self.loop, self.server, self.stream_id, self.key, self.codec = loop, server, stream_id, key, codec
        self.video = NumberedVideo()
        self.pc: RTCPeerConnection | None = None
        self.location = ""

    async def _offer(self) -> str:
        self.pc = RTCPeerConnection()
        video = self.pc.addTransceiver(self.video, direction="sendonly")
        capabilities = RTCRtpSender.getCapabilities("video")
        video.setCodecPreferences([c for c in capabilities.codecs if c.name in (self.codec, "rtx")])
        self.pc.addTransceiver(Sine(), direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def _answer(self, sdp: str) -> None:
        assert self.pc is not None
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))

    def publish(self, key: str | None = None) -> tuple[int, dict[str, str], str]:
        offer = self.loop.run(self._offer())
        status, headers, body = http("POST", f"{self.server.http}/whip/{self.stream_id}", offer.encode(),
                                     self.key if key is None else key)
        if status == 201:
            self.location = headers["Location"]
            self.loop.run(self._answer(body))
        else:
            self.drop()
        return status, headers, body

    def drop(self) -> None:
        """Close the peer connection without DELETE (a lost phone, a closed tab)."""
        if self.pc is not None:
            self.loop.run(self.pc.close())

    def delete(self) -> int:
        status, _, _ = http("DELETE", self.server.http + self.location, key=self.key)
        self.drop()
        return status


@pytest.fixture(scope="module")
def client_loop() -> Iterator[ClientLoop]:
    loop = ClientLoop()
    yield loop
    loop.close()


def live_rung_decodes(server: ServerHandle, stream_id: str) -> bool:
    """The live 180p rung's newest segment decodes at 320x180 with audio."""
    status, _, body = server.get(f"/hls/{stream_id}/180p.m3u8")
    if status != 200:
        return False
    playlist = parse_media(body.decode())
    if not playlist.segments:
        return False
    uri, _, init_uri = playlist.segments[-1]
    init, segment = server.get(f"/hls/{stream_id}/{init_uri}")[2], server.get(f"/hls/{stream_id}/{uri}")[2]
    decoded = decode_segment(init, segment)
    return (decoded.width, decoded.height) == (WIDTH, HEIGHT) and decoded.frames > 0 and decoded.audio_frames > 0


def recorded_frame_numbers(server: ServerHandle, mp4_url: str) -> tuple[list[int], float, float]:
    """Frame numbers read from the recording's pictures, and its video and audio durations."""
    status, _, mp4 = server.get(mp4_url)
    assert status == 200
    numbers: list[int] = []
    with av.open(io.BytesIO(mp4)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.width, video.height) == (WIDTH, HEIGHT)
        for frame in container.decode(video=0):
            number = frame_code.read_frame(frame)
            if number is not None:
                numbers.append(number)
        video_seconds = float(video.duration * video.time_base) if video.duration else 0.0
        audio_seconds = float(audio.duration * audio.time_base) if audio.duration else 0.0
    return numbers, video_seconds, audio_seconds


def broadcasts_on_disk(data_dir: Path, stream_id: str) -> list[str]:
    return os.listdir(data_dir / "media" / stream_id)


@pytest.mark.media
def test_h264_publish_plays_and_delete_ends_the_broadcast(tmp_path: Path, client_loop: ClientLoop) -> None:
    # A long reconnect window: only DELETE can end the broadcast quickly.
    server = run_server(small_config(tmp_path / "data", reconnect_window=60.0))
    try:
        stream = server.create_stream()
        client = WhipClient(client_loop, server, stream["id"], stream["stream_key"], "H264")
        status, headers, answer = client.publish()
        assert status == 201, answer
        assert headers["Content-Type"].startswith("application/sdp")
        assert client.location.startswith(f"/whip/{stream['id']}/")
        assert "a=recvonly" in answer and "H264/90000" in answer and "VP8" not in answer
        wait_for(lambda: stream_status(server, stream["id"])["status"] == "LIVE", 20, "LIVE")
        master = parse_master(fetch_text(server, f"/hls/{stream['id']}/master.m3u8"))
        assert {attrs["RESOLUTION"] for attrs, _ in master} == {"320x180", "256x144"}
        assert all("mp4a.40.2" in attrs["CODECS"] for attrs, _ in master)
        wait_for(lambda: live_rung_decodes(server, stream["id"]), 15, "a live segment that decodes")
        time.sleep(2.0)
        sent = client.video.sent
        assert client.delete() == 200
        ended_at = time.monotonic()
        body = wait_recording(server, stream["id"], timeout=30)
        assert time.monotonic() - ended_at < 15  # not the 60 s reconnect window
        numbers, video_seconds, audio_seconds = recorded_frame_numbers(server, body["recording"]["mp4_url"])
        # The pictures are the client's, in order, none lost on loopback beyond the first (pre-keyframe) ones.
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        assert len(numbers) >= 0.8 * sent and numbers[-1] <= sent, (len(numbers), sent)
        assert abs(video_seconds - audio_seconds) < 0.5, (video_seconds, audio_seconds)
        assert broadcasts_on_disk(tmp_path / "data", stream["id"]) and len(
            broadcasts_on_disk(tmp_path / "data", stream["id"])) == 1
        assert http("DELETE", server.http + client.location, key=stream["stream_key"])[0] == 404
        assert not server.call(_whip_sessions(server))
        # aiortc's receive threads are joined with their peer connection.
        assert not [t.name for t in threading.enumerate() if t.name.endswith("-decoder")]
    finally:
        server.stop()


async def _whip_sessions(server: ServerHandle) -> list[str]:
    from web.whip import WHIP

    return list(server.server.runner.app[WHIP].sessions)


@pytest.mark.media
def test_vp8_publish_and_refusals(tmp_path: Path, client_loop: ClientLoop) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=60.0))
    try:
        stream = server.create_stream()
        key = stream["stream_key"]
        url = f"{server.http}/whip/{stream['id']}"
        other = WhipClient(client_loop, server, stream["id"], key)
        offer = client_loop.run(other._offer())
        client_loop.run(other.pc.close())

        # Wrong or missing key: 401 with a Bearer challenge.
        status, headers, body = http("POST", url, offer.encode(), "sk_wrong")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), body
        assert http("POST", url, offer.encode(), None)[0] == 401
        # A key of another stream does not publish here.
        second = server.create_stream("Other")
        assert http("POST", url, offer.encode(), second["stream_key"])[0] == 401
        # Not an SDP offer: 400 with the reason.
        status, _, body = http("POST", url, b"hello, I am not SDP", key)
        assert status == 400 and "SDP" in body
        status, _, body = http("POST", url, offer.replace("opus", "opuz").encode(), key)
        assert status == 400 and "Opus" in body
        assert http("POST", url, offer.encode(), key, content_type="text/plain")[0] == 415
        assert stream_status(server, stream["id"])["status"] == "SCHEDULED"  # nothing above started a broadcast

        client = WhipClient(client_loop, server, stream["id"], key, "VP8")
        status, _, answer = client.publish()
        assert status == 201 and "VP8/90000" in answer and "H264" not in answer, answer
        wait_for(lambda: live_rung_decodes(server, stream["id"]), 25, "a live VP8-sourced segment that decodes")
        # A second publisher while the first is live: 409.
        intruder = WhipClient(client_loop, server, stream["id"], key)
        status, _, body = intruder.publish()
        assert status == 409 and "already" in body, body
        # Trickle ICE / ICE restart: 405 naming what is allowed.
        status, headers, body = http("PATCH", server.http + client.location, b"a=ice-ufrag:x", key,
                                     content_type="application/trickle-ice-sdpfrag")
        assert status == 405 and headers["Allow"] == "DELETE" and "trickle ICE" in body
        # DELETE needs the key.
        assert http("DELETE", server.http + client.location, key="sk_wrong")[0] == 401
        assert client.delete() == 200
        body = wait_recording(server, stream["id"], timeout=30)
        assert body["recording"]["duration"] > 1.0
    finally:
        server.stop()


@pytest.mark.media
def test_drop_and_reconnect_inside_the_window_is_one_broadcast(tmp_path: Path, client_loop: ClientLoop) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=10.0))
    try:
        stream = server.create_stream()
        first = WhipClient(client_loop, server, stream["id"], stream["stream_key"])
        assert first.publish()[0] == 201
        wait_for(lambda: stream_status(server, stream["id"])["status"] == "LIVE", 20, "LIVE")
        time.sleep(1.0)
        first.drop()  # no DELETE: the reconnect window applies
        wait_for(lambda: stream_status(server, stream["id"])["status"] == "ENDING", 15, "ENDING")
        second = WhipClient(client_loop, server, stream["id"], stream["stream_key"])
        status, _, body = second.publish()
        assert status == 201, body
        wait_for(lambda: stream_status(server, stream["id"])["status"] == "LIVE", 20, "LIVE again")
        time.sleep(2.0)
        assert second.delete() == 200
        body = wait_recording(server, stream["id"], timeout=30)
        base = body["recording"]["playback_url"].rsplit("/", 1)[0]
        playlist = parse_media(fetch_text(server, f"{base}/180p.m3u8"))
        assert playlist.discontinuities == 1
        assert len({m for _, _, m in playlist.segments}) == 2  # one init segment per connection
        assert len(broadcasts_on_disk(tmp_path / "data", stream["id"])) == 1
        recordings = server.server.db.recordings_where("stream_id = ?", [stream["id"]])
        assert len(recordings) == 1
    finally:
        server.stop()


@pytest.mark.media
def test_server_shutdown_closes_live_sessions(tmp_path: Path, client_loop: ClientLoop) -> None:
    server = run_server(small_config(tmp_path / "data", reconnect_window=60.0))
    stopped = False
    try:
        stream = server.create_stream()
        client = WhipClient(client_loop, server, stream["id"], stream["stream_key"])
        assert client.publish()[0] == 201
        wait_for(lambda: stream_status(server, stream["id"])["status"] == "LIVE", 20, "LIVE")
        db = server.server.db
        server.stop()
        stopped = True
        # The broadcast ended and was recorded; the peer connection and its threads are gone.
        assert db.stream(stream["id"])["status"] == "ENDED"
        assert len(db.recordings_where("stream_id = ?", [stream["id"]])) == 1
        assert not [t.name for t in threading.enumerate() if t.name.endswith("-decoder")]
        wait_for(lambda: client.pc is not None and client.pc.connectionState == "closed", 10,
                 "the client to see the server's peer connection close")
        client.drop()
    finally:
        if not stopped:
            server.stop()
