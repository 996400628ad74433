"""Simulcast end to end with real receivers: nginx with the RTMP module (Debian's libnginx-mod-rtmp) records
what our server pushes (`record all`), a second nginx is killed and restarted mid-broadcast, and an RTMPS
receiver (nginx `stream {}` with ssl and a self-signed certificate) takes a push with verification off and
refuses one with it on. Also: the key is never returned by the API and not stored in clear in the DB."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import av
import numpy as np
import pytest

from ingest.media import AccessUnit, TrackInfo
from mediaserver.secret_box import SecretBox, SecretUnreadable
from mediaserver.simulcast import SOURCE, PushState, TargetError, check_rendition, target_url
from mediaserver.simulcast_fmp4 import Fmp4Error, read_init, read_segment
from mediaserver.net_guard import RefusedDestination
from mediaserver.simulcast_push import FlvMuxer, check_push_destination, choose_feed
from packager.h264 import to_avcc_sample
from tests.browser import module_browser
from tests.console_fixture import screenshot, signed_in_page
from tests.media_source import start_publisher
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config
from tests.test_fmp4 import AUDIO_RATE, VIDEO_TIMESCALE, encode, package
from tests.test_https import self_signed

MODULES = "/usr/lib/nginx/modules"
FPS = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """An nginx RTMP server on loopback recording every publish to record_dir (one file per publish)."""

    def __init__(self, folder: Path, tls: tuple[Path, Path] | None = None) -> None:
        self.folder = folder
        self.record_dir = folder / "records"
        self.record_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        stream_block = ""
        if tls:
            stream_block = (f"stream {{ server {{ listen 127.0.0.1:{self.tls_port} ssl; ssl_certificate {tls[0]}; "
                            f"ssl_certificate_key {tls[1]}; proxy_pass 127.0.0.1:{self.port}; }} }}\n")
        (folder / "nginx.conf").write_text(
            f"load_module {MODULES}/ngx_rtmp_module.so;\nload_module {MODULES}/ngx_stream_module.so;\n"
            f"daemon off;\nmaster_process off;\npid {folder}/nginx.pid;\nerror_log {folder}/error.log info;\n"
            "events { worker_connections 64; }\n"
            f"rtmp {{ server {{ listen 127.0.0.1:{self.port}; chunk_size 4096;\n"
            f"  application live2 {{ live on; record all; record_path {self.record_dir}; record_unique on; }} }} }}\n"
            + stream_block)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "Receiver":
        self.process = subprocess.Popen(["nginx", "-p", str(self.folder), "-e", str(self.folder / "error.log"),
                                         "-c", str(self.folder / "nginx.conf")])
        deadline = time.monotonic() + 10
        for port in (self.port, self.tls_port):
            while port is not None:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.5).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, (self.folder / "error.log").read_text()
                    time.sleep(0.05)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def recordings(self) -> list[Path]:
        return sorted(self.record_dir.glob("*.flv"), key=lambda p: p.stat().st_mtime)


def loopback_config(data_dir: Path, **overrides: Any) -> Any:
    """small_config with pushes to this machine allowed (the receivers here listen on loopback)."""
    config = small_config(data_dir, **overrides)
    config.simulcast.allow_private_networks = True
    return config


def video_format(path: Path) -> tuple[str, int, int]:
    """Codec and size of a recording's first decoded picture, measured by decoding it."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frame = next(container.decode(stream))
        return stream.codec_context.name, frame.width, frame.height


def decoded_video(path: Path) -> tuple[list[float], bool]:
    """The red level of each decoded video frame (the publisher paints frame i with red = 3*i mod 256), and
    whether the file also carries decodable audio."""
    reds: list[float] = []
    audio = False
    with av.open(str(path)) as container:
        for frame in container.decode(*container.streams):
            if isinstance(frame, av.VideoFrame):
                reds.append(float(frame.to_ndarray(format="rgb24")[:, :, 0].mean()))
            else:
                audio = True
    return reds, audio


