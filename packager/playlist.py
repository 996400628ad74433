"""HLS playlist text (RFC 8216): media playlists with a DVR window, VOD playlists, the master playlist.

Pure data in, text out; the live broadcast keeps the entries, this module only renders them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

VERSION = 7


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    sequence: int
    start: float           # broadcast timeline seconds
    duration: float
    uri: str
    init_uri: str          # EXT-X-MAP of this segment
    program_date_time: float  # unix seconds
    size: int
    discontinuity: bool = False  # first segment after an encoder reconnect


@dataclass(frozen=True, slots=True)
class VariantInfo:
    uri: str
    width: int
    height: int
    codecs: str
    frame_rate: float
    bandwidth: int          # peak bits per second
    average_bandwidth: int


def format_pdt(unix_seconds: float) -> str:
    dt = datetime.fromtimestamp(unix_seconds, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def target_duration(entries: list[SegmentEntry], configured: float) -> int:
    longest = max((round(e.duration) for e in entries), default=0)
    return max(int(math.ceil(configured)), longest, 1)


def window(entries: list[SegmentEntry], dvr_window: float, live_edge_segments: int) -> list[SegmentEntry]:
    """The entries a live playlist lists: the last dvr_window seconds, or the live edge when it is 0."""
    if not entries:
        return []
    if dvr_window <= 0:
        return entries[-live_edge_segments:]
    first = len(entries)
    covered = 0.0
    # Walk back from the edge while the window still has room for the whole segment.
    while first > 0 and covered + entries[first - 1].duration <= dvr_window + 1e-6:
        first -= 1
        covered += entries[first].duration
    first = min(first, len(entries) - 1)
    return entries[first:]


def render_media(
    entries: list[SegmentEntry],
    *,
    all_entries: list[SegmentEntry],
    configured_target: float,
    ended: bool,
    vod: bool = False,
    uri_prefix: str = "",
) -> str:
    """A media playlist over `entries` (a tail of `all_entries`, which fixes the target and
    discontinuity sequence)."""
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{target_duration(all_entries, configured_target)}",
    ]
    first_seq = entries[0].sequence if entries else (all_entries[-1].sequence + 1 if all_entries else 0)
    lines.append(f"#EXT-X-MEDIA-SEQUENCE:{first_seq}")
    dropped_discontinuities = sum(1 for e in all_entries if e.sequence < first_seq and e.discontinuity)
    lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{dropped_discontinuities}")
    if vod:
        lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    current_map = None
    for i, e in enumerate(entries):
        if e.discontinuity and i > 0:
            lines.append("#EXT-X-DISCONTINUITY")
        if e.init_uri != current_map:
            lines.append(f'#EXT-X-MAP:URI="{uri_prefix}{e.init_uri}"')
            current_map = e.init_uri
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_pdt(e.program_date_time)}")
        lines.append(f"#EXTINF:{e.duration:.5f},")
        lines.append(f"{uri_prefix}{e.uri}")
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def render_master(variants: list[VariantInfo]) -> str:
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for v in sorted(variants, key=lambda v: v.bandwidth, reverse=True):
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={v.bandwidth},AVERAGE-BANDWIDTH={v.average_bandwidth},"
            f'RESOLUTION={v.width}x{v.height},CODECS="{v.codecs}",FRAME-RATE={v.frame_rate:.3f}'
        )
        lines.append(v.uri)
    return "\n".join(lines) + "\n"


@dataclass
class RenditionTrack:
    """Everything a broadcast knows about one rendition: its segments and measured bitrates."""

    name: str
    width: int = 0
    height: int = 0
    codecs: str = ""
    frame_rate: float = 0.0
    nominal_bitrate: int = 0
    entries: list[SegmentEntry] = field(default_factory=list)

    def peak_bitrate(self) -> int:
        rates = [e.size * 8 / e.duration for e in self.entries if e.duration > 0.5]
        return int(max([self.nominal_bitrate, *rates]))

    def average_bitrate(self) -> int:
        total = sum(e.duration for e in self.entries)
        if total <= 0:
            return self.nominal_bitrate
        return int(sum(e.size for e in self.entries) * 8 / total)

    def variant(self, uri: str) -> VariantInfo:
        return VariantInfo(
            uri, self.width, self.height, self.codecs, self.frame_rate, self.peak_bitrate(), self.average_bitrate()
        )
