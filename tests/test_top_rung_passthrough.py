"""transcode.top_rung: an OBS-like H.264 source (B-frames, keyframes at most 2 s apart) is copied into the top rung,
not re-encoded; a source with keyframes further apart is encoded; the setting forces either.

The server tests publish over RTMP and read the recording back through HTTP with PyAV; the worker-level ones
(a new SPS mid-stream, an encoder without x264's SEI) read the worker's segments. Each compares with the source
itself: packet bytes, decoded pictures, frame counts, keyframes.
"""
from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from ingest.flv import TAG_VIDEO, FlvTag
from mediaserver.config import ConfigError, Rendition
from tests.hls_reader import parse_master, parse_media
from tests.media_source import _frame_image, encode_flv, flv_file, flv_tags, publish_tags, run_worker
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.test_broadcast import fetch_text, wait_recording

pytestmark = pytest.mark.media

WIDTH, HEIGHT, FPS = 640, 360, 30
# The top rung is the source's height; 144p scales from 240p's picture (240 >= 1.4 x 144).
LADDER = [Rendition("360p", 360, 800_000), Rendition("240p", 240, 400_000), Rendition("144p", 144, 200_000)]


@dataclass
class Track:
    """A video track read with PyAV: packets in decode order and the decoded pictures (yuv420p planes)."""

    packets: list[bytes] = field(default_factory=list)
    pts: list[float] = field(default_factory=list)  # seconds, decode order
    keyframes: list[float] = field(default_factory=list)  # seconds
    pictures: list[np.ndarray] = field(default_factory=list)  # presentation order
    picture_pts: list[float] = field(default_factory=list)  # seconds, presentation order
    picture_keys: list[int] = field(default_factory=list)  # indices of the keyframes among the pictures
    gray: list[np.ndarray] = field(default_factory=list)  # the pictures as full-range gray, when asked for
    size: tuple[int, int] = (0, 0)
    keep_gray: bool = False

    def add_picture(self, frame: av.VideoFrame, time_base: Fraction) -> None:
        if frame.key_frame:
            self.picture_keys.append(len(self.pictures))
        self.pictures.append(frame.to_ndarray())
        if self.keep_gray:
            self.gray.append(frame.to_ndarray(format="gray"))
        self.picture_pts.append(float((frame.pts or 0) * time_base))
        self.size = (frame.width, frame.height)


def read_track(data: bytes, fmt: str | None = None, keep_gray: bool = False) -> Track:
    track = Track(keep_gray=keep_gray)
    with av.open(io.BytesIO(data), "r", format=fmt) as container:
        stream = container.streams.video[0]
        time_base = stream.time_base
        assert time_base is not None
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None:
                continue
            t = float(packet.pts * packet.time_base)
            track.packets.append(bytes(packet))
            track.pts.append(t)
            if packet.is_keyframe:
                track.keyframes.append(t)
            for frame in packet.decode():
                track.add_picture(frame, time_base)
        for frame in stream.codec_context.decode(None):
            track.add_picture(frame, time_base)
    return track


