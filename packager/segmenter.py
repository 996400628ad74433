"""Cuts one rendition's encoded video and audio into CMAF segments at the keyframes the transcoder marks.

Sans-IO: samples in, (init bytes, finished Part and Segment objects) out; the caller stores them. Decode
times never go backwards here, whatever the caller passes; an audio-only rendition cuts on audio time.

With a part target (Low-Latency HLS), every segment is cut into parts of at most that duration as the
frames come, each a CMAF chunk (moof+mdat) released the moment its media is complete; the segment is then
exactly its parts joined, so a player mixing parts and whole segments sees the same bytes.

Source B-frames (a passthrough rung of an OBS stream) decode before they display: decode times are
shifted by the first frame's composition delay, so a keyframe decodes at its presentation time as in the
encoded rungs (the timelines of all rungs line up) and B-frames get negative composition offsets.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from packager.fmp4 import AudioTrack, Sample, TrackFragment, VideoTrack, init_segment, media_segment

log = logging.getLogger(__name__)

VIDEO_TRACK_ID = 1
AUDIO_TRACK_ID = 2


@dataclass(frozen=True, slots=True)
class Segment:
    sequence: int
    start: float  # seconds on the broadcast timeline
    duration: float
    data: bytes


@dataclass(frozen=True, slots=True)
class Part:
    """A Low-Latency HLS partial segment: `index` (from 0) inside segment `sequence`."""

    sequence: int
    index: int
    start: float
    duration: float
    independent: bool  # starts with a keyframe
    data: bytes


Output = Part | Segment


@dataclass(slots=True)
class _VideoSample:
    data: bytes
    dts: int
    pts: int
    keyframe: bool


@dataclass(slots=True)
class _AudioSample:
    data: bytes
    pts: int
    duration: int


@dataclass
class _PendingCut:
    """A part (or, without parts, a segment) whose video is complete, waiting for audio up to its end."""

    video: list[_VideoSample]
    end_dts: int
    audio_end: int  # in audio timescale
    ends_segment: bool = True


@dataclass
class Segmenter:
    """Per-rendition segmenter. Call add_video for every encoded frame (boundary=True on the
    keyframes where a segment must start), add_audio for every encoded audio frame, finish at the end.
    Without a video track (radio-style audio-only), segments are cut every `segment_duration` of audio.
    With `part_target` (seconds), Part objects come out as well, ahead of the Segment they make up."""

    video: VideoTrack | None
    audio: AudioTrack | None
    first_sequence: int = 0
    # Audio may trail video by this much (in seconds) before a segment is closed without it.
    max_audio_lag: float = 1.0
    segment_duration: float = 2.0  # audio-only segments
    # Audio held waiting for video (a source whose video stopped while its audio goes on) is bounded: past
    # this many seconds the oldest is dropped, with a warning, rather than growing for the rest of the service.
    max_audio_buffer: float = 20.0
    part_target: float | None = None  # LL-HLS part duration limit; None: whole segments only
    _sequence: int = field(init=False)
    _video: list[_VideoSample] = field(init=False, default_factory=list)
    _audio: list[_AudioSample] = field(init=False, default_factory=list)
    _pending: list[_PendingCut] = field(init=False, default_factory=list)
    _parts: list[Part] = field(init=False, default_factory=list)  # released parts of the open segment
    _fragments: int = field(init=False, default=0)  # mfhd numbers: one per moof
    _segment_open: bool = field(init=False, default=False)  # frames of the open segment went into a cut
    _audio_high: int = field(init=False, default=-(2**62))
    _last_dts: int = field(init=False, default=-1)
    _dts_shift: int | None = field(init=False, default=None)
    _audio_end: int = field(init=False, default=0)
    _clamped: int = field(init=False, default=0)
    _audio_dropped: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self._sequence = self.first_sequence
        if self.video is None and self.audio is None:
            raise ValueError("a segmenter needs a video or an audio track")
        if self.part_target is not None and self.part_target <= 0:
            raise ValueError("part_target must be positive")

    def init_bytes(self) -> bytes:
        tracks: list[VideoTrack | AudioTrack] = [] if self.video is None else [self.video]
        if self.audio is not None:
            tracks.append(self.audio)
        return init_segment(tracks)

    def _clamp(self, what: str, value: int, low: int) -> int:
        if value >= low:
            return value
        if self._clamped < 5:
            log.warning("%s %d is before %d; moved forward (decode times only increase)", what, value, low)
        self._clamped += 1
        return low

    def add_video(self, data: bytes, pts: int, dts: int, keyframe: bool, boundary: bool) -> list[Output]:
        """Times in the video timescale. A boundary frame must be a keyframe."""
        if self.video is None:
            raise ValueError("this segmenter has no video track")
        if self._dts_shift is None:
            self._dts_shift = max(pts - dts, 0)
        cts = pts - dts - self._dts_shift
        dts = self._clamp("video dts", dts + self._dts_shift, self._last_dts + 1)
        pts = dts + cts
        step = dts - self._last_dts if self._last_dts >= 0 else 0
        self._last_dts = dts
        out: list[Output] = []
        if boundary and (self._video or self._segment_open):
            self._cut(dts, ends_segment=True)
        elif self._video and self.part_target is not None:
            # Close the part before this frame when taking it would pass the part target.
            limit = int(self.part_target * self.video.timescale) + self.video.timescale // 1000
            if dts + step - self._video[0].dts > limit:
                self._cut(dts, ends_segment=False)
        if not self._video and not self._segment_open and not boundary and not self._pending \
                and self._sequence == self.first_sequence:
            # Nothing may precede the first boundary keyframe: a segment must start decodable.
            return out
        self._video.append(_VideoSample(data, dts, pts, keyframe))
        out.extend(self._release(force=False))
        return out

    def _cut(self, end_dts: int, ends_segment: bool) -> None:
        if self._video:
            self._pending.append(_PendingCut(self._video, end_dts, self._to_audio(end_dts), ends_segment))
            self._video = []
            self._segment_open = not ends_segment
        elif ends_segment and self._pending:
            self._pending[-1].ends_segment = True
            self._segment_open = False

    def add_audio(self, data: bytes, pts: int, duration: int) -> list[Output]:
        """Times in the audio timescale (its sample rate)."""
        if self.audio is None:
            raise ValueError("this segmenter has no audio track")
        pts = self._clamp("audio pts", pts, self._audio_end)
        self._audio_end = pts + duration
        self._audio.append(_AudioSample(data, pts, duration))
        self._audio_high = max(self._audio_high, pts + duration)
        if self.video is None:
            return self._release_audio_only(force=False)
        segments = self._release(force=False)
        self._bound_audio()
        return segments

    def _bound_audio(self) -> None:
        limit = int(self.max_audio_buffer * self.audio.timescale) if self.audio is not None else 0
        while self._audio and self._audio[-1].pts + self._audio[-1].duration - self._audio[0].pts > limit:
            self._audio.pop(0)
            if self._audio_dropped == 0:
                log.warning("audio is %.0f s ahead of the video (has the video stopped?): dropping the oldest",
                            self.max_audio_buffer)
            self._audio_dropped += 1

    def finish(self, end_dts: int | None = None) -> list[Output]:
        """Close everything still open; end_dts (unshifted, as the caller's dts) is where the last frame
        ends (defaults to last dts + its step)."""
        if self.video is None:
            return self._release_audio_only(force=True)
        if self._video:
            if end_dts is None:
                last = self._video[-1].dts
                step = last - self._video[-2].dts if len(self._video) > 1 else self.video.timescale // 30
                end_dts = last + max(step, 1)
            else:
                end_dts = max(end_dts + (self._dts_shift or 0), self._video[-1].dts + 1)
        self._cut(end_dts or 0, ends_segment=True)
        return self._release(force=True)

    @property
    def next_sequence(self) -> int:
        open_segment = bool(self._video) or self._segment_open
        return self._sequence + sum(1 for c in self._pending if c.ends_segment) + (1 if open_segment else 0)

    def _to_audio(self, video_time: int) -> int:
        if self.audio is None or self.video is None:
            return 0
        return video_time * self.audio.timescale // self.video.timescale

    def _release(self, force: bool) -> list[Output]:
        out: list[Output] = []
        while self._pending:
            cut = self._pending[0]
            if self.audio is not None and self.video is not None and not force:
                lag = (cut.audio_end - self._audio_high) / self.audio.timescale
                # Wait for audio to reach the cut, unless it has fallen too far behind (or stopped).
                newest_video = self._video[-1].dts if self._video else cut.end_dts
                video_ahead = (newest_video - cut.end_dts) / self.video.timescale
                if lag > 0 and video_ahead < self.max_audio_lag:
                    break
            self._pending.pop(0)
            out.extend(self._build(cut))
        return out

    def _next_fragment(self) -> int:
        self._fragments += 1
        return self._fragments

    def _release_audio_only(self, force: bool) -> list[Output]:
        assert self.audio is not None
        out: list[Output] = []
        ts = self.audio.timescale
        span = max(1, int(round(self.segment_duration * ts)))
        part_span = span if self.part_target is None else max(1, int(self.part_target * ts))
        while self._audio:
            start = self._audio[0].pts
            segment_start = start if not self._parts else int(round(self._parts[0].start * ts))
            part_end = min(start + part_span, segment_start + span)
            if not force and self._audio_high < part_end:
                break  # wait until the whole part (or segment) of audio is in
            taken = [a for a in self._audio if a.pts < part_end] or self._audio[:1]
            self._audio = self._audio[len(taken):]
            end = taken[-1].pts + taken[-1].duration
            samples = [Sample(data=a.data, duration=a.duration, keyframe=True) for a in taken]
            fragment = [TrackFragment(AUDIO_TRACK_ID, start, samples)]
            if self.part_target is None:
                data = media_segment(self._sequence + 1, fragment)
                out.append(Segment(self._sequence, start / ts, (end - start) / ts, data))
                self._sequence += 1
                continue
            data = media_segment(self._next_fragment(), fragment, styp=not self._parts)
            part = Part(self._sequence, len(self._parts), start / ts, (end - start) / ts, True, data)
            self._parts.append(part)
            out.append(part)
            if end >= segment_start + span or (force and not self._audio):
                out.append(self._join_parts())
        return out

    def _join_parts(self) -> Segment:
        first, last = self._parts[0], self._parts[-1]
        segment = Segment(self._sequence, first.start, last.start + last.duration - first.start,
                          b"".join(p.data for p in self._parts))
        self._parts = []
        self._sequence += 1
        return segment

    def _build(self, cut: _PendingCut) -> list[Output]:
        assert self.video is not None
        frames = cut.video
        samples: list[Sample] = []
        for i, f in enumerate(frames):
            next_dts = frames[i + 1].dts if i + 1 < len(frames) else cut.end_dts
            samples.append(Sample(data=f.data, duration=max(next_dts - f.dts, 1), keyframe=f.keyframe, cts_offset=f.pts - f.dts))
        fragments = [TrackFragment(VIDEO_TRACK_ID, frames[0].dts, samples)]
        if self.audio is not None:
            taken = [a for a in self._audio if a.pts < cut.audio_end]
            self._audio = [a for a in self._audio if a.pts >= cut.audio_end]
            if taken:
                fragments.append(
                    TrackFragment(
                        AUDIO_TRACK_ID,
                        taken[0].pts,
                        [Sample(data=a.data, duration=a.duration, keyframe=True) for a in taken],
                    )
                )
        ts = self.video.timescale
        start = frames[0].dts / ts
        duration = (cut.end_dts - frames[0].dts) / ts
        if self.part_target is None:
            # mfhd numbers start at 1 (ISO 14496-12).
            segment = Segment(self._sequence, start, duration, media_segment(self._sequence + 1, fragments))
            self._sequence += 1
            return [segment]
        data = media_segment(self._next_fragment(), fragments, styp=not self._parts)
        part = Part(self._sequence, len(self._parts), start, duration, frames[0].keyframe, data)
        self._parts.append(part)
        return [part, self._join_parts()] if cut.ends_segment else [part]