def consecutive(reds: list[float]) -> float:
    """The share of neighbouring frames whose red levels step by 3 (mod 256): frames in order, none missing."""
    steps = [((b - a) % 256) for a, b in zip(reds, reds[1:])]
    return sum(1 for s in steps if abs(s - 3) < 1.5) / max(1, len(steps))


def wait_for(check: Callable[[], Any], what: str, timeout: float = 45) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def statuses(server: ServerHandle, stream_id: str) -> dict[str, dict[str, Any]]:
    status, body = server.api("GET", f"/api/streams/{stream_id}/simulcast-targets")
    assert status == 200, body
    return {t["name"]: t for t in body["targets"]}


# -- sans-IO parts ---------------------------------------------------------------------------------------------
def test_push_state_backs_off_then_fails_and_recovers() -> None:
    state = PushState(max_failures=3)
    assert state.connecting(0) and state.status == "CONNECTING"
    assert state.failed("refused", 1) == 1.0 and state.status == "RECONNECTING" and state.error == "refused"
    state.connecting(2)
    assert state.status == "RECONNECTING"  # an attempt stays one outage until it is live
    assert state.failed("refused", 3) == 2.0
    assert state.failed("refused", 4) is None and state.status == "FAILED"
    state.stopped(5)
    state.connecting(6)
    assert state.live(7) and (state.status, state.error, state.failures) == ("LIVE", None, 0)


def test_target_urls() -> None:
    assert target_url("youtube", None) == "rtmp://a.rtmp.youtube.com/live2"
    assert target_url("rtmp", "rtmps://example.org:443/app/") == "rtmps://example.org:443/app"
    for kind, url in (("rtmp", None), ("rtmp", "http://example.org/x"), ("rtmp", "rtmp://x/a?k=1"), ("other", "rtmp://x/a")):
        with pytest.raises(TargetError):
            target_url(kind, url)


def test_muxer_starts_at_a_keyframe_with_sequence_headers() -> None:
    video = TrackInfo("video", "h264", b"\x01avcC")
    muxer = FlvMuxer({"video": video, "audio": TrackInfo("audio", "aac", b"\x12\x10")})
    head = muxer.start()
    assert head.startswith(b"FLV\x01\x05") and b"\x01avcC" in head and b"\xaf\x00\x12\x10" in head
    assert muxer.feed(AccessUnit("video", 1000, 0, False, b"p")) == b""  # no keyframe yet
    assert muxer.feed(AccessUnit("audio", 1000, 0, True, b"a")) == b""
    key = muxer.feed(AccessUnit("video", 1040, 0, True, b"k"))
    assert key[4:7] == b"\x00\x00\x00" and key[11:13] == b"\x17\x01"  # timestamp 0, AVC keyframe NALU
    later = muxer.feed(AccessUnit("audio", 1100, 0, True, b"a"))
    assert int.from_bytes(later[4:7], "big") == 60
    assert muxer.feed(TrackInfo("video", "hevc", b"x")) == b""  # classic FLV carries H.264 only


def tag_time(tag: bytes) -> int:
    return int.from_bytes(tag[4:7], "big") | tag[7] << 24


def test_muxer_continues_its_timeline_across_an_encoder_reconnect() -> None:
    muxer = FlvMuxer({"video": TrackInfo("video", "h264", b"\x01avcC")})
    muxer.start()
    assert tag_time(muxer.feed(AccessUnit("video", 4_294_967_000, 0, True, b"k"))) == 0
    assert tag_time(muxer.feed(AccessUnit("video", 4_294_967_033, 0, False, b"p"))) == 33
    assert tag_time(muxer.feed(AccessUnit("video", 400, 0, False, b"p"))) == 696  # RTMP's clock wrapped
    assert tag_time(muxer.feed(AccessUnit("video", 4_400, 0, False, b"p"))) == 4_696
    # The encoder reconnects: its clock starts again at 0; we go on after our last tag, from its keyframe.
    assert muxer.feed(AccessUnit("video", 0, 0, False, b"p")) == b""
    assert tag_time(muxer.feed(AccessUnit("video", 40, 0, True, b"k"))) == 4_696 + 33
    assert tag_time(muxer.feed(AccessUnit("video", 73, 0, False, b"p"))) == 4_696 + 66