def obs_like_flv(seconds: float, keyframe_seconds: float) -> bytes:
    """What OBS's x264 sends: veryfast, 2 B-frames, a keyframe every keyframe_seconds; AAC 48 kHz stereo."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="flv") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.codec_context.max_b_frames = 2
        # b-adapt=0: B-frames every time (x264 might otherwise pick none for this synthetic picture).
        video.options = {"preset": "veryfast", "g": str(round(FPS * keyframe_seconds)), "sc_threshold": "0",
                         "b": "1500k", "x264-params": "b-adapt=0"}
        audio = container.add_stream("aac", rate=48000, layout="stereo")
        block, tone = 1024, 0
        frames = round(seconds * FPS)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(_frame_image(i, WIDTH, HEIGHT), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            for packet in video.encode(frame):
                container.mux(packet)
            while tone < (i + 1) * 48000 // FPS:
                wave = (0.2 * np.sin(2 * np.pi * 440 * (np.arange(block) + tone) / 48000)).astype(np.float32)
                aframe = av.AudioFrame.from_ndarray(np.stack([wave, wave]), format="fltp", layout="stereo")
                aframe.sample_rate, aframe.pts, aframe.time_base = 48000, tone, Fraction(1, 48000)
                tone += block
                for packet in audio.encode(aframe):
                    container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)
    return buf.getvalue()


def recorded_rungs(server: ServerHandle, stream_id: str) -> dict[int, Track]:
    """Every rung of the recording (init + all its segments), by picture height, and each one's segment starts."""
    body = wait_recording(server, stream_id, timeout=120)
    playback = body["recording"]["playback_url"]
    base = playback.rsplit("/", 1)[0]
    rungs: dict[int, Track] = {}
    for attrs, uri in parse_master(fetch_text(server, playback)):
        playlist = parse_media(fetch_text(server, f"{base}/{uri}"))
        inits = {init for _, _, init in playlist.segments}
        assert len(inits) == 1, inits  # one connection, one init segment
        data = server.get(f"{base}/{playlist.segments[0][2]}")[2]
        data += b"".join(server.get(f"{base}/{seg}")[2] for seg, _, _ in playlist.segments)
        track = read_track(data, "mp4")
        rungs[track.size[1]] = track
        assert f"{track.size[0]}x{track.size[1]}" == attrs["RESOLUTION"]
    return rungs


def publish_flv(server: ServerHandle, key: str, flv: bytes) -> None:
    publish_tags(server.rtmp_url(key), flv_tags(flv))


def assert_copy_of(rung: Track, source: Track) -> None:
    """The rung is the source's own bitstream: same packets in the same order, same pictures, same timing."""
    assert len(rung.packets) == len(source.packets)
    assert rung.packets == source.packets
    assert len(rung.pictures) == len(source.pictures) == len(source.packets)
    assert all(np.array_equal(a, b) for a, b in zip(rung.pictures, source.pictures))
    offsets = [round(r - s, 3) for r, s in zip(rung.pts, source.pts)]
    assert len(set(offsets)) == 1, offsets  # the same presentation times, shifted once onto the broadcast timeline


def assert_lower_rungs_aligned(rungs: dict[int, Track], top: int) -> None:
    """Lower rungs show the same pictures at the same instants as the top rung, with keyframes only on pictures
    where the top rung has one (so a player can switch there).

    Compared picture by picture in presentation order, and by the intervals between pictures: FFmpeg's MP4
    demuxer presents a track with negative composition offsets (a copied source with B-frames) shifted by the
    largest such offset, where browsers take decode time + offset as they are."""
    reference = rungs[top]
    steps = np.round(np.diff(reference.picture_pts), 4)
    for height, track in rungs.items():
        if height == top:
            continue
        assert len(track.pictures) == len(reference.pictures), height
        assert track.picture_keys and set(track.picture_keys) <= set(reference.picture_keys), \
            (height, track.picture_keys, reference.picture_keys)
        assert np.array_equal(np.round(np.diff(track.picture_pts), 4), steps), height


def run_ladder(tmp_path: Path, flv: bytes, top_rung: str | None = None) -> tuple[dict[int, Track], Track]:
    config = small_config(tmp_path / "data", renditions=list(LADDER), reconnect_window=0.0)
    if top_rung is not None:
        config.transcode.top_rung = top_rung
    server = run_server(config)
    try:
        stream = server.create_stream()
        publish_flv(server, stream["stream_key"], flv)
        rungs = recorded_rungs(server, stream["id"])
    finally:
        server.stop()
    return rungs, read_track(flv, "flv")


def test_obs_like_source_is_copied_into_the_top_rung(tmp_path: Path) -> None:
    flv = obs_like_flv(seconds=4.0, keyframe_seconds=1.0)
    rungs, source = run_ladder(tmp_path, flv)
    assert any(a > b for a, b in zip(source.pts, source.pts[1:])), "the source should have B-frames"
    assert set(rungs) == {360, 240, 144}
    assert_copy_of(rungs[360], source)
    assert rungs[360].picture_keys == source.picture_keys
    for height in (240, 144):
        assert rungs[height].packets != source.packets[: len(rungs[height].packets)]
    assert_lower_rungs_aligned(rungs, 360)


