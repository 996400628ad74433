"""Media storage: a stream's media goes with it, recordings can be deleted, retention trims old recordings to their
MP4 (and, if configured, deletes them), and the API shows the bytes each stream keeps. No media encoding needed:
recordings are laid out on disk as the packager writes them, with back-dated rows."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from mediaserver.config import Config, ConfigError, load_config
from mediaserver.retention import DAY
from storage.local import LocalStore
from tests.server_fixture import ServerHandle, run_server, small_config

SEGMENT = b"\x00" * 1000
MP4 = b"\x01" * 3000


@pytest.fixture
def server(tmp_path: Path) -> Any:
    handle = run_server(small_config(tmp_path / "data"))
    yield handle
    handle.stop()


def fake_recording(server: ServerHandle, stream_id: str, *, age_days: float = 0.0, mp4: bool = True,
                   status: str = "READY") -> dict[str, Any]:
    """A finished broadcast's folder as the packager leaves it (playlists, init and media segments, index, MP4),
    and its recording row saved `age_days` ago."""
    db = server.server.db
    broadcast = db.create_broadcast(stream_id, "media")
    db.update_broadcast(broadcast["id"], ended_at=time.time(), status="ENDED")
    folder = Path(server.server.config.server.data_dir) / broadcast["key_prefix"]
    for rendition in ("360p", "180p"):
        (folder / rendition).mkdir(parents=True)
        (folder / rendition / "init-0.mp4").write_bytes(b"init")
        for n in range(3):
            (folder / rendition / f"seg-{n}.m4s").write_bytes(SEGMENT)
        (folder / f"{rendition}.m3u8").write_text("#EXTM3U\n")
    (folder / "master.m3u8").write_text("#EXTM3U\n")
    (folder / "index-0.jsonl").write_text("{}\n")
    if mp4:
        (folder / "recording.mp4").write_bytes(MP4)
    return db.add_recording(
        stream_id=stream_id, broadcast_id=broadcast["id"], duration=6.0, size=6 * len(SEGMENT),
        mp4_size=len(MP4) if mp4 else None, playlist_key=f"{broadcast['key_prefix']}/master.m3u8",
        mp4_key=f"{broadcast['key_prefix']}/recording.mp4" if mp4 else None, status=status, error=None,
        created_at=time.time() - age_days * DAY)


def folder_of(server: ServerHandle, recording: dict[str, Any]) -> Path:
    return Path(server.server.config.server.data_dir) / recording["playlist_key"].rsplit("/", 1)[0]


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_deleting_a_stream_deletes_its_media(server: ServerHandle) -> None:
    stream = server.create_stream()
    first = fake_recording(server, stream["id"])
    fake_recording(server, stream["id"])
    media = Path(server.server.config.server.data_dir) / "media" / stream["id"]
    assert files(media)
    other = server.create_stream("Other")
    kept = fake_recording(server, other["id"])
    assert server.api("DELETE", f"/api/streams/{stream['id']}")[0] == 204
    assert not media.exists()
    assert server.server.db.recording_for_broadcast(first["broadcast_id"]) is None
    assert files(folder_of(server, kept)), "another stream's media is untouched"
    # Not while its recording is still being written.
    saving = server.create_stream("Saving")
    fake_recording(server, saving["id"], status="PROCESSING")
    assert server.api("DELETE", f"/api/streams/{saving['id']}")[0] == 409


def test_storage_bytes_on_the_stream_view(server: ServerHandle) -> None:
    stream = server.create_stream()
    assert stream["storage_bytes"] == 0
    fake_recording(server, stream["id"])
    fake_recording(server, stream["id"], mp4=False)
    status, view = server.api("GET", f"/api/streams/{stream['id']}")
    assert status == 200 and view["storage_bytes"] == 2 * 6 * len(SEGMENT) + len(MP4)
    listing = server.api("GET", "/api/streams")[1]
    assert [s["storage_bytes"] for s in listing["streams"] if s["id"] == stream["id"]] == [view["storage_bytes"]]
    schema = server.get("/api/openapi.json")
    assert b"storage_bytes" in schema[2]


def test_old_recordings_keep_only_their_mp4(server: ServerHandle) -> None:
    old_stream, new_stream, no_mp4_stream = server.create_stream("Old"), server.create_stream("New"), server.create_stream("No MP4")
    old = fake_recording(server, old_stream["id"], age_days=31)
    new = fake_recording(server, new_stream["id"], age_days=29)
    no_mp4 = fake_recording(server, no_mp4_stream["id"], age_days=31, mp4=False)
    new_files, no_mp4_files = files(folder_of(server, new)), files(folder_of(server, no_mp4))
    assert server.server.retention is not None
    report = server.call(server.server.retention.run_once())
    assert report.segments_dropped == [old["id"]]
    assert files(folder_of(server, old)) == {"recording.mp4"}
    assert files(folder_of(server, new)) == new_files
    assert files(folder_of(server, no_mp4)) == no_mp4_files, "without an MP4 the segments are all there is"
    # The recording now plays as its MP4, and the API says so.
    view = server.api("GET", f"/api/streams/{old_stream['id']}")[1]
    recording = view["recording"]
    assert recording["playback_type"] == "mp4" and recording["segments_deleted_at"]
    assert recording["playback_url"] == recording["mp4_url"] == view["playback_url"]
    assert recording["playback_url"].endswith(f"/hls/{old_stream['id']}/{old['broadcast_id']}/recording.mp4")
    assert view["storage_bytes"] == len(MP4)
    status, _headers, body = server.get(recording["mp4_url"])
    assert status == 200 and body == MP4
    fresh = server.api("GET", f"/api/streams/{new_stream['id']}")[1]["recording"]
    assert fresh["playback_type"] == "hls" and fresh["playback_url"].endswith("/master.m3u8")
    # A second pass finds nothing more to do.
    assert server.call(server.server.retention.run_once()).segments_dropped == []


def test_a_fake_clock_ages_recordings_and_keep_recordings_days_deletes_them(tmp_path: Path) -> None:
    config = small_config(tmp_path / "data")
    config.storage.keep_recordings_days = 90
    handle = run_server(config)
    try:
        stream = handle.create_stream()
        recording = fake_recording(handle, stream["id"])
        retention = handle.server.retention
        assert retention is not None
        now = time.time()
        assert handle.call(retention.run_once(now + 10 * DAY)).segments_dropped == []
        assert handle.call(retention.run_once(now + 31 * DAY)).segments_dropped == [recording["id"]]
        assert files(folder_of(handle, recording)) == {"recording.mp4"}
        report = handle.call(retention.run_once(now + 91 * DAY))
        assert report.recordings_deleted == [recording["id"]] and report.bytes_freed == len(MP4)
        assert not folder_of(handle, recording).exists()
        view = handle.api("GET", f"/api/streams/{stream['id']}")[1]
        assert view["recording"] is None and view["storage_bytes"] == 0
    finally:
        handle.stop()


def test_the_retention_task_runs_by_itself(tmp_path: Path) -> None:
    config = small_config(tmp_path / "data")
    config.storage.retention_interval = 0.2
    handle = run_server(config)
    try:
        stream = handle.create_stream()
        recording = fake_recording(handle, stream["id"], age_days=40)
        deadline = time.monotonic() + 10
        while files(folder_of(handle, recording)) != {"recording.mp4"}:
            assert time.monotonic() < deadline, files(folder_of(handle, recording))
            time.sleep(0.1)
    finally:
        handle.stop()


def test_keep_forever_with_zero(tmp_path: Path) -> None:
    config = small_config(tmp_path / "data")
    config.storage.keep_segments_days = 0
    handle = run_server(config)
    try:
        stream = handle.create_stream()
        recording = fake_recording(handle, stream["id"], age_days=3650)
        before = files(folder_of(handle, recording))
        assert handle.server.retention is not None
        report = handle.call(handle.server.retention.run_once())
        assert report.segments_dropped == [] and report.recordings_deleted == []
        assert files(folder_of(handle, recording)) == before
    finally:
        handle.stop()


def test_delete_one_recording(server: ServerHandle) -> None:
    stream = server.create_stream()
    older = fake_recording(server, stream["id"], age_days=1)
    latest = fake_recording(server, stream["id"])
    busy = fake_recording(server, stream["id"], status="PROCESSING", age_days=2)
    base = f"/api/streams/{stream['id']}/recordings"
    assert server.api("DELETE", f"{base}/nope")[0] == 404
    assert server.api("DELETE", f"/api/streams/nope/recordings/{latest['id']}")[0] == 404
    assert server.api("DELETE", f"{base}/{busy['id']}")[0] == 409
    assert server.api("DELETE", f"{base}/{latest['id']}")[0] == 204
    assert not folder_of(server, latest).exists()
    assert files(folder_of(server, older))
    view = server.api("GET", f"/api/streams/{stream['id']}")[1]
    assert view["recording"]["id"] == older["id"]  # the next newest
    assert server.api("DELETE", f"{base}/{latest['id']}")[0] == 404


def test_store_deletes_a_folder_but_what_it_keeps(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write("media/s/b/720p/seg-1.m4s", b"x" * 10)
    store.write("media/s/b/master.m3u8", b"y" * 5)
    store.write("media/s/b/recording.mp4", b"z" * 7)
    assert store.usage("media/s") == 22 and store.usage("media/none") == 0
    assert store.delete_prefix("media/s/b", keep=("media/s/b/recording.mp4",)) == 15
    assert store.list("media/s") == ["media/s/b/recording.mp4"]
    assert store.delete_prefix("media/s") == 7
    assert not (tmp_path / "media" / "s").exists() and (tmp_path / "media").is_dir()
    assert store.delete_prefix("media/missing") == 0


def test_retention_settings_load_and_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[storage]\nkeep_segments_days = 7\nkeep_recordings_days = 365\n")
    config = load_config(path)
    assert (config.storage.keep_segments_days, config.storage.keep_recordings_days) == (7.0, 365.0)
    assert Config().storage.keep_segments_days == 30 and Config().storage.keep_recordings_days == 0
    path.write_text("[storage]\nkeep_segments_days = -1\n")
    with pytest.raises(ConfigError, match="keep_segments_days"):
        load_config(path)
    repo_config = load_config(Path(__file__).parent.parent / "config.toml")
    assert repo_config.storage.keep_segments_days == 30


@pytest.mark.media
def test_a_real_recording_end_to_end(tmp_path: Path) -> None:
    """Publish, refuse deletion while on air, end; retention (fake clock) leaves a playable MP4; delete frees all."""
    from tests.media_source import start_publisher
    from tests.test_broadcast import stream_status, wait_for, wait_recording

    handle = run_server(small_config(tmp_path / "data"))
    try:
        stream = handle.create_stream()
        publisher = start_publisher(handle.rtmp_url(stream["stream_key"]), seconds=30.0)
        try:
            wait_for(lambda: stream_status(handle, stream["id"])["status"] == "LIVE", 20, "LIVE")
            status, body = handle.api("DELETE", f"/api/streams/{stream['id']}")
            assert status == 409 and "on air" in body["error"]
            time.sleep(2)
            assert handle.api("POST", f"/api/streams/{stream['id']}/end")[0] == 200
        finally:
            publisher.kill()
        view = wait_recording(handle, stream["id"])
        media = Path(handle.server.config.server.data_dir) / "media" / stream["id"]
        on_disk = sum(p.stat().st_size for p in media.rglob("*") if p.is_file())
        recording = view["recording"]
        assert 0 < view["storage_bytes"] <= on_disk and recording["playback_type"] == "hls"
        assert handle.server.retention is not None
        report = handle.call(handle.server.retention.run_once(time.time() + 31 * DAY))
        assert report.segments_dropped == [recording["id"]]
        after = handle.api("GET", f"/api/streams/{stream['id']}")[1]
        assert after["recording"]["playback_url"] == recording["mp4_url"] == after["playback_url"]
        assert after["storage_bytes"] == recording["size"]  # the MP4's bytes
        status, headers, mp4 = handle.get(recording["mp4_url"])
        assert status == 200 and len(mp4) == recording["size"] and mp4[4:8] == b"ftyp"
        assert [p.name for p in media.rglob("*") if p.is_file()] == ["recording.mp4"]
        assert handle.api("DELETE", f"/api/streams/{stream['id']}")[0] == 204
        assert not media.exists()
    finally:
        handle.stop()