def test_fmp4_reader_gives_back_what_the_packager_wrote() -> None:
    """A rung's segments read back into access units: every sample's bytes, decode time, composition offset and
    keyframe flag as the encoder made them (B-frames included), in decode order across both tracks."""
    encoded = encode(bframes=2)
    packaged = package(encoded)
    tracks = read_init(packaged.init)
    video, audio = (t.info for t in tracks)
    assert (video.kind, video.codec, video.width, video.height, video.extradata) == (
        "video", "h264", 320, 180, packaged.video_track.avcc)
    assert (audio.kind, audio.codec, audio.extradata, audio.sample_rate, audio.channels) == (
        "audio", "aac", encoded.asc, AUDIO_RATE, 2)
    units = [u for segment in packaged.segments for u in read_segment(segment, tracks)]
    got_video = [u for u in units if u.kind == "video"]
    shift = -min(0, encoded.video[0].dts)
    assert [u.data for u in got_video] == [to_avcc_sample(p.data) for p in encoded.video]
    assert [u.keyframe for u in got_video] == [p.keyframe for p in encoded.video]
    assert [u.dts_ms for u in got_video] == [round((p.dts + shift) * 1000 / VIDEO_TIMESCALE) for p in encoded.video]
    assert [u.dts_ms + u.cts_ms for u in got_video] == [round(p.pts * 1000 / VIDEO_TIMESCALE) for p in encoded.video]
    assert any(u.cts_ms < 0 for u in got_video)  # B-frames: negative offsets survive
    got_audio = [u for u in units if u.kind == "audio"]
    assert [u.data for u in got_audio] == [p.data for p in encoded.audio]
    assert [u.dts_ms for u in got_audio] == [round(p.pts * 1000 / AUDIO_RATE) for p in encoded.audio]
    assert [u.dts_ms for u in units] == sorted(u.dts_ms for u in units)
    with pytest.raises(Fmp4Error):
        read_segment(packaged.segments[0][:-100], tracks)  # a truncated segment
    with pytest.raises(Fmp4Error):
        read_init(b"\x00\x00\x00\x08free")


def test_feed_choice_for_sources_rtmp_cannot_carry() -> None:
    h264, hevc = TrackInfo("video", "h264", b"x"), TrackInfo("video", "hevc", b"x")
    aac, opus = TrackInfo("audio", "aac", b"x"), TrackInfo("audio", "opus", b"x")
    rungs = {"180p": 180, "144p": 144, "audio": 0}
    assert choose_feed(SOURCE, {"video": h264, "audio": aac}, rungs) == (SOURCE, None)
    assert choose_feed("144p", {"video": hevc, "audio": aac}, rungs) == ("144p", None)
    feed, note = choose_feed(SOURCE, {"video": hevc, "audio": aac}, rungs)
    assert feed == "180p" and note is not None and "HEVC" in note and "180p" in note
    feed, note = choose_feed(SOURCE, {"video": h264, "audio": opus}, rungs)
    assert feed == "180p" and note is not None and "Opus" in note.title()
    feed, note = choose_feed("720p", {"video": h264}, rungs)  # in the ladder, but too tall for this source
    assert feed == "180p" and note is not None and "720p" in note
    assert check_rendition("144p", ["360p", "144p"]) == "144p" and check_rendition(SOURCE, []) == SOURCE
    with pytest.raises(TargetError, match="^rendition: .*360p, 144p.*'1080p'"):
        check_rendition("1080p", ["360p", "144p"])