def test_source_with_keyframes_5_s_apart_is_encoded(tmp_path: Path) -> None:
    flv = obs_like_flv(seconds=6.0, keyframe_seconds=5.0)
    rungs, source = run_ladder(tmp_path, flv)
    assert len(source.keyframes) == 2
    top = rungs[360]
    # Encoded: a keyframe at every 1 s segment, which the source doesn't have, and its own pictures.
    assert len(top.keyframes) >= 5
    assert top.packets != source.packets
    assert len(top.pictures) == len(source.pictures)
    assert not all(np.array_equal(a, b) for a, b in zip(top.pictures, source.pictures))
    assert_lower_rungs_aligned(rungs, 360)


def test_setting_encode_encodes_a_source_auto_would_copy(tmp_path: Path) -> None:
    flv = obs_like_flv(seconds=3.0, keyframe_seconds=1.0)
    rungs, source = run_ladder(tmp_path, flv, top_rung="encode")
    top = rungs[360]
    assert len(top.pictures) == len(source.pictures)
    assert top.packets != source.packets
    # Our encoder sends no B-frames: decode order is presentation order.
    assert top.pts == sorted(top.pts)
    assert_lower_rungs_aligned(rungs, 360)


def test_setting_passthrough_copies_a_source_auto_would_encode(tmp_path: Path) -> None:
    flv = obs_like_flv(seconds=6.0, keyframe_seconds=5.0)
    rungs, source = run_ladder(tmp_path, flv, top_rung="passthrough")
    assert_copy_of(rungs[360], source)
    assert_lower_rungs_aligned(rungs, 360)


def test_top_rung_setting_is_validated(tmp_path: Path) -> None:
    config = small_config(tmp_path / "data")
    config.transcode.top_rung = "copy"
    with pytest.raises(ConfigError, match="top_rung"):
        config.validate()


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")
def test_ffmpeg_cli_publish_is_copied_into_the_top_rung(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data", renditions=list(LADDER), reconnect_window=0.0))
    try:
        stream = server.create_stream()
        source_file = tmp_path / "source.flv"
        # The tee muxer keeps a copy of exactly what went over RTMP.
        subprocess.run(
            ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}:duration=4",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=4",
             "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "30",
             "-pix_fmt", "yuv420p", "-c:a", "aac", "-ar", "48000", "-ac", "2",
             # The tee muxer asks for no global header; FLV needs SPS/PPS in its AVC sequence header.
             "-flags", "+global_header", "-f", "tee", f"[f=flv]{server.rtmp_url(stream['stream_key'])}|[f=flv]{source_file}"],
            check=True, timeout=60,
        )
        rungs = recorded_rungs(server, stream["id"])
    finally:
        server.stop()
    source = read_track(source_file.read_bytes(), "flv")
    assert any(a > b for a, b in zip(source.pts, source.pts[1:])), "ffmpeg should send B-frames"
    assert_copy_of(rungs[360], source)
    assert_lower_rungs_aligned(rungs, 360)


def test_new_sps_under_a_copied_top_rung_plans_the_ladder_again(tmp_path: Path) -> None:
    """The encoder switches from 320x180 to 480x270 after 2 s: the copy of the first part ends there, and the
    180p rung goes on encoded (the new source is taller) under a new init segment, with the right pictures."""
    first = flv_tags(encode_flv(seconds=2, width=320, height=180, audio=False))
    second = flv_tags(encode_flv(seconds=2, width=480, height=270, audio=False))
    end = max(t.timestamp_ms for t in first) + 33
    tags = [t for t in first if t.kind == TAG_VIDEO] + [
        FlvTag(t.kind, t.timestamp_ms + end, t.body) for t in second if t.kind == TAG_VIDEO]
    run = run_worker(flv_file(tags), tmp_path, late_audio_wait=0.0)
    assert run.code == 0
    inits = [e["init"] for e in run.of("rendition") if e["name"] == "180p"]
    assert len(inits) == 2
    parts = []
    for init in inits:
        segments = [e for e in run.segments("180p") if e["init"] == init]
        data = (run.root / init).read_bytes() + b"".join((run.root / e["key"]).read_bytes() for e in segments)
        parts.append(read_track(data, "mp4", keep_gray=True))
    source_first = read_track(flv_file(first), "flv")
    assert parts[0].packets == source_first.packets  # the first part is the source's own bitstream
    assert len(parts[0].pictures) == 60 and abs(len(parts[1].pictures) - 60) <= 1
    assert parts[1].size == (320, 180)
    # Each picture of the second part is its source picture scaled to 320x180 (not a copy, not garbage).
    for k in (5, 30, 55):
        expected = av.VideoFrame.from_ndarray(_frame_image(k, 480, 270), format="rgb24").reformat(
            width=320, height=180, format="gray").to_ndarray()
        diff = np.abs(parts[1].gray[k].astype(np.int32) - expected.astype(np.int32)).mean()
        assert diff < 5, (k, diff)


