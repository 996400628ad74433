"""Segmenter cuts, playlist windows and text, the local store and the config: sans-IO units."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from mediaserver.config import ConfigError, load_config
from packager.playlist import RenditionTrack, SegmentEntry, render_master, render_media, window
from storage.local import LocalStore
from storage.store import InvalidKeyError, StorageFullError
from tests.hls_reader import parse_master, parse_media


def entries(n: int, duration: float = 2.0, reconnect_at: int | None = None) -> list[SegmentEntry]:
    out = []
    for i in range(n):
        period = 1 if reconnect_at is not None and i >= reconnect_at else 0
        out.append(SegmentEntry(i, i * duration, duration, f"720p/seg-{i}.m4s", f"720p/init-{period}.mp4",
                                1_700_000_000 + i * duration, 1000, discontinuity=(i == reconnect_at)))
    return out


def test_dvr_window_slides() -> None:
    all_entries = entries(100)
    shown = window(all_entries, dvr_window=60, live_edge_segments=6)
    assert [e.sequence for e in shown] == list(range(70, 100))
    assert [e.sequence for e in window(all_entries, 0, 6)] == list(range(94, 100))
    text = render_media(shown, all_entries=all_entries, configured_target=2.0, ended=False, uri_prefix="b1/")
    playlist = parse_media(text)
    assert playlist.media_sequence == 70 and not playlist.ended and playlist.target_duration == 2
    assert playlist.segments[0][0] == "b1/720p/seg-70.m4s" and playlist.segments[0][2] == "b1/720p/init-0.mp4"
    assert len(playlist.program_date_times) == 30 and playlist.program_date_times[0].endswith("Z")


def test_discontinuity_sequence_counts_what_left_the_window() -> None:
    all_entries = entries(40, reconnect_at=10)
    full = parse_media(render_media(all_entries, all_entries=all_entries, configured_target=2, ended=True, vod=True))
    assert full.discontinuities == 1 and full.vod and full.ended
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:0" in full.text
    tail = window(all_entries, 20, 6)
    text = render_media(tail, all_entries=all_entries, configured_target=2, ended=False)
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1" in text and "#EXT-X-DISCONTINUITY\n" not in text


def test_master_lists_variants_by_bandwidth() -> None:
    tracks = []
    for name, height, rate in [("360p", 360, 700_000), ("720p", 720, 2_800_000)]:
        t = RenditionTrack(name, width=height * 16 // 9, height=height, codecs="avc1.64001f,mp4a.40.2",
                           frame_rate=30.0, nominal_bitrate=rate)
        t.entries = entries(3)
        tracks.append(t)
    variants = parse_master(render_master([t.variant(f"{t.name}.m3u8") for t in tracks]))
    assert [uri for _, uri in variants] == ["720p.m3u8", "360p.m3u8"]
    attrs = variants[0][0]
    assert attrs["RESOLUTION"] == "1280x720" and attrs["CODECS"] == "avc1.64001f,mp4a.40.2"
    assert attrs["FRAME-RATE"] == "30.000" and int(attrs["BANDWIDTH"]) >= 2_800_000


def test_local_store_is_atomic_and_refuses_escapes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write("media/a/b/seg-1.m4s", b"x" * 10)
    assert store.read("media/a/b/seg-1.m4s") == b"x" * 10
    assert store.list("media/a") == ["media/a/b/seg-1.m4s"]
    for bad in ["../x", "/etc/passwd", "a//b", "a/./b", "a/../../b", ""]:
        with pytest.raises(InvalidKeyError):
            store.write(bad, b"")
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs needs root")
def test_full_disk_raises_storage_full_and_leaves_nothing(tmp_path: Path) -> None:
    mount = tmp_path / "small"
    mount.mkdir()
    assert os.system(f"mount -t tmpfs -o size=64k tmpfs {mount}") == 0
    try:
        store = LocalStore(mount)
        store.write("ok.bin", b"1" * 1000)
        with pytest.raises(StorageFullError):
            store.write("big.bin", b"2" * 200_000)
        assert sorted(p.name for p in mount.iterdir()) == ["ok.bin"]  # no half-written file
    finally:
        os.system(f"umount {mount}")


def test_config_errors_name_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[hls]\nsegment_duraton = 2\n")
    with pytest.raises(ConfigError, match="hls.segment_duraton"):
        load_config(path)
    path.write_text("[hls]\nsegment_duration = 'two'\n")
    with pytest.raises(ConfigError, match="segment_duration"):
        load_config(path)
    path.write_text("[[transcode.renditions]]\nname='x'\nheight=721\nvideo_bitrate=100000\n")
    with pytest.raises(ConfigError, match="height"):
        load_config(path)
    # A live playlist must span three target durations (RFC 8216 6.2.2); parts fit a segment at least twice.
    path.write_text("[hls]\nlive_edge_segments = 2\n")
    with pytest.raises(ConfigError, match="live_edge_segments"):
        load_config(path)
    path.write_text("[hls]\npart_target = 1.5\n")
    with pytest.raises(ConfigError, match="part_target"):
        load_config(path)


def test_shipped_config_is_the_defaults() -> None:
    shipped = load_config(Path(__file__).parent.parent / "config.toml")
    assert shipped == load_config(None)
