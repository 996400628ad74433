"""Media playlist rendering: the pre-rendered entry blocks a long DVR playlist uses give the same text as
rendering every entry afresh, with and without LL-HLS parts, discontinuities and delta updates."""
from __future__ import annotations

from packager.playlist import LowLatency, PartEntry, RenditionTrack, SegmentEntry, render_media, window


def track_with(count: int) -> RenditionTrack:
    track = RenditionTrack("360p")
    for i in range(count):
        period = 0 if i < count // 2 else 1
        track.entries.append(SegmentEntry(i, i * 2.0, 2.0, f"360p/seg-{i}.m4s", f"360p/init-{period}.mp4",
                                          1.7e9 + i * 2.0, 400_000 + i, discontinuity=i == count // 2, period=period))
    return track


def test_blocks_render_the_same_text() -> None:
    track = track_with(200)
    last = track.entries[-1].sequence
    ll = LowLatency(0.5, [PartEntry(last, i, 0.5, f"360p/part-{last}.{i}.m4s", i == 0) for i in range(4)]
                    + [PartEntry(last + 1, 0, 0.5, f"360p/part-{last + 1}.0.m4s", True)], "360p/part-201.1.m4s")
    for dvr in (7200.0, 60.0):
        entries = window(track.entries, dvr, 6)
        blocks = track.blocks("b/")[len(track.entries) - len(entries):]
        for low_latency in (None, ll):
            for skip in (False, True):
                plain = render_media(entries, all_entries=track.entries, configured_target=2.0, ended=False,
                                     uri_prefix="b/", low_latency=low_latency, skip=skip)
                fast = render_media(entries, all_entries=track.entries, configured_target=2.0, ended=False,
                                    uri_prefix="b/", low_latency=low_latency, skip=skip, blocks=blocks)
                assert plain == fast
    # Entries appended later are rendered too; another prefix starts over.
    track.entries.append(SegmentEntry(200, 400.0, 2.0, "360p/seg-200.m4s", "360p/init-1.mp4", 1.7e9 + 400, 1))
    assert track.blocks("b/")[-1].endswith("b/360p/seg-200.m4s") and len(track.blocks("b/")) == 201
    assert track.blocks("c/")[0].endswith("c/360p/seg-0.m4s")


def test_delta_update_skips_only_what_is_older_than_can_skip_until() -> None:
    track = track_with(100)
    ll = LowLatency(0.5, [], "360p/part-100.0.m4s")
    full = render_media(track.entries, all_entries=track.entries, configured_target=2.0, ended=False, low_latency=ll)
    delta = render_media(track.entries, all_entries=track.entries, configured_target=2.0, ended=False, low_latency=ll,
                         skip=True)
    # CAN-SKIP-UNTIL is six target durations (12 s = 6 segments): 94 of 100 segments are skipped.
    assert "CAN-SKIP-UNTIL=12.0" in full and "#EXT-X-SKIP:SKIPPED-SEGMENTS=94" in delta
    assert delta.count("#EXTINF") == 6 and full.count("#EXTINF") == 100
    tail = full[full.index("#EXT-X-PROGRAM-DATE-TIME", full.index("seg-93.m4s")):]
    assert delta.endswith(tail)
    # The map is written again before the first segment kept; the media sequence stays the full playlist's.
    assert '#EXT-X-MAP:URI="360p/init-1.mp4"' in delta and "#EXT-X-MEDIA-SEQUENCE:0" in delta