def test_push_destinations_on_private_networks_are_refused() -> None:
    for url in ("rtmp://127.0.0.1:1935/live2", "rtmp://0x7f000001/live2", "rtmps://[::1]:443/app", "rtmp://10.0.0.5/x",
                "rtmp://169.254.169.254/latest", "rtmp://localhost:1935/live2", "rtmp://[::ffff:192.168.1.1]/x"):
        with pytest.raises(RefusedDestination):
            check_push_destination(url)
    check_push_destination("rtmp://93.184.216.34:1935/live2")  # a public address passes


def test_secret_box_key_file(tmp_path: Path) -> None:
    box = SecretBox.from_data_dir(tmp_path)
    sealed = box.seal("live-key-123")
    assert "live-key-123" not in sealed and box.open(sealed) == "live-key-123"
    assert (os.stat(tmp_path / "secret_box.key").st_mode & 0o777) == 0o600
    assert SecretBox.from_data_dir(tmp_path).open(sealed) == "live-key-123"  # the same key on restart
    with pytest.raises(SecretUnreadable):
        SecretBox.from_data_dir(tmp_path / "other").open(sealed)


def test_org_defaults_are_copied_into_new_streams(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data"))
    try:
        before = server.create_stream("Before the default")
        status, default = server.api("POST", "/api/orgs/default/simulcast-targets",
                                     {"kind": "youtube", "key": "org-wide-key-77", "name": "Church YouTube"})
        assert status == 201 and "org-wide-key-77" not in str(default) and "key" not in default, default
        status, paused = server.api("POST", "/api/orgs/default/simulcast-targets",
                                    {"kind": "rtmp", "url": "rtmp://127.0.0.1:1/x", "key": "k2", "name": "Paused"})
        assert server.api("PATCH", f"/api/orgs/default/simulcast-targets/{paused['id']}", {"enabled": False})[0] == 200
        other = server.server.db.create_token(server.server.db.create_org("elsewhere", "Elsewhere")["id"], "t")[1]
        assert server.api("GET", "/api/orgs/default/simulcast-targets", token=other)[0] == 404
        assert server.api("DELETE", f"/api/orgs/default/simulcast-targets/{default['id']}", token=other)[0] == 404
        assert server.api("POST", "/api/orgs/default/simulcast-targets", {"kind": "rtmp", "key": "k"})[0] == 400

        after = server.create_stream("After the default")
        copied = wait_for(lambda: statuses(server, after["id"]), "the default copied", timeout=15)
        assert list(copied) == ["Church YouTube"]  # the disabled default is not copied
        assert copied["Church YouTube"]["url"] == "rtmp://a.rtmp.youtube.com/live2"
        assert copied["Church YouTube"]["status"] == "PENDING" and copied["Church YouTube"]["enabled"]
        assert statuses(server, before["id"]) == {}  # streams made before keep their own list
        # Deleting the default leaves the stream's copy.
        assert server.api("DELETE", f"/api/orgs/default/simulcast-targets/{default['id']}")[0] == 204
        assert list(statuses(server, after["id"])) == ["Church YouTube"]
        db_bytes = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("mediaserver.db*"))
        assert b"org-wide-key-77" not in db_bytes
    finally:
        server.stop()


