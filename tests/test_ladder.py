"""The full default ladder from a 1080p source: every rung present, aligned, decodable at its size."""
from __future__ import annotations

from pathlib import Path

import pytest

from mediaserver.config import default_ladder
from tests.hls_reader import decode_segment, parse_master, parse_media
from tests.media_source import start_publisher
from tests.server_fixture import run_server, small_config
from tests.test_broadcast import fetch_text, wait_recording

pytestmark = [pytest.mark.media, pytest.mark.ladder]


def test_full_ladder_from_1080p(tmp_path: Path) -> None:
    config = small_config(tmp_path / "data", renditions=default_ladder(), reconnect_window=0.0)
    config.hls.segment_duration = 2.0
    config.transcode.preset = "veryfast"
    server = run_server(config)
    try:
        stream = server.create_stream("Easter Sunday")
        # 1080p at a low frame rate keeps this within what two cores do in real time.
        publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=5.0,
                                    width=1920, height=1080, fps=10, gop_seconds=2.0)
        publisher.join(90)
        assert publisher.error is None, publisher.error
        body = wait_recording(server, stream["id"], timeout=120)
        base = body["recording"]["playback_url"].rsplit("/", 1)[0]
        variants = parse_master(fetch_text(server, body["recording"]["playback_url"]))
        expected = {"1920x1080", "1280x720", "854x480", "640x360"}
        assert {attrs["RESOLUTION"] for attrs, _ in variants} == expected
        starts = {}
        for attrs, uri in variants:
            width, height = map(int, attrs["RESOLUTION"].split("x"))
            playlist = parse_media(fetch_text(server, f"{base}/{uri}"))
            init = server.get(f"{base}/{playlist.segments[0][2]}")[2]
            rung_starts = []
            for seg_uri, duration, _ in playlist.segments:
                seg = decode_segment(init, server.get(f"{base}/{seg_uri}")[2])
                assert (seg.width, seg.height) == (width, height) and seg.first_is_keyframe
                rung_starts.append(round(seg.first_pts, 3))
            starts[attrs["RESOLUTION"]] = rung_starts
            # The bitrates of the rungs follow the ladder.
            rung = next(r for r in default_ladder() if r.height == height)
            assert int(attrs["BANDWIDTH"]) >= rung.video_bitrate
        assert len({tuple(v) for v in starts.values()}) == 1, starts
    finally:
        server.stop()
