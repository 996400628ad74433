"""HLS playlist text (RFC 8216): media playlists with a DVR window, VOD playlists, the master playlist.

Pure data in, text out; the live broadcast keeps the entries, this module only renders them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

VERSION = 7
LL_VERSION = 9  # EXT-X-SKIP (delta updates) needs version 9


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
    period: int = 0              # encoder connection (0, 1, ...) inside the broadcast


@dataclass(frozen=True, slots=True)
class PartEntry:
    sequence: int      # media sequence of the parent segment
    index: int         # from 0 inside the segment
    duration: float
    uri: str
    independent: bool  # begins with a keyframe


@dataclass(frozen=True, slots=True)
class RenditionReport:
    uri: str
    last_msn: int
    last_part: int


@dataclass(frozen=True, slots=True)
class LowLatency:
    """The LL-HLS view of a live media playlist (RFC 8216bis 4.4.3.7–4.4.5.3)."""

    part_target: float
    parts: list[PartEntry]          # of the listed segments and the open one, oldest first
    preload_uri: str | None         # the next part, announced before it exists
    reports: list[RenditionReport] = field(default_factory=list)

    @property
    def part_hold_back(self) -> float:
        return 3 * self.part_target  # the spec's minimum: three part targets

    def can_skip_until(self, target: int) -> float:
        return 6.0 * target  # the spec's minimum: six target durations


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


def entry_lines(entry: SegmentEntry, uri_prefix: str) -> str:
    """The lines every media playlist writes for a segment (its date, duration and URI)."""
    return (f"#EXT-X-PROGRAM-DATE-TIME:{format_pdt(entry.program_date_time)}\n"
            f"#EXTINF:{entry.duration:.5f},\n{uri_prefix}{entry.uri}")


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
    low_latency: LowLatency | None = None,
    skip: bool = False,
    blocks: list[str] | None = None,
) -> str:
    """A media playlist over `entries` (a tail of `all_entries`, which fixes the target and
    discontinuity sequence). With `low_latency`, the LL-HLS tags: parts of the last three target
    durations, the preload hint and rendition reports; `skip` then makes a delta update (EXT-X-SKIP
    for the segments older than CAN-SKIP-UNTIL). `blocks`, aligned with `entries`, are their entry_lines
    rendered earlier (a two-hour playlist has 3,600: formatting every date again would take ~30 ms)."""
    target = target_duration(all_entries, configured_target)
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{LL_VERSION if low_latency else VERSION}",
        f"#EXT-X-TARGETDURATION:{target}",
    ]
    if low_latency is not None:
        lines.append(f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={low_latency.part_hold_back:.3f},"
                     f"CAN-SKIP-UNTIL={low_latency.can_skip_until(target):.1f}")
        lines.append(f"#EXT-X-PART-INF:PART-TARGET={low_latency.part_target:.3f}")
    first_seq = entries[0].sequence if entries else (all_entries[-1].sequence + 1 if all_entries else 0)
    lines.append(f"#EXT-X-MEDIA-SEQUENCE:{first_seq}")
    dropped_discontinuities = sum(1 for e in all_entries if e.sequence < first_seq and e.discontinuity)
    lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{dropped_discontinuities}")
    if vod:
        lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    lines.append("#EXT-X-INDEPENDENT-SEGMENTS")
    skipped = 0
    if low_latency is not None and skip:
        skipped = skippable(entries, low_latency.can_skip_until(target))
        if skipped:
            lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
    parts_of: dict[int, list[PartEntry]] = {}
    for part in low_latency.parts if low_latency is not None else []:
        parts_of.setdefault(part.sequence, []).append(part)
    current_map = None
    for i, e in enumerate(entries):
        if i < skipped:
            continue
        if e.discontinuity and i > 0:
            lines.append("#EXT-X-DISCONTINUITY")
        if e.init_uri != current_map:
            lines.append(f'#EXT-X-MAP:URI="{uri_prefix}{e.init_uri}"')
            current_map = e.init_uri
        parts = parts_of.pop(e.sequence, None)
        if parts is None and blocks is not None:
            lines.append(blocks[i])
            continue
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_pdt(e.program_date_time)}")
        lines.extend(_part_lines(parts or [], uri_prefix))
        lines.append(f"#EXTINF:{e.duration:.5f},")
        lines.append(f"{uri_prefix}{e.uri}")
    if low_latency is not None and not ended:
        # The open segment: its parts so far, then the hint for the next one.
        for sequence in sorted(parts_of):
            lines.extend(_part_lines(parts_of[sequence], uri_prefix))
        if low_latency.preload_uri:
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{uri_prefix}{low_latency.preload_uri}"')
        for report in low_latency.reports:
            lines.append(f'#EXT-X-RENDITION-REPORT:URI="{report.uri}",LAST-MSN={report.last_msn},'
                         f"LAST-PART={report.last_part}")
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _part_lines(parts: list[PartEntry], uri_prefix: str) -> list[str]:
    return [f'#EXT-X-PART:DURATION={p.duration:.5f},URI="{uri_prefix}{p.uri}"'
            + (",INDEPENDENT=YES" if p.independent else "") for p in parts]


def skippable(entries: list[SegmentEntry], skip_until: float) -> int:
    """How many of the oldest listed segments a delta update replaces: those wholly older than
    skip_until seconds before the end of the playlist (RFC 8216bis 4.4.5.2). Their tags go with them
    (the client has them from its last full playlist); the map is written again before the first one kept."""
    end = sum(e.duration for e in entries)
    skipped, elapsed = 0, 0.0
    for e in entries:
        if end - (elapsed + e.duration) < skip_until:
            break
        elapsed += e.duration
        skipped += 1
    return skipped


def render_master(variants: list[VariantInfo]) -> str:
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    for v in sorted(variants, key=lambda v: v.bandwidth, reverse=True):
        # An audio-only variant (no picture: width = height = 0) has no RESOLUTION or FRAME-RATE.
        picture = f",RESOLUTION={v.width}x{v.height}" if v.width and v.height else ""
        rate = f",FRAME-RATE={v.frame_rate:.3f}" if v.width and v.height else ""
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={v.bandwidth},AVERAGE-BANDWIDTH={v.average_bandwidth}"
            f'{picture},CODECS="{v.codecs}"{rate}'
        )
        lines.append(v.uri)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class RenditionFormat:
    """What one rendition looked like during one encoder connection (a reconnect may change the source)."""

    width: int
    height: int
    codecs: str
    frame_rate: float
    nominal_bitrate: int


@dataclass
class RenditionTrack:
    """Everything a broadcast knows about one rendition: its segments, its format per encoder connection
    (period) and measured bitrates. width/height/... are the latest connection's."""

    name: str
    width: int = 0
    height: int = 0
    codecs: str = ""
    frame_rate: float = 0.0
    nominal_bitrate: int = 0
    entries: list[SegmentEntry] = field(default_factory=list)
    formats: dict[int, RenditionFormat] = field(default_factory=dict)
    _blocks: list[str] = field(default_factory=list, repr=False)
    _blocks_prefix: str = field(default="", repr=False)

    def blocks(self, uri_prefix: str) -> list[str]:
        """entry_lines of every entry (appended entries are rendered once; entries only ever grow)."""
        if uri_prefix != self._blocks_prefix or len(self._blocks) > len(self.entries):
            self._blocks, self._blocks_prefix = [], uri_prefix
        self._blocks.extend(entry_lines(e, uri_prefix) for e in self.entries[len(self._blocks):])
        return self._blocks

    def set_format(self, period: int, width: int, height: int, codecs: str, frame_rate: float, bitrate: int) -> None:
        self.formats[period] = RenditionFormat(width, height, codecs, frame_rate, bitrate)
        self.width, self.height, self.codecs, self.frame_rate, self.nominal_bitrate = (
            width, height, codecs, frame_rate, bitrate)

    def periods(self) -> set[int]:
        return {e.period for e in self.entries}

    def resolutions(self) -> set[tuple[int, int]]:
        """The sizes this rendition had in the periods it has segments for."""
        return {(f.width, f.height) for p, f in self.formats.items() if p in self.periods()} or {(self.width, self.height)}

    def peak_bitrate(self, entries: list[SegmentEntry] | None = None) -> int:
        rates = [e.size * 8 / e.duration for e in (self.entries if entries is None else entries) if e.duration > 0.5]
        return int(max([self.nominal_bitrate, *rates]))

    def average_bitrate(self, entries: list[SegmentEntry] | None = None) -> int:
        entries = self.entries if entries is None else entries
        total = sum(e.duration for e in entries)
        if total <= 0:
            return self.nominal_bitrate
        return int(sum(e.size for e in entries) * 8 / total)

    def variant(self, uri: str) -> VariantInfo:
        """The variant over the whole broadcast: RESOLUTION the largest it had, CODECS every format used
        (RFC 8216 4.3.4.2: all the formats present in one or more of its segments)."""
        used = [f for p, f in sorted(self.formats.items()) if p in self.periods()]
        if not used:
            return VariantInfo(uri, self.width, self.height, self.codecs, self.frame_rate,
                               self.peak_bitrate(), self.average_bitrate())
        largest = max(used, key=lambda f: f.width * f.height)
        codecs: list[str] = []
        for f in used:
            codecs += [c for c in f.codecs.split(",") if c and c not in codecs]
        return VariantInfo(uri, largest.width, largest.height, ",".join(codecs), max(f.frame_rate for f in used),
                           self.peak_bitrate(), self.average_bitrate())

    def live_variant(self, uri: str, period: int) -> VariantInfo:
        """The variant as the encoder connection `period` produces it now."""
        fmt = self.formats.get(period) or RenditionFormat(self.width, self.height, self.codecs, self.frame_rate,
                                                          self.nominal_bitrate)
        entries = [e for e in self.entries if e.period == period]
        return VariantInfo(uri, fmt.width, fmt.height, fmt.codecs, fmt.frame_rate,
                           max(self.peak_bitrate(entries), fmt.nominal_bitrate), self.average_bitrate(entries))


def current_period(tracks: list[RenditionTrack]) -> int | None:
    """The latest encoder connection that has published a segment (None before the first)."""
    ends = [t.entries[-1].period for t in tracks if t.entries]
    return max(ends) if ends else None


def producing_now(tracks: list[RenditionTrack]) -> list[RenditionTrack]:
    """The rungs the current encoder connection produces: the only ones a live master playlist may list
    (a reconnect at another resolution can drop or add rungs)."""
    period = current_period(tracks)
    return [t for t in tracks if t.entries and t.entries[-1].period == period]


def complete_rungs(tracks: list[RenditionTrack]) -> list[RenditionTrack]:
    """The rungs with segments in every period of the broadcast, for a recording's master playlist. When no
    rung covers every period (the ladder changed completely), those covering the most periods."""
    with_media = [t for t in tracks if t.entries]
    if not with_media:
        return []
    every = set().union(*(t.periods() for t in with_media))
    best = max(len(t.periods() & every) for t in with_media)
    return [t for t in with_media if len(t.periods() & every) == best]