# -- end to end --------------------------------------------------------------------------------------------------
@pytest.mark.media
def test_simulcast_to_real_receivers(tmp_path: Path) -> None:
    cert, key_file = self_signed(tmp_path)
    steady = Receiver(tmp_path / "steady", tls=(cert, key_file)).start()
    flaky = Receiver(tmp_path / "flaky").start()
    server = run_server(loopback_config(tmp_path / "data", reconnect_window=1.0))
    publisher = None
    try:
        stream = server.create_stream()
        sid = stream["id"]
        secret = "yt-SECRET-key-0042"
        targets = {
            "youtube": {"kind": "youtube", "name": "youtube", "url": f"rtmp://127.0.0.1:{steady.port}/live2",
                        "key": secret},
            "flaky": {"kind": "rtmp", "name": "flaky", "url": f"rtmp://127.0.0.1:{flaky.port}/live2", "key": "flaky-key"},
            "rtmps": {"kind": "rtmp", "name": "rtmps", "url": f"rtmps://127.0.0.1:{steady.tls_port}/live2",
                      "key": "tls-key", "tls_verify": False},
            "verified": {"kind": "rtmp", "name": "verified", "url": f"rtmps://127.0.0.1:{steady.tls_port}/live2",
                         "key": "verified-key"},
            # The 144p rung as the transcode worker encoded it, beside the source pushes.
            "rung": {"kind": "rtmp", "name": "rung", "url": f"rtmp://127.0.0.1:{steady.port}/live2",
                     "key": "rung-key", "rendition": "144p"},
        }
        status, refused = server.api("POST", f"/api/streams/{sid}/simulcast-targets",
                                     {**targets["rung"], "rendition": "1080p"})
        assert status == 400 and "rendition" in refused["details"] and "144p" in refused["details"]["rendition"], refused
        for body in targets.values():
            status, created = server.api("POST", f"/api/streams/{sid}/simulcast-targets", body)
            assert status == 201, created
            assert body["key"] not in str(created) and "key" not in created and created["status"] == "PENDING"
        # Another organization's token sees no such stream, nor its targets.
        other = server.server.db.create_token(server.server.db.create_org("elsewhere", "Elsewhere")["id"], "t")[1]
        target_id = statuses(server, sid)["flaky"]["id"]
        assert server.api("GET", f"/api/streams/{sid}/simulcast-targets", token=other)[0] == 404
        assert server.api("POST", f"/api/streams/{sid}/simulcast-targets", targets["flaky"], token=other)[0] == 404
        assert server.api("PATCH", f"/api/streams/{sid}/simulcast-targets/{target_id}", {"enabled": False},
                          token=other)[0] == 404
        assert server.api("DELETE", f"/api/streams/{sid}/simulcast-targets/{target_id}", token=other)[0] == 404
        assert len(statuses(server, sid)) == 5
        assert statuses(server, sid)["rung"]["rendition"] == "144p" and statuses(server, sid)["youtube"]["rendition"] == "source"
        # Disabled and enabled again (a disabled target is not pushed).
        assert server.api("PATCH", f"/api/streams/{sid}/simulcast-targets/{target_id}", {"enabled": False})[1][
            "enabled"] is False
        assert server.api("PATCH", f"/api/streams/{sid}/simulcast-targets/{target_id}", {"enabled": True})[1][
            "enabled"] is True
        db_bytes = b"".join(p.read_bytes() for p in (tmp_path / "data").glob("mediaserver.db*"))
        assert secret.encode() not in db_bytes and b"flaky-key" not in db_bytes

        seconds = 16
        publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=seconds, fps=FPS)
        now = wait_for(lambda: (s := statuses(server, sid)) and all(
            s[n]["status"] == "LIVE" for n in ("youtube", "flaky", "rtmps", "rung")) and s, "four pushes LIVE")
        assert now["rung"]["detail"] is None and now["youtube"]["detail"] is None
        # Certificate verification is on by default: the self-signed receiver is refused, with the reason.
        verified = wait_for(lambda: (t := statuses(server, sid)["verified"])["error"] and t, "a TLS error")
        assert verified["status"] in ("RECONNECTING", "FAILED") and "verified-key" not in verified["error"], verified
        assert secret not in str(now)

        flaky.kill()
        wait_for(lambda: statuses(server, sid)["flaky"]["status"] == "RECONNECTING", "flaky RECONNECTING")
        assert statuses(server, sid)["youtube"]["status"] == "LIVE"  # one failing target touches no other
        flaky.start()
        wait_for(lambda: statuses(server, sid)["flaky"]["status"] == "LIVE", "flaky LIVE again")
        publisher.join(seconds * 3 + 30)
        assert publisher.error is None
        wait_for(lambda: all(t["status"] == "PENDING" for t in statuses(server, sid).values()), "pushes ended")
        events = [e for e in server.server.manager.bus.history if e.name == "simulcast.status"]
        flaky_seen = [e.data["status"] for e in events if e.data["name"] == "flaky"]
        assert flaky_seen[:2] == ["CONNECTING", "LIVE"] and "RECONNECTING" in flaky_seen, flaky_seen
        assert flaky_seen[flaky_seen.index("RECONNECTING"):].count("LIVE") >= 1
        assert all(secret not in str(e.data) for e in events)
    finally:
        if publisher is not None and not publisher.finished:
            publisher.kill()
        server.stop()
        steady.kill()
        flaky.kill()

    published_frames = seconds * FPS
    last_red = float(((published_frames - 1) * 3) % 256)
    records = steady.recordings()
    # The plain push, the RTMPS one and the rung (the verified one never got in); nginx names each by its key.
    assert sorted(r.name.split("-")[0] for r in records) == ["rung", "tls", "yt"], records
    rung = next(r for r in records if r.name.startswith("rung-"))
    assert video_format(rung) == ("h264", 256, 144)  # the rung's size, not the source's 320x180
    reds, audio = decoded_video(rung)
    assert audio and published_frames * 0.5 < len(reds) <= published_frames, len(reds)
    assert consecutive(reds) > 0.9, consecutive(reds)
    assert abs(reds[-1] - last_red) < 4, (reds[-1], last_red)  # the rung ends where the encoder stopped too
    for record in (r for r in records if r != rung):
        assert video_format(record) == ("h264", 320, 180)
        reds, audio = decoded_video(record)
        assert audio
        # Pushed from the stream's go-live (about a second in) to the encoder's last frame, none missing.
        assert published_frames * 0.6 < len(reds) <= published_frames, (record, len(reds))
        assert consecutive(reds) > 0.97
        assert abs(reds[-1] - last_red) < 2, (reds[-1], last_red)
    after_restart = flaky.recordings()[-1]
    reds, _ = decoded_video(after_restart)
    assert len(reds) > FPS and consecutive(reds) > 0.97 and abs(reds[-1] - last_red) < 2


