"""Live ingest health, measured from what the encoder sends (any protocol): bitrate, frame rate, keyframe
interval, source size and codecs, audio present, dropped frames, how far the media arrives behind real time, and
the plain-language warnings a volunteer can act on before the service. The transcode worker adds what only it
sees (its `stats` events: each rung's speed, the audio level), and each segment how late it was published.

Sans-IO: fed every MediaItem with its arrival time (seconds, monotonic), the worker's stats and each segment's
delay, asked for a snapshot.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Mapping

from ingest.media import AccessUnit, MediaItem, SourceMetadata, TrackInfo
from packager.h264 import H264Error, sps_dimensions

WINDOW = 5.0  # seconds of arrivals the rates are measured over
KEYFRAME_WARN = 2.5  # s: a longer keyframe interval cuts segments late (and can't be copied into the top rung)
LAG_WARN = 2.0  # s: media arriving this far behind real time means the upload can't keep up
FRAME_RATE_WARN = 20.0
JUMP = 30.0  # s: a step in the encoder's timestamps this large is a jump of its clock, not a delay
AUDIO_SILENT_AFTER = 3.0  # s of video with no audio before "no audio" is said
SLOW_AFTER = 10.0  # s a rung stays below real time before "can't keep up" is said
QUIET_DBFS = -60.0  # RMS below this is no sound (a live microphone in a quiet room reads well above it)
QUIET_AFTER = 10.0  # s of no sound before "no sound" is said
STATS_STALE = 5.0  # s: the worker's stats older than this no longer warn (a worker restarting, stalled input)

_CODEC_NAMES = {"h264": "H.264", "hevc": "HEVC", "av1": "AV1", "vp9": "VP9", "vp8": "VP8", "aac": "AAC",
                "opus": "Opus", "mp3": "MP3"}


@dataclass
class _Track:
    codec: str = ""
    arrivals: deque[tuple[float, int, int]] = field(default_factory=deque)  # (arrival, dts_ms, bytes)
    last_arrival: float | None = None


class IngestHealth:
    def __init__(self, protocol: str, peer: str, connected_at: float) -> None:
        self.protocol = protocol
        self.peer = peer
        self.connected_at = connected_at
        self._video = _Track()
        self._audio = _Track()
        self._width = self._height = 0
        self._declared_rate: float | None = None
        self._keyframes: deque[int] = deque(maxlen=4)  # dts_ms of the latest keyframes
        self._last_video_dts: int | None = None
        self._frame_ms: float | None = None  # the usual spacing of video frames
        self.dropped_frames = 0
        self._first: tuple[float, int] | None = None  # (arrival, dts_ms) of the first video unit
        self._best_offset: float | None = None  # the smallest arrival - media time seen: the encoder on time
        self._lag = 0.0
        # From the transcode worker's stats events and segments.
        self._stats_at: float | None = None
        self._rungs: dict[str, tuple[float | None, bool]] = {}  # name -> (speed, passthrough)
        self._level: tuple[float | None, float | None] | None = None  # (rms, peak) dBFS; None: not measured
        self._slow_since: dict[str, float] = {}
        self._quiet_since: float | None = None
        self._segment_delay: dict[str, float] = {}  # rendition -> the latest segment's delay

    # -- from the transcode worker -------------------------------------------------------------------------
    def on_stats(self, stats: Mapping[str, Any], now: float) -> None:
        """The worker's stats event (transcode/pipeline.py live_stats): {"rungs": {name: {"speed", "passthrough"}},
        "audio": {"rms_dbfs", "peak_dbfs"} or None}."""
        self._stats_at = now
        rungs = stats.get("rungs")
        self._rungs = {}
        for name, rung in (rungs.items() if isinstance(rungs, Mapping) else ()):
            if not isinstance(rung, Mapping):
                continue
            self._rungs[str(name)] = (_number(rung.get("speed")), bool(rung.get("passthrough")))
        for name in list(self._slow_since):
            if name not in self._rungs:
                del self._slow_since[name]
        for name, (speed, _) in self._rungs.items():
            if speed is not None and speed < 1.0:
                self._slow_since.setdefault(name, now)
            else:
                self._slow_since.pop(name, None)
        audio = stats.get("audio")
        if isinstance(audio, Mapping):
            rms, peak = _number(audio.get("rms_dbfs")), _number(audio.get("peak_dbfs"))
            self._level = (rms, peak)
            if rms is None or rms < QUIET_DBFS:
                self._quiet_since = now if self._quiet_since is None else self._quiet_since
            else:
                self._quiet_since = None
        else:
            self._level, self._quiet_since = None, None

    def on_segment(self, rendition: str, delay: float) -> None:
        """A segment was published `delay` seconds after its last frame's time (its pdt + duration)."""
        self._segment_delay[rendition] = delay

    # -- input ---------------------------------------------------------------------------------------------
    def feed(self, item: MediaItem, now: float) -> None:
        if isinstance(item, TrackInfo):
            track = self._video if item.kind == "video" else self._audio
            track.codec = item.codec
            if item.kind == "video":
                self._width, self._height = item.width, item.height
                if item.codec == "h264" and item.extradata[:1] == b"\x01":
                    try:
                        self._width, self._height = sps_dimensions(item.extradata)
                    except H264Error:
                        pass
        elif isinstance(item, SourceMetadata):
            values = item.values
            rate = values.get("framerate", values.get("videoframerate"))
            if isinstance(rate, (int, float)) and rate > 0:
                self._declared_rate = float(rate)
            width, height = values.get("width"), values.get("height")
            if not self._width and isinstance(width, (int, float)) and isinstance(height, (int, float)):
                self._width, self._height = int(width), int(height)
        elif isinstance(item, AccessUnit):
            track = self._video if item.kind == "video" else self._audio
            track.arrivals.append((now, item.dts_ms, len(item.data)))
            track.last_arrival = now
            while track.arrivals and track.arrivals[0][0] < now - WINDOW:
                track.arrivals.popleft()
            if item.kind == "video":
                self._on_video(item, now)

    def _on_video(self, unit: AccessUnit, now: float) -> None:
        if unit.keyframe:
            self._keyframes.append(unit.dts_ms)
        if self._first is None:
            self._first = (now, unit.dts_ms)
        # How far behind real time the media arrives: this unit's arrival minus its media time, above the best
        # seen (a burst at the start, or a catch-up, can't hide a later delay).
        offset = now - unit.dts_ms / 1000.0
        if self._best_offset is not None and offset - self._best_offset > JUMP:
            self._best_offset = offset  # the encoder's clock jumped back: a new baseline, not a lag
        if self._best_offset is None or offset < self._best_offset:
            self._best_offset = offset
        self._lag = offset - self._best_offset
        last = self._last_video_dts
        if last is not None and unit.dts_ms > last:
            gap = unit.dts_ms - last
            if self._frame_ms is None:
                self._frame_ms = float(gap)
            elif gap > 1.5 * self._frame_ms and gap < 5000:
                self.dropped_frames += round(gap / self._frame_ms) - 1  # frames the encoder skipped
            else:
                self._frame_ms = 0.9 * self._frame_ms + 0.1 * gap
        self._last_video_dts = unit.dts_ms if last is None else max(last, unit.dts_ms)

    # -- output --------------------------------------------------------------------------------------------
    @staticmethod
    def _bitrate(track: _Track) -> int | None:
        if len(track.arrivals) < 2:
            return None
        span = track.arrivals[-1][0] - track.arrivals[0][0]
        if span <= 0.5:
            return None
        return round(sum(size for _, _, size in list(track.arrivals)[1:]) * 8 / span)

    def frame_rate(self) -> float | None:
        stamps = [dts for _, dts, _ in self._video.arrivals]
        if len(stamps) < 2 or max(stamps) <= min(stamps):
            return self._declared_rate
        return round((len(stamps) - 1) * 1000.0 / (max(stamps) - min(stamps)), 2)

    def keyframe_interval(self) -> float | None:
        frames = list(self._keyframes)
        if len(frames) < 2:
            return None
        return round(max(b - a for a, b in zip(frames, frames[1:])) / 1000.0, 3)

    def warnings(self, now: float) -> list[str]:
        out: list[str] = []
        interval = self.keyframe_interval()
        if interval is not None and interval > KEYFRAME_WARN:
            out.append(f"keyframe every {interval:.0f} s — set the keyframe interval to 2 s in OBS "
                       "(Settings → Output → Streaming)")
        if self._lag > LAG_WARN:
            out.append(f"upload is dropping: the video arrives {self._lag:.1f} s behind real time — lower the "
                       "bitrate in OBS or check the internet connection")
        rate = self.frame_rate()
        if rate is not None and len(self._video.arrivals) > 10 and rate < FRAME_RATE_WARN:
            out.append(f"the encoder sends only {rate:.0f} frames per second — its computer may be overloaded")
        video_for = (now - self._first[0]) if self._first is not None else 0.0
        audio_gone = self._audio.last_arrival is None or now - self._audio.last_arrival > AUDIO_SILENT_AFTER
        if video_for > AUDIO_SILENT_AFTER and audio_gone:
            out.append("no audio from the encoder — check the audio sources in OBS")
        fresh = self._stats_at is not None and now - self._stats_at <= STATS_STALE
        slow = [(speed, name) for name, (speed, _) in self._rungs.items()
                if name in self._slow_since and now - self._slow_since[name] >= SLOW_AFTER and speed is not None]
        if fresh and slow:
            speed, name = min(slow)
            out.append(f"transcoding can't keep up ({name} at {speed:.1f}× real time): lower the ladder or use a "
                       "faster preset")
        if fresh and not audio_gone and self._quiet_since is not None and now - self._quiet_since >= QUIET_AFTER:
            out.append("no sound: the audio track is silent")
        return out

    def _transcode(self) -> list[dict[str, Any]]:
        names = list(self._rungs) + [n for n in self._segment_delay if n not in self._rungs]
        out = []
        for name in names:
            speed, passthrough = self._rungs.get(name, (None, False))
            delay = self._segment_delay.get(name)
            out.append({"rendition": name, "speed": speed, "passthrough": passthrough,
                        "segment_delay_seconds": None if delay is None else round(delay, 3)})
        return out

    def snapshot(self, now: float) -> dict[str, Any]:
        audio_present = self._audio.last_arrival is not None and now - self._audio.last_arrival <= AUDIO_SILENT_AFTER
        return {
            "protocol": self.protocol,
            "connected_seconds": round(now - self.connected_at, 1),
            "video": {
                "codec": _CODEC_NAMES.get(self._video.codec, self._video.codec) or None,
                "width": self._width or None, "height": self._height or None,
                "frame_rate": self.frame_rate(),
                "bitrate": self._bitrate(self._video),
                "keyframe_interval": self.keyframe_interval(),
                "dropped_frames": self.dropped_frames,
            },
            "audio": {
                "codec": _CODEC_NAMES.get(self._audio.codec, self._audio.codec) or None,
                "present": audio_present,
                "bitrate": self._bitrate(self._audio),
                "level_dbfs": self._level[0] if self._level else None,
                "peak_dbfs": self._level[1] if self._level else None,
                # No sound in the last second: below QUIET_DBFS, or digital zero (its levels then null).
                "silent": None if self._level is None else self._level[0] is None or self._level[0] < QUIET_DBFS,
            },
            "behind_real_time": round(self._lag, 2),
            "transcode": self._transcode(),
            "segment_delay_seconds": (round(max(self._segment_delay.values()), 3) if self._segment_delay
                                      else None),
            "warnings": self.warnings(now),
        }


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)
