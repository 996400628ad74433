"""storage.backend = "s3": a finished recording moves to the bucket (moto's S3 server) and still plays,
behind the same access check, through the server's URLs; deleting it deletes the objects."""
from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import av
import pytest

from mediaserver.config import ConfigError
from tests.media_source import publish
from tests.s3_server import client, moto_endpoint, new_bucket
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.test_broadcast import wait_for, wait_recording

pytestmark = pytest.mark.media

SECONDS = 4.0
GOP_FRAMES = 30  # publish(): 30 fps, a keyframe every second


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def raw_get(url: str) -> tuple[int, dict[str, str], bytes]:
    """One request, redirects not followed."""
    try:
        with urllib.request.build_opener(NoRedirect).open(url, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def decoded_frames(url: str) -> int:
    with av.open(url, timeout=30) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    yield from moto_endpoint()


def s3_server(tmp_path: Path, endpoint: str, **storage: Any) -> tuple[ServerHandle, str]:
    settings = new_bucket(endpoint)
    config = small_config(tmp_path / "data")
    config.storage.backend = "s3"
    config.storage.s3_bucket = settings.bucket
    config.storage.s3_endpoint_url = endpoint
    config.storage.s3_region = "us-east-1"
    for name, value in storage.items():
        setattr(config.storage, name, value)
    config.validate()
    return run_server(config), settings.bucket


def objects(endpoint: str, bucket: str, prefix: str) -> dict[str, int]:
    pages = client(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


def test_a_private_recording_moves_to_s3_and_plays_from_there(tmp_path: Path, endpoint: str) -> None:
    handle, bucket = s3_server(tmp_path, endpoint, s3_prefix="church", s3_url_seconds=120)
    try:
        status, stream = handle.api("POST", "/api/streams", {"title": "Evening Prayer", "visibility": "PRIVATE"})
        assert status == 201, stream
        sid = stream["id"]
        sent = publish(handle.rtmp_url(stream["stream_key"]), seconds=SECONDS)
        assert handle.api("POST", f"/api/streams/{sid}/end")[0] in (200, 409)  # 409: already ended
        view = wait_recording(handle, sid)
        recording = view["recording"]
        local = tmp_path / "data" / "media" / sid
        wait_for(lambda: not any(p.is_file() for p in local.rglob("*")), 60, "the local copy to go")

        # In the bucket, under the prefix, listed by a client of our own.
        stored = objects(endpoint, bucket, f"church/media/{sid}/")
        names = {key.rsplit("/", 1)[-1] for key in stored}
        assert {"master.m3u8", "180p.m3u8", "recording.mp4", "poster.jpg"} <= names, names
        assert sum(1 for n in names if n.startswith("seg-")) >= SECONDS, names
        mp4_key = next(k for k in stored if k.endswith("/recording.mp4"))
        assert 0 < view["storage_bytes"] <= sum(stored.values())

        # Private on every path: playlist, segment and MP4 refuse without the token, before any redirect.
        for url in (f"{handle.http}/hls/{sid}/master.m3u8", recording["mp4_url"]):
            assert raw_get(url)[0] == 401, url
        status, grant = handle.api("POST", f"/api/streams/{sid}/playback-tokens", {"ttl": 600})
        assert status == 201
        token = grant["token"]

        # The playlist is served (with the token on every URI); a segment and the MP4 redirect to S3.
        status, _, text = raw_get(f"{handle.http}/hls/{sid}/180p.m3u8?token={token}")
        assert status == 200 and "#EXT-X-ENDLIST" in text.decode()
        segment = next(line for line in text.decode().splitlines() if ".m4s" in line and not line.startswith("#"))
        assert f"token={token}" in segment
        status, _, _ = raw_get(f"{handle.http}/hls/{sid}/{segment.split('?')[0]}")
        assert status == 401  # the segment itself without the token
        status, headers, _ = raw_get(f"{handle.http}/hls/{sid}/{segment}")
        assert status == 302 and headers["Location"].startswith(f"{endpoint}/{bucket}/church/media/{sid}/")
        assert "no-store" in headers["Cache-Control"] and "X-Amz-Signature" in headers["Location"]
        assert "X-Amz-Expires=120" in headers["Location"]  # [storage] s3_url_seconds: the signed URL's lifetime
        status, headers, _ = raw_get(f"{recording['mp4_url']}?token={token}")
        assert status == 302 and "recording.mp4" in headers["Location"].split("?")[0]
        with urllib.request.urlopen(f"{recording['mp4_url']}?token={token}", timeout=30) as answer:
            mp4 = answer.read()  # followed to S3
        assert len(mp4) == stored[mp4_key] and mp4[4:8] == b"ftyp"

        # Both play, read by PyAV (FFmpeg follows the redirects): every frame published, within one GOP.
        mp4_frames = decoded_frames(f"{recording['mp4_url']}?token={token}")
        assert abs(mp4_frames - sent) <= GOP_FRAMES, (mp4_frames, sent)
        hls_frames = decoded_frames(f"{handle.http}/hls/{sid}/180p.m3u8?token={token}")
        assert abs(hls_frames - sent) <= GOP_FRAMES, (hls_frames, sent)

        # Retention (a fake clock, 31 days on) drops the segments in the bucket and keeps the MP4 there.
        assert handle.server.retention is not None
        report = handle.call(handle.server.retention.run_once(time.time() + 31 * 86400))
        assert report.segments_dropped == [recording["id"]]
        assert list(objects(endpoint, bucket, f"church/media/{sid}/")) == [mp4_key]
        with urllib.request.urlopen(f"{recording['mp4_url']}?token={token}", timeout=30) as answer:
            assert answer.read() == mp4

        # Deleting the stream deletes its objects.
        assert handle.api("DELETE", f"/api/streams/{sid}")[0] == 204
        assert objects(endpoint, bucket, f"church/media/{sid}/") == {}
    finally:
        handle.stop()


def test_keep_local_keeps_both_copies(tmp_path: Path, endpoint: str) -> None:
    handle, bucket = s3_server(tmp_path, endpoint, s3_keep_local=True)
    try:
        stream = handle.create_stream()
        publish(handle.rtmp_url(stream["stream_key"]), seconds=2.0)
        handle.api("POST", f"/api/streams/{stream['id']}/end")
        wait_recording(handle, stream["id"])
        local = tmp_path / "data" / "media" / stream["id"]

        def on_disk() -> dict[str, int]:
            return {p.relative_to(tmp_path / "data").as_posix(): p.stat().st_size
                    for p in local.rglob("*") if p.is_file() and not p.name.startswith(".")}

        # The same files with the same sizes in both places, once the upload is through.
        wait_for(lambda: on_disk() == objects(endpoint, bucket, f"media/{stream['id']}/"), 60, "the upload")
        assert any(key.endswith("/recording.mp4") for key in on_disk())
    finally:
        handle.stop()


def test_a_bucket_that_does_not_answer_stops_the_start(tmp_path: Path, endpoint: str) -> None:
    config = small_config(tmp_path / "data")
    config.storage.backend = "s3"
    config.storage.s3_bucket = "no-such-bucket"
    config.storage.s3_endpoint_url = endpoint
    with pytest.raises(ConfigError, match="'no-such-bucket' not found"):
        run_server(config)


def test_switching_to_s3_moves_the_recordings_made_before(tmp_path: Path, endpoint: str) -> None:
    """Recordings made with the local back-end (or left behind by a failed upload) move at the next start."""
    handle = run_server(small_config(tmp_path / "data"))
    try:
        stream = handle.create_stream()
        publish(handle.rtmp_url(stream["stream_key"]), seconds=2.0)
        handle.api("POST", f"/api/streams/{stream['id']}/end")
        wait_recording(handle, stream["id"])
    finally:
        handle.stop()
    local = tmp_path / "data" / "media" / stream["id"]
    before = {p.relative_to(tmp_path / "data").as_posix(): p.stat().st_size
              for p in local.rglob("*") if p.is_file() and not p.name.startswith(".")}
    assert any(key.endswith("/recording.mp4") for key in before)
    handle, bucket = s3_server(tmp_path, endpoint)
    try:
        wait_for(lambda: not any(p.is_file() for p in local.rglob("*")), 60, "the local copy to go")
        assert objects(endpoint, bucket, f"media/{stream['id']}/") == before  # every file, every byte
        status, _, master = handle.get(f"/hls/{stream['id']}/master.m3u8")
        assert status == 200 and b"#EXT-X-STREAM-INF" in master
    finally:
        handle.stop()
