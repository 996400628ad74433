"""Prometheus /metrics: parsed with prometheus_client's own parser, checked against what the test did and
measured itself; only this machine (or the metrics token) may read it."""
from __future__ import annotations

import shutil
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.media_source import start_publisher
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.test_broadcast import stream_status, wait_for


def scrape(server: ServerHandle, headers: dict[str, str] | None = None) -> tuple[int, dict[tuple[str, tuple], float]]:
    request = urllib.request.Request(server.http + "/metrics", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return status, samples


@pytest.mark.media
def test_metrics_follow_a_live_stream(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data"))
    try:
        stream = server.create_stream()
        publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=8, gop_seconds=1.0)
        wait_for(lambda: stream_status(server, stream["id"])["status"] == "LIVE", 20, "LIVE")

        def measured() -> dict | None:
            status, samples = scrape(server)
            assert status == 200
            key = ("mediaserver_ingest_keyframe_interval_seconds", (("stream", stream["id"]),))
            return samples if key in samples else None

        samples = wait_for(measured, 10, "the ingest measured")
        sid = (("stream", stream["id"]),)
        assert samples[("mediaserver_streams", (("state", "LIVE"),))] == 1
        assert samples[("mediaserver_ingest_keyframe_interval_seconds", sid)] == pytest.approx(1.0, abs=0.05)
        assert samples[("mediaserver_ingest_frame_rate", sid)] == pytest.approx(30, abs=1.5)
        assert samples[("mediaserver_ingest_bitrate_bits_per_second", (("stream", stream["id"]), ("track", "video")))] > 0
        free = shutil.disk_usage(tmp_path).free
        assert samples[("mediaserver_disk_free_bytes", ())] == pytest.approx(free, rel=0.05)
        # Requests counted: the GETs this test makes between two scrapes all show.
        before = samples.get(("mediaserver_http_requests_total", (("method", "GET"), ("status", "2xx"))), 0)
        for _ in range(7):
            assert server.get(f"/hls/{stream['id']}/master.m3u8")[0] == 200
        _, after = scrape(server)
        # 7 playlists + the previous scrape itself (counted once answered)
        assert after[("mediaserver_http_requests_total", (("method", "GET"), ("status", "2xx")))] >= before + 8
        # Viewers: those playlist requests are one player (this test's urllib); another player, from the same
        # address (a church Wi-Fi) but another program, is a second viewer.
        assert after[("mediaserver_viewers", sid)] == 1
        other = urllib.request.Request(f"{server.http}/hls/{stream['id']}/master.m3u8",
                                       headers={"User-Agent": "VLC/3.0.18 LibVLC/3.0.18"})
        with urllib.request.urlopen(other, timeout=10) as response:
            assert response.status == 200
        assert scrape(server)[1][("mediaserver_viewers", sid)] == 2
        publisher.join(30)
    finally:
        server.stop()


def test_metrics_are_private(tmp_path: Path) -> None:
    server = run_server(small_config(tmp_path / "data"))
    try:
        assert scrape(server)[0] == 200  # loopback, straight to the socket
        assert scrape(server, {"X-Forwarded-For": "203.0.113.9"})[0] == 403  # through a proxy on this box
    finally:
        server.stop()
    config = small_config(tmp_path / "data2")
    config.server.metrics_token = "m-secret-token"
    server = run_server(config)
    try:
        assert scrape(server)[0] == 403
        assert scrape(server, {"Authorization": "Bearer wrong"})[0] == 403
        status, samples = scrape(server, {"Authorization": "Bearer m-secret-token"})
        assert status == 200 and ("mediaserver_webhook_queue_depth", ()) in samples
    finally:
        server.stop()