@pytest.mark.media
def test_hevc_source_pushes_the_top_h264_rung(tmp_path: Path) -> None:
    """FLV as this machine's ffmpeg (5.1) writes it can't carry HEVC: a "source" target gets the tallest H.264 rung,
    and its status says so."""
    receiver = Receiver(tmp_path / "receiver").start()
    server = run_server(loopback_config(tmp_path / "data"))
    publisher = None
    try:
        stream = server.create_stream()
        sid = stream["id"]
        status, created = server.api("POST", f"/api/streams/{sid}/simulcast-targets",
                                     {"kind": "rtmp", "name": "hevc", "url": f"rtmp://127.0.0.1:{receiver.port}/live2",
                                      "key": "hevc-key"})
        assert status == 201 and created["rendition"] == "source", created
        publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=8, fps=FPS, codec="libx265")
        live = wait_for(lambda: (t := statuses(server, sid)["hevc"])["status"] == "LIVE" and t, "the push LIVE")
        assert "HEVC" in live["detail"] and "180p" in live["detail"], live
        publisher.join(60)
        assert publisher.error is None
        wait_for(lambda: statuses(server, sid)["hevc"]["status"] == "PENDING", "the push ended")
        events = [e.data for e in server.server.manager.bus.history if e.name == "simulcast.status"]
        assert any(e["status"] == "LIVE" and "HEVC" in (e["detail"] or "") for e in events), events
    finally:
        if publisher is not None and not publisher.finished:
            publisher.kill()
        server.stop()
        receiver.kill()
    record = receiver.recordings()[-1]
    assert video_format(record) == ("h264", 320, 180)  # the 180p rung, encoded from the HEVC source
    reds, audio = decoded_video(record)
    assert audio and len(reds) > 2 * FPS and consecutive(reds) > 0.9, (len(reds), consecutive(reds))