def without_sei(tags: list[FlvTag]) -> list[FlvTag]:
    """The tags with every SEI NAL unit removed: a hardware encoder's stream, which doesn't announce its keyint."""
    out = []
    for tag in tags:
        body = tag.body
        if tag.kind == TAG_VIDEO and len(body) > 5 and body[1] == 1:
            units, pos = [], 5
            while pos + 4 <= len(body):
                size = int.from_bytes(body[pos:pos + 4], "big")
                unit = body[pos:pos + 4 + size]
                if unit[4] & 0x1F != 6:
                    units.append(unit)
                pos += 4 + size
            body = body[:5] + b"".join(units)
        out.append(FlvTag(tag.kind, tag.timestamp_ms, body))
    return out


@pytest.mark.parametrize("keyframe_seconds, copied", [(1.0, True), (5.0, False)])
def test_without_x264_sei_the_second_keyframe_decides(tmp_path: Path, keyframe_seconds: float, copied: bool) -> None:
    """No announced keyint: the worker waits (holding packets) for the second keyframe, at most 2 s of source."""
    flv = flv_file(without_sei(flv_tags(obs_like_flv(seconds=6.0, keyframe_seconds=keyframe_seconds))))
    assert b"x264 - core" not in flv
    from transcode.job import RenditionSpec

    run = run_worker(flv, tmp_path, renditions=[RenditionSpec("360p", 360, 800_000),
                                                RenditionSpec("144p", 144, 200_000)])
    assert run.code == 0
    source = read_track(flv, "flv")
    top = read_track(run.media("360p"), "mp4")
    assert len(top.pictures) == len(source.pictures)
    if copied:
        assert_copy_of(top, source)
    else:
        assert top.packets != source.packets and len(top.keyframes) >= 5
    low = read_track(run.media("144p"), "mp4")
    assert_lower_rungs_aligned({360: top, 144: low}, 360)


def test_plan_notes_and_scaling_sources() -> None:
    """The default ladder from a copied 1080p source: 720p scales the source, 480p and 360p the 720p picture."""
    from mediaserver.config import default_ladder
    from transcode.job import RenditionSpec
    from transcode.ladder import SourceVideo, choose_top_rung, plan_ladder, top_spec

    specs = [RenditionSpec(r.name, r.height, r.video_bitrate) for r in default_ladder()]
    obs = SourceVideo(1920, 1080, "yuv420p", False, 2.0)
    choice = choose_top_rung("auto", top_spec(specs), obs)
    plans = {p.name: p for p in plan_ladder(specs, 1920, 1080, choice)}
    assert plans["1080p"].passthrough and plans["1080p"].note == \
        "passthrough: the source is H.264 with keyframes every 2.0 s"
    assert [(plans[n].passthrough, plans[n].scale_from) for n in ("720p", "480p", "360p")] == \
        [(False, ""), (False, "720p"), (False, "720p")]
    far = choose_top_rung("auto", top_spec(specs), SourceVideo(1920, 1080, "yuv420p", False, 8.0))
    assert not far.passthrough and far.note == "encoded: the source's keyframes are 8.0 s apart (more than 2 s)"
    small = choose_top_rung("auto", top_spec(specs), SourceVideo(1280, 720, "yuv420p", False, 2.0))
    assert not small.passthrough and "smaller than the 1080p rung" in small.note
    assert not choose_top_rung("auto", top_spec(specs), SourceVideo(1920, 1080, "yuv420p", True, 2.0)).passthrough
    assert not choose_top_rung("auto", top_spec(specs), SourceVideo(1920, 1080, "yuv422p", False, 2.0)).passthrough
    assert not choose_top_rung("encode", top_spec(specs), obs).passthrough
    assert choose_top_rung("passthrough", top_spec(specs), SourceVideo(1920, 1080, "yuv420p", False, 8.0)).passthrough


