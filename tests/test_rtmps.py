"""RTMPS: RTMP inside TLS on its own port, when the server has a certificate. Published by the ffmpeg CLI
(its own TLS stack) with the same stream key; a client that doesn't speak TLS there is dropped, and the
plain RTMP port keeps working."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from mediaserver.server import banner
from tests.server_fixture import run_server, small_config
from tests.hls_reader import parse_media
from tests.test_broadcast import fetch_text, stream_status, wait_recording
from tests.test_https import self_signed

pytestmark = [pytest.mark.media, pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg CLI")]


def test_obs_can_publish_over_rtmps(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    config = small_config(tmp_path / "data", reconnect_window=4.0)
    config.server.tls_cert, config.server.tls_key = str(cert), str(key)
    config.server.https_port = config.server.rtmps_port = 0
    server = run_server(config)
    try:
        port = server.server.rtmps_port
        assert port and port != server.rtmp_port
        stream = server.create_stream()
        assert stream["rtmps_url"] == f"rtmps://127.0.0.1:{port}/live"
        assert "rtmps://" in banner(config, server.server) and f":{port}/live" in banner(config, server.server)
        # Plain RTMP bytes on the TLS port: not a TLS handshake, the connection is closed; nothing else breaks.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            raw.sendall(b"\x03" + b"\x00" * 1536)
            raw.settimeout(5)
            assert raw.recv(4096)[:1] in (b"", b"\x15")  # closed, or a TLS alert
        url = f"{stream['rtmps_url']}/{stream['stream_key']}"
        push = ["ffmpeg", "-v", "error", "-re", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30",
                "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "3",
                "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p",
                "-c:a", "aac", "-f", "flv", url]
        subprocess.run(push, check=True, timeout=60)
        # The encoder drops and comes back inside the reconnect window: one broadcast, one recording.
        subprocess.run(push, check=True, timeout=60)
        recording = wait_recording(server, stream["id"])["recording"]
        playlist = parse_media(fetch_text(server, recording["playback_url"].rsplit("/", 1)[0] + "/180p.m3u8"))
        assert playlist.discontinuities == 1 and abs(playlist.duration - 6.0) <= 1.2, playlist.duration
        assert len(os.listdir(tmp_path / "data" / "media" / stream["id"])) == 1
        # A wrong key over TLS is refused like over plain RTMP.
        refused = subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30",
                                  "-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-f", "flv",
                                  f"{stream['rtmps_url']}/not-a-key"], capture_output=True, timeout=60)
        assert refused.returncode != 0
        assert stream_status(server, stream["id"])["status"] == "ENDED"
    finally:
        server.stop()


def test_without_a_certificate_there_is_no_rtmps(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data"))
    try:
        assert server.server.rtmps_port is None
        assert server.create_stream()["rtmps_url"] is None
        assert "rtmps://" not in banner(server.server.config, server.server)
    finally:
        server.stop()