def video_packets(path: Path) -> list[tuple[bytes, int | None, int | None]]:
    """Each video packet's bytes, pts and dts (in its stream's time base), in file order."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [(bytes(p), p.pts, p.dts) for p in container.demux(stream) if p.size]


def presented_in_order(path: Path) -> tuple[int, bool]:
    """How many pictures decode, and whether they come out with rising timestamps (B-frames reordered right)."""
    with av.open(str(path)) as container:
        times = [f.pts for f in container.decode(video=0)]
    return len(times), all(b is not None and a is not None and b > a for a, b in zip(times, times[1:]))


@pytest.mark.media
def test_ffmpeg_cli_source_with_b_frames_is_pushed_byte_for_byte(tmp_path: Path) -> None:
    """A second publisher stack: the ffmpeg command-line tool (with B-frames, which OBS's x264 presets also send).
    The source push carries the encoder's very packets (compared with the copy ffmpeg kept of what it sent),
    and a rung push (fMP4 read back into FLV) keeps B-frame timing: its pictures come out in order."""
    receiver = Receiver(tmp_path / "receiver").start()
    server = run_server(loopback_config(tmp_path / "data"))
    source_file = tmp_path / "sent.flv"
    try:
        stream = server.create_stream()
        sid = stream["id"]
        for name, rendition in (("source", "source"), ("rung", "180p")):
            assert server.api("POST", f"/api/streams/{sid}/simulcast-targets",
                              {"kind": "rtmp", "name": name, "url": f"rtmp://127.0.0.1:{receiver.port}/live2",
                               "key": f"{name}-key", "rendition": rendition})[0] == 201
        subprocess.run(
            ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30:duration=7",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=7",
             "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-g", "30",
             "-pix_fmt", "yuv420p", "-c:a", "aac", "-ar", "48000", "-ac", "2",
             "-flags", "+global_header", "-f", "tee",
             f"[f=flv]{server.rtmp_url(stream['stream_key'])}|[f=flv]{source_file}"],
            check=True, timeout=90)
        wait_for(lambda: all(t["status"] == "PENDING" for t in statuses(server, sid).values()), "pushes ended")
        events = [e.data for e in server.server.manager.bus.history if e.name == "simulcast.status"]
        assert {e["name"] for e in events if e["status"] == "LIVE"} == {"source", "rung"}, events
    finally:
        server.stop()
        receiver.kill()
    records = {r.name.split("-")[0]: r for r in receiver.recordings()}
    assert sorted(records) == ["rung", "source"] and len(receiver.recordings()) == 2, (receiver.recordings(), events)
    sent = video_packets(source_file)
    assert any(a[1] is not None and b[1] is not None and a[1] > b[1] for a, b in zip(sent, sent[1:])), "B-frames"
    pushed = video_packets(records["source"])
    first = [data for data, _, _ in sent].index(pushed[0][0])
    assert [p[0] for p in pushed] == [p[0] for p in sent[first:first + len(pushed)]]
    assert len(pushed) > 60 and first + len(pushed) == len(sent), (first, len(pushed), len(sent))  # go-live to the end
    # Timing too: the same pts - dts (B-frame reordering) on every packet.
    assert [(p[1] or 0) - (p[2] or 0) for p in pushed] == [(p[1] or 0) - (p[2] or 0) for p in sent[first:]]
    count, in_order = presented_in_order(records["rung"])
    assert count > 60 and in_order and video_format(records["rung"]) == ("h264", 320, 180), (count, in_order)


@pytest.mark.media
def test_private_destinations_are_refused_unless_allowed(tmp_path: Path) -> None:
    """With the default config a push to this machine is refused at connect time (FAILED, with the reason) and the
    receiver never sees it; the other tests here allow private networks and the same pushes arrive."""
    receiver = Receiver(tmp_path / "receiver").start()
    server = run_server(small_config(tmp_path / "data"))
    publisher = None
    try:
        stream = server.create_stream()
        sid = stream["id"]
        for name, host in (("literal", "127.0.0.1"), ("named", "localhost")):
            assert server.api("POST", f"/api/streams/{sid}/simulcast-targets",
                              {"kind": "rtmp", "name": name, "url": f"rtmp://{host}:{receiver.port}/live2",
                               "key": f"{name}-key"})[0] == 201
        publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=5, fps=FPS)
        failed = wait_for(lambda: (s := statuses(server, sid)) and all(t["status"] == "FAILED" for t in s.values()) and s,
                          "both pushes FAILED")
        assert failed["literal"]["error"].startswith("refused: destination 127.0.0.1 is a loopback address"), failed
        assert "loopback" in failed["named"]["error"] and "allow_private_networks" in failed["named"]["error"], failed
        publisher.join(60)
        assert publisher.error is None
    finally:
        if publisher is not None and not publisher.finished:
            publisher.kill()
        server.stop()
        receiver.kill()
    assert receiver.recordings() == []
    # No push ever reached it: the one connection nginx logged is Receiver.start's readiness probe.
    assert (receiver.folder / "error.log").read_text().count("client connected") == 1


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from module_browser()


@pytest.mark.media
@pytest.mark.browser
def test_console_simulcast_section(tmp_path: Path, browser: Any) -> None:
    receiver = Receiver(tmp_path / "receiver").start()
    server = run_server(loopback_config(tmp_path / "data", reconnect_window=1.0))
    page = signed_in_page(browser, server, ADMIN_TOKEN)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda dialog: dialog.accept())
    publisher = None
    try:
        stream = server.create_stream("Simulcast Sunday")
        page.goto(f"{server.http}/admin#/stream/{stream['id']}")
        page.wait_for_selector("#simulcast-form")
        page.select_option("#simulcast-kind", "rtmp")
        page.fill("#simulcast-name", "Test receiver")
        page.fill("#simulcast-url", f"rtmp://127.0.0.1:{receiver.port}/live2")
        page.fill("#simulcast-key", "console-secret-key")
        page.select_option("#simulcast-rendition", "144p")
        page.click("#simulcast-form button[type=submit]")
        item = page.locator("#simulcast-list li", has_text="Test receiver")
        item.locator("text=PENDING").wait_for()
        assert item.locator(".simulcast-rendition").inner_text() == "144p"
        assert page.input_value("#simulcast-key") == ""  # the form forgets the key once it is sent
        publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=12, fps=FPS)
        item.locator(".badge", has_text="LIVE").wait_for(timeout=45_000)
        assert "console-secret-key" not in page.content()
        screenshot(page, "simulcast-live")
        item.locator("button", has_text="Pause").click()
        item.locator(".badge", has_text="PAUSED").wait_for()
        # Paused in the console means no push: the receiver's recording of it is closed.
        target = statuses(server, stream["id"])["Test receiver"]
        assert not target["enabled"] and target["status"] == "PENDING"
        item.locator("button", has_text="Remove").click()
        page.locator("#simulcast-list li", has_text="No targets").wait_for()
        assert statuses(server, stream["id"]) == {}
        assert errors == []
    finally:
        if publisher is not None and not publisher.finished:
            publisher.kill()
        page.context.close()
        server.stop()
        receiver.kill()
    assert video_format(receiver.recordings()[-1]) == ("h264", 256, 144)  # the quality chosen in the console
    reds, _ = decoded_video(receiver.recordings()[-1])
    assert len(reds) > FPS and consecutive(reds) > 0.9, consecutive(reds)