def test_x264_announces_its_keyint_in_the_first_keyframe() -> None:
    from transcode.ladder import x264_keyint

    tags = [t for t in flv_tags(obs_like_flv(seconds=1.0, keyframe_seconds=2.0)) if t.kind == TAG_VIDEO]
    first_picture = next(t for t in tags if t.body[1] == 1)
    assert x264_keyint(first_picture.body) == 60
    assert x264_keyint(b"\x00\x00\x00\x05\x65\x88\x84\x00\x10") is None


@pytest.mark.parametrize("keyframe_seconds, copied", [(1.0, True), (5.0, False)])
def test_the_stream_status_says_whether_the_top_rung_is_copied_and_why(tmp_path: Path, keyframe_seconds: float,
                                                                      copied: bool) -> None:
    """What an admin reads in the API while the service is live: each rendition, passthrough or encoded, and why."""
    import threading

    from tests.test_broadcast import wait_for

    server = run_server(small_config(tmp_path / "data", renditions=list(LADDER), reconnect_window=0.0))
    try:
        stream = server.create_stream()
        flv = obs_like_flv(seconds=6.0, keyframe_seconds=keyframe_seconds)
        sender = threading.Thread(target=publish_tags, args=(server.rtmp_url(stream["stream_key"]), flv_tags(flv)),
                                  kwargs={"realtime": True})
        sender.start()

        def renditions() -> list[dict[str, object]] | None:
            status, body = server.api("GET", f"/api/streams/{stream['id']}")
            assert status == 200
            return body["renditions"] if len(body["renditions"]) == 3 else None

        listed = wait_for(renditions, 30, "the live renditions")
        sender.join(60)
        top = listed[0]
        assert top["name"] == "360p" and top["passthrough"] is copied
        expected = "passthrough: the source is H.264" if copied else "encoded: the source's keyframes are 5.0 s apart"
        assert str(top["note"]).startswith(expected), top
        assert all(r["passthrough"] is False and str(r["note"]).startswith("encoded") for r in listed[1:]), listed
    finally:
        server.stop()


def test_recording_mp4_of_a_copied_b_frame_source_keeps_lip_sync(tmp_path: Path) -> None:
    """The MP4 of the recording presents picture and sound with the same offset as the HLS recording does
    (FFmpeg's HLS reader as the reference): the copied top rung's B-frames don't make the picture trail."""
    import json
    import urllib.request

    def starts(url_or_path: str) -> dict[str, float]:
        out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,start_time",
                              "-of", "json", url_or_path], capture_output=True, text=True, check=True).stdout
        return {s["codec_type"]: float(s["start_time"]) for s in json.loads(out)["streams"]}

    server = run_server(small_config(tmp_path / "data", renditions=list(LADDER), reconnect_window=0.0))
    try:
        stream = server.create_stream()
        publish_flv(server, stream["stream_key"], obs_like_flv(seconds=4.0, keyframe_seconds=1.0))
        recording = wait_recording(server, stream["id"])["recording"]
        mp4 = tmp_path / "recording.mp4"
        with urllib.request.urlopen(recording["mp4_url"]) as response:
            mp4.write_bytes(response.read())
        hls = starts(recording["playback_url"])
        local = starts(str(mp4))
    finally:
        server.stop()
    assert abs((local["video"] - local["audio"]) - (hls["video"] - hls["audio"])) < 0.005, (local, hls)
