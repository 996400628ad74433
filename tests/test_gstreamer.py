"""A second encoder stack: GStreamer's rtmp2sink (Debian's gstreamer1.0-plugins-bad), whose timestamps are
less regular than PyAV's — the source that showed FRAME-RATE=32.258 for a 30 fps picture."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.hls_reader import parse_master, parse_media
from tests.server_fixture import run_server, small_config
from tests.test_broadcast import wait_for, wait_recording


def gstreamer_publish(url: str, seconds: int, fps: int = 30) -> subprocess.Popen[bytes]:
    frames = seconds * fps
    pipeline = (
        f"videotestsrc is-live=true num-buffers={frames} pattern=ball "
        f"! video/x-raw,width=320,height=180,framerate={fps}/1 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bitrate=600 ! h264parse "
        f"! flvmux name=mux streamable=true ! rtmp2sink location={url} "
        f"audiotestsrc is-live=true num-buffers={seconds * 48000 // 1024} samplesperbuffer=1024 "
        f"! audio/x-raw,rate=48000,channels=2 ! audioconvert ! voaacenc ! aacparse ! mux."
    )
    return subprocess.Popen(["gst-launch-1.0", "-e", "-q", *pipeline.split()], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


@pytest.mark.media
def test_gstreamer_rtmp2sink_plays_with_the_right_frame_rate(tmp_path: Path) -> None:
    assert shutil.which("gst-launch-1.0"), "GStreamer is installed by .ci/run (gstreamer1.0-tools, -plugins-bad)"
    server = run_server(small_config(tmp_path / "data", reconnect_window=0.5))
    try:
        stream = server.create_stream("GStreamer service")
        publisher = gstreamer_publish(server.rtmp_url(stream["stream_key"]), seconds=6)
        master = wait_for(lambda: (r := server.get(f"/hls/{stream['id']}/master.m3u8"))[0] == 200 and r[2].decode(),
                          30, "a live master playlist")
        rates = {attrs["FRAME-RATE"] for attrs, _ in parse_master(master)}
        assert rates == {"30.000"}, master
        out, err = publisher.communicate(timeout=60)
        assert publisher.returncode == 0, err.decode(errors="replace")
        recording = wait_recording(server, stream["id"])["recording"]
        base = recording["playback_url"].rsplit("/", 1)[0]
        variants = parse_master(server.get(recording["playback_url"])[2].decode())
        playlist = parse_media(server.get(f"{base}/{variants[0][1]}")[2].decode())
        assert playlist.ended and 5.0 <= playlist.duration <= 7.0, playlist.duration
        assert 5.0 <= recording["duration"] <= 7.0
    finally:
        server.stop()
