"""Pictures of a recording: a poster JPEG (a representative frame, not a black one), and a sprite sheet JPEG of
small thumbnails with a WebVTT storyboard whose cues point into it (`sprite.jpg#xywh=x,y,w,h`) for scrub previews.

Times are the recording's media timeline (the VOD playlist's: segment durations summed from 0), which is what a
player's currentTime shows. Each thumbnail decodes at most one segment (every segment starts with a keyframe).
"""
from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from packager.playlist import RenditionTrack, SegmentEntry, complete_rungs
from packager.recording import ConcatReader
from storage.local import LocalStore

log = logging.getLogger(__name__)

POSTER = "poster.jpg"
SPRITE = "sprite.jpg"
STORYBOARD = "storyboard.vtt"


@dataclass(frozen=True)
class SpriteLayout:
    """Where each thumbnail sits: tile size, columns, and the media times they show."""
    width: int
    height: int
    columns: int
    times: list[float]

    def position(self, index: int) -> tuple[int, int]:
        return (index % self.columns) * self.width, (index // self.columns) * self.height

    @property
    def rows(self) -> int:
        return max(1, math.ceil(len(self.times) / self.columns))


def interval_for(duration: float, default: float = 10.0, fewest: int = 10) -> float:
    """Every `default` seconds; a short recording gets at least `fewest` thumbnails (no closer than 1 s)."""
    if duration <= 0:
        return default
    return min(default, max(1.0, float(math.floor(duration / fewest))))


def layout(duration: float, interval: float, width: int = 160, height: int = 90, columns: int = 10) -> SpriteLayout:
    count = max(1, math.ceil(duration / interval))
    return SpriteLayout(width, height, columns, [i * interval for i in range(count)])


def vtt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def render_storyboard(grid: SpriteLayout, duration: float, sprite_uri: str = SPRITE) -> str:
    """WebVTT: one cue per thumbnail, from its time to the next one's (the last to the end)."""
    lines = ["WEBVTT", ""]
    for i, start in enumerate(grid.times):
        end = grid.times[i + 1] if i + 1 < len(grid.times) else max(duration, start + 0.001)
        x, y = grid.position(i)
        lines += [f"{vtt_time(start)} --> {vtt_time(end)}", f"{sprite_uri}#xywh={x},{y},{grid.width},{grid.height}", ""]
    return "\n".join(lines)


def locate(entries: list[SegmentEntry], t: float) -> tuple[SegmentEntry, float]:
    """The segment playing at media time t and the offset into it."""
    at = 0.0
    for entry in entries:
        if t < at + entry.duration:
            return entry, max(0.0, t - at)
        at += entry.duration
    return entries[-1], entries[-1].duration


def frame_at(store: LocalStore, key_prefix: str, entry: SegmentEntry, offset: float) -> av.VideoFrame | None:
    """The first video frame at or after `offset` seconds into the segment (its last frame if none is)."""
    paths = [store.path_for(f"{key_prefix}/{entry.init_uri}"), store.path_for(f"{key_prefix}/{entry.uri}")]
    if not all(p.exists() for p in paths):
        return None
    chosen: av.VideoFrame | None = None
    with av.open(ConcatReader(paths), "r", format="mp4") as source:
        if not source.streams.video:
            return None
        first: float | None = None
        for frame in source.decode(video=0):
            if frame.time is None:
                continue
            first = frame.time if first is None else first
            chosen = frame
            if frame.time - first >= offset - 1e-3:
                break
    return chosen


def first_frame_tile(init: bytes, segment: bytes, width: int = 160, height: int = 90) -> bytes | None:
    """A JPEG tile of a live segment's first picture (its keyframe): the only frame decoded. None when the
    segment has no video or cannot be read (a live tile is an extra: never an error for the broadcast)."""
    try:
        with av.open(io.BytesIO(init + segment), "r", format="mp4") as source:
            if not source.streams.video:
                return None
            for frame in source.decode(video=0):
                tile = frame.reformat(width=width, height=height, format="rgb24").to_ndarray()
                return encode_jpeg(tile)
    except (av.FFmpegError, OSError, ValueError) as exc:
        log.warning("live tile not made: %s", exc)
    return None


def encode_jpeg(rgb: np.ndarray) -> bytes:
    """One JPEG (FFmpeg's mjpeg encoder, full-range 4:2:0) of an RGB picture; sizes rounded down to even."""
    height, width = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:height, :width]), format="rgb24")
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuvj420p"
    codec.time_base = Fraction(1, 25)
    codec.options = {"qmin": "2", "qmax": "4"}  # sharp enough that small text and codes survive
    packets = codec.encode(frame.reformat(format="yuvj420p")) + codec.encode(None)
    return b"".join(bytes(p) for p in packets)


def is_blank(rgb: np.ndarray) -> bool:
    """Black (or one flat colour): a fade, a slate before the service. Not a poster."""
    luma = rgb.mean(axis=2)
    return float(luma.mean()) < 24 or float(luma.std()) < 8


def pick_poster(store: LocalStore, key_prefix: str, track: RenditionTrack) -> np.ndarray | None:
    """A frame a little into the service (10 %, then later), skipping black or flat frames."""
    duration = sum(e.duration for e in track.entries)
    fallback: np.ndarray | None = None
    for fraction in (0.1, 0.25, 0.5, 0.75, 0.0):
        entry, offset = locate(track.entries, duration * fraction)
        frame = frame_at(store, key_prefix, entry, offset)
        if frame is None:
            continue
        rgb = frame.to_ndarray(format="rgb24")
        if not is_blank(rgb):
            return rgb
        fallback = rgb if fallback is None else fallback
    return fallback


def write_thumbnails(store: LocalStore, key_prefix: str, tracks: list[RenditionTrack], interval: float = 10.0,
                     tile_width: int = 160, tile_height: int = 90, columns: int = 10) -> list[str]:
    """<prefix>/poster.jpg (from the tallest complete rung), sprite.jpg and storyboard.vtt (from the smallest,
    the quickest to decode). Returns the keys written."""
    rungs = [t for t in complete_rungs(tracks) if t.entries]
    if not rungs:
        return []
    tallest = max(rungs, key=lambda t: t.height)
    smallest = min(rungs, key=lambda t: t.height)
    written = []
    poster = pick_poster(store, key_prefix, tallest)
    if poster is not None:
        store.write(f"{key_prefix}/{POSTER}", encode_jpeg(poster), use_reserve=True)
        written.append(f"{key_prefix}/{POSTER}")
    duration = sum(e.duration for e in smallest.entries)
    grid = layout(duration, interval_for(duration, interval), tile_width, tile_height, columns)
    sheet = np.zeros((grid.rows * tile_height, columns * tile_width, 3), dtype=np.uint8)
    for i, t in enumerate(grid.times):
        entry, offset = locate(smallest.entries, t)
        frame = frame_at(store, key_prefix, entry, offset)
        if frame is None:
            continue
        x, y = grid.position(i)
        sheet[y:y + tile_height, x:x + tile_width] = frame.reformat(
            width=tile_width, height=tile_height, format="rgb24").to_ndarray()
    store.write(f"{key_prefix}/{SPRITE}", encode_jpeg(sheet), use_reserve=True)
    store.write(f"{key_prefix}/{STORYBOARD}", render_storyboard(grid, duration).encode(), use_reserve=True)
    written += [f"{key_prefix}/{SPRITE}", f"{key_prefix}/{STORYBOARD}"]
    log.info("%s: poster, %d-thumbnail sprite and storyboard written", key_prefix, len(grid.times))
    return written
