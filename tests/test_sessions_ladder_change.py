"""Sans-IO checks of what a reconnect at another picture size does to the playlists: the live master lists the
rungs made now, the recording the rungs made throughout, each variant's metadata per encoder connection."""
from __future__ import annotations

from packager.playlist import (
    RenditionTrack,
    SegmentEntry,
    VariantInfo,
    complete_rungs,
    current_period,
    producing_now,
    render_master,
)
from packager.recording import mp4_source
from tests.hls_reader import parse_master


def track(name: str, formats: dict[int, tuple[int, int, str]], periods: list[int]) -> RenditionTrack:
    t = RenditionTrack(name)
    for period, (w, h, codecs) in formats.items():
        t.set_format(period, w, h, codecs, 30.0, 300_000)
    for i, period in enumerate(periods):
        t.entries.append(SegmentEntry(i, float(i), 1.0, f"{name}/seg-{i}.m4s", f"{name}/init-{period}.mp4",
                                      1e9 + i, 40_000, discontinuity=i > 0 and periods[i - 1] != period,
                                      period=period))
    return t


def test_live_master_lists_the_rungs_of_the_current_connection() -> None:
    big = track("180p", {0: (320, 180, "avc1.64000d,mp4a.40.2")}, [0, 0, 0])
    low = track("144p", {0: (256, 144, "avc1.64000c,mp4a.40.2"), 1: (160, 90, "avc1.64000b,mp4a.40.2")},
                [0, 0, 0, 1, 1])
    assert current_period([big, low]) == 1
    assert [t.name for t in producing_now([big, low])] == ["144p"]
    live = low.live_variant("144p.m3u8", 1)
    assert (live.width, live.height, live.codecs) == (160, 90, "avc1.64000b,mp4a.40.2")
    # Over the whole broadcast: the largest size, every codec used.
    vod = low.variant("144p.m3u8")
    assert (vod.width, vod.height) == (256, 144)
    assert vod.codecs == "avc1.64000c,mp4a.40.2,avc1.64000b"
    assert [t.name for t in complete_rungs([big, low])] == ["144p"]
    assert mp4_source([big, low]) is None  # the complete rung changed size: no single-size MP4


def test_mp4_comes_from_the_tallest_rung_that_kept_its_size() -> None:
    big = track("180p", {0: (320, 180, "avc1"), 1: (320, 180, "avc1")}, [0, 1])
    low = track("144p", {0: (256, 144, "avc1"), 1: (256, 144, "avc1")}, [0, 1])
    extra = track("360p", {1: (640, 360, "avc1")}, [1])
    assert {t.name for t in producing_now([big, low, extra])} == {"180p", "144p", "360p"}
    assert {t.name for t in complete_rungs([big, low, extra])} == {"180p", "144p"}
    source = mp4_source([big, low, extra])
    assert source is not None and source.name == "180p"


def test_audio_only_variant_has_no_resolution() -> None:
    text = render_master([VariantInfo("180p.m3u8", 320, 180, "avc1.64000d,mp4a.40.2", 30.0, 400_000, 300_000),
                          VariantInfo("audio.m3u8", 0, 0, "mp4a.40.2", 0.0, 128_000, 128_000)])
    variants = {uri: attrs for attrs, uri in parse_master(text)}
    assert "RESOLUTION" not in variants["audio.m3u8"] and "FRAME-RATE" not in variants["audio.m3u8"]
    assert variants["180p.m3u8"]["RESOLUTION"] == "320x180"
