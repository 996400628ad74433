"""Reads HLS back the way a player does: playlists parsed from text, segments decoded with PyAV."""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import av


@dataclass
class MediaPlaylist:
    text: str
    media_sequence: int = 0
    target_duration: int = 0
    ended: bool = False
    vod: bool = False
    segments: list[tuple[str, float, str]] = field(default_factory=list)  # (uri, duration, map uri)
    discontinuities: int = 0
    program_date_times: list[str] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return sum(d for _, d, _ in self.segments)


def parse_attributes(text: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    key, value, in_quotes, reading_key = "", "", False, True
    for ch in text + ",":
        if reading_key:
            if ch == "=":
                reading_key = False
            else:
                key += ch
        elif ch == '"':
            in_quotes = not in_quotes
        elif ch == "," and not in_quotes:
            attrs[key.strip()] = value
            key, value, reading_key = "", "", True
        else:
            value += ch
    return attrs


def parse_master(text: str) -> list[tuple[dict[str, str], str]]:
    assert text.startswith("#EXTM3U"), text[:100]
    lines = text.splitlines()
    variants = []
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            variants.append((parse_attributes(line.split(":", 1)[1]), lines[i + 1]))
    return variants


def parse_media(text: str) -> MediaPlaylist:
    assert text.startswith("#EXTM3U"), text[:100]
    playlist = MediaPlaylist(text)
    current_map = ""
    duration = None
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            playlist.media_sequence = int(line.split(":")[1])
        elif line.startswith("#EXT-X-TARGETDURATION:"):
            playlist.target_duration = int(line.split(":")[1])
        elif line == "#EXT-X-ENDLIST":
            playlist.ended = True
        elif line == "#EXT-X-PLAYLIST-TYPE:VOD":
            playlist.vod = True
        elif line == "#EXT-X-DISCONTINUITY":
            playlist.discontinuities += 1
        elif line.startswith("#EXT-X-MAP:"):
            current_map = parse_attributes(line.split(":", 1)[1])["URI"]
        elif line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            playlist.program_date_times.append(line.split(":", 1)[1])
        elif line.startswith("#EXTINF:"):
            duration = float(line.split(":")[1].rstrip(","))
        elif line and not line.startswith("#"):
            assert duration is not None
            playlist.segments.append((line, duration, current_map))
            duration = None
    return playlist


@dataclass
class DecodedSegment:
    width: int
    height: int
    frames: int
    first_pts: float
    first_is_keyframe: bool
    audio_frames: int


def decode_segment(init: bytes, segment: bytes) -> DecodedSegment:
    """Decode one fMP4 segment (with its init segment) as a player would."""
    with av.open(io.BytesIO(init + segment), "r", format="mp4") as container:
        video = container.streams.video[0]
        frames, audio_frames = 0, 0
        first_pts, first_key = None, False
        width = height = 0
        for packet in container.demux():
            if packet.stream.type == "video":
                if first_pts is None and packet.pts is not None:
                    first_pts = float(packet.pts * packet.time_base)
                    first_key = packet.is_keyframe
                for frame in packet.decode():
                    frames += 1
                    width, height = frame.width, frame.height
            elif packet.stream.type == "audio":
                audio_frames += len(packet.decode())
        del video
    return DecodedSegment(width, height, frames, first_pts or 0.0, first_key, audio_frames)
