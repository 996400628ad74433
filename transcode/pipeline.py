"""Takes one connection's media items (ingest/media.py, from any protocol), decodes them and feeds every
rendition thread.

Decides the segment boundaries once, here, so every rung puts its keyframes at identical timestamps.
Source timestamps go through a SourceClock first, so the timeline only moves forward. Decides, before the
rungs open, whether the top rung copies the source (transcode.top_rung, see transcode/ladder.py).
"""
from __future__ import annotations

import logging
import math
from dataclasses import replace
from fractions import Fraction

import av

from ingest.media import AccessUnit, MediaItem, SourceMetadata, TrackInfo
from packager.fmp4 import AudioTrack
from packager.segmenter import AUDIO_TRACK_ID
from transcode.audio import AudioTranscoder
from transcode.deinterlace import Deinterlacer
from transcode.frame_rate import choose_rate, declared_rate
from transcode.job import TranscodeJob
from transcode.ladder import (
    AUDIO_ONLY,
    MAX_PASSTHROUGH_KEYFRAME_INTERVAL,
    PlannedRendition,
    SourceVideo,
    TopRungChoice,
    choose_top_rung,
    needs_keyframe_interval,
    plan_ladder,
    top_spec,
    x264_keyint,
)
from transcode.rendition import (
    VIDEO_TIMESCALE,
    AudioItem,
    EncodedVideoItem,
    InitSink,
    RenditionEncoder,
    SegmentSink,
    VideoFrameItem,
)
from transcode.source_clock import SourceClock

log = logging.getLogger(__name__)

# Frame timestamps kept to measure the frame rate when the source doesn't declare it (about a second).
FRAME_RATE_SPAN_MS = 1000
_MAX_RATE_STAMPS = 120
# Seconds of video that may fail to decode, with no picture out, before the source is declared undecodable.
UNDECODABLE_SPAN = 3.0

# The PyAV decoder to open for a codec name, where FFmpeg's own decoder is not the usable one
# (its native AV1 decoder needs a hardware accelerator).
_DECODERS = {"av1": "libdav1d"}
_CODEC_NAMES = {"h264": "H.264", "hevc": "HEVC (H.265)", "av1": "AV1", "vp9": "VP9", "vp8": "VP8",
                "aac": "AAC", "opus": "Opus", "mp3": "MP3"}


def codec_name(codec: str) -> str:
    return _CODEC_NAMES.get(codec, codec)


def open_decoder(track: TrackInfo) -> av.CodecContext:
    """A PyAV decoder for the track; UnsupportedSource (retry=False) if this build can't decode it."""
    try:
        decoder = av.CodecContext.create(_DECODERS.get(track.codec, track.codec), "r")
    except (ValueError, av.error.FFmpegError) as exc:
        raise UnsupportedSource(f"{codec_name(track.codec)} {track.kind} can't be decoded here ({exc})") from exc
    if track.extradata:
        decoder.extradata = track.extradata
    if track.kind == "audio" and track.sample_rate:
        assert isinstance(decoder, av.AudioCodecContext)
        decoder.sample_rate = track.sample_rate
        decoder.layout = "mono" if track.channels == 1 else "stereo"
    return decoder


class PipelineError(RuntimeError):
    """The source can't be transcoded (unsupported codec, no video); the message says why."""

    retry = True  # a fresh worker might do better (a crash, a corrupt start)


class UnsupportedSource(PipelineError):
    """The encoder sends a codec we don't take: a restarted worker would fail the same way."""

    retry = False


class Pipeline:
    """Limits (all in the constructor): decoded frames, audio packets and source packets held before the
    encoders open are capped (`max_held_frames`, `max_held_audio`); a source with no video goes live
    audio-only after `audio_only_wait` seconds of audio; video waits up to `late_audio_wait` seconds for
    an audio header that the metadata promises (or that no metadata rules out); with top_rung "auto", the
    rungs wait up to `max_keyframe_interval` seconds of source for its second keyframe (holding packets, not
    pictures), unless the encoder announced its keyframe interval (x264's SEI)."""

    def __init__(self, job: TranscodeJob, on_init: InitSink, on_segment: SegmentSink, *,
                 max_held_frames: int = 90, max_held_audio: int = 500, audio_only_wait: float = 3.0,
                 late_audio_wait: float = 2.0,
                 max_keyframe_interval: float = MAX_PASSTHROUGH_KEYFRAME_INTERVAL) -> None:
        self.job = job
        self._on_init = on_init
        self._on_segment = on_segment
        self.max_held_frames = max_held_frames
        self.max_held_audio = max_held_audio
        self.audio_only_wait = audio_only_wait
        self.late_audio_wait = late_audio_wait
        self.max_keyframe_interval = max_keyframe_interval
        self.renditions: list[RenditionEncoder] = []
        self._fed: list[RenditionEncoder] = []  # the rungs the pipeline feeds (the others: their parent rung)
        self.clock = SourceClock(start=job.time_offset)
        self._video_decoder: av.VideoCodecContext | None = None
        self._video_track: TrackInfo | None = None
        self._source_avcc: bytes | None = None  # the source's avcC when its packets can be copied
        self._frames_decoded = 0
        self._undecodable_since: int | None = None  # ms of the first unit that failed while none decoded
        self._audio: AudioTranscoder | None = None
        self._audio_track_info: TrackInfo | None = None
        self._metadata: dict[str, object] | None = None
        self._held_frames: list[av.VideoFrame] = []
        self._held_audio: list[AudioItem] = []
        self._held_packets: list[EncodedVideoItem] = []
        self._packet_dts: list[int] = []
        self._passthrough = any(r.passthrough for r in job.renditions)  # final once the rungs open
        self.top_rung = job.top_rung  # "auto" | "passthrough" | "encode" (transcode.top_rung)
        self._first_sequence = job.first_sequence  # of the rungs opened next
        self._undecoded: list[av.Packet] | None = None  # packets held undecoded while the top rung waits
        self._keyframe_pts: list[float] = []  # the first source keyframes (seconds), to learn their interval
        self._x264_keyint: int | None = None
        self._first_video_pts: float | None = None
        self._newest_video_pts: float | None = None
        self._source_format = ""
        self._source_interlaced = False
        self._auto_passthrough = False  # the top rung copies the source because "auto" chose so
        self._last_keyframe: float | None = None
        self._boundary_pts: set[int] = set()
        self._next_boundary: float | None = None
        self._deinterlacer = Deinterlacer()
        self._audio_only = False
        self._generation = 0
        self._newest_pts90: int | None = None
        self._failure: BaseException | None = None
        self._warned: set[str] = set()
        self.frame_rate = 30.0
        # Timeline seconds of the newest video unit taken in (of audio, while there is no video): with the time
        # it was read, where the worker anchors the program date-time.
        self.media_time: float | None = None

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("stream %s: " + message, self.job.stream_id, *args)

    @property
    def started(self) -> bool:
        return bool(self.renditions)

    @property
    def _may_passthrough(self) -> bool:
        """Whether a rung might copy the source: its packets are kept until the rungs open."""
        if not self._copyable:
            return False
        return self.top_rung != "encode" or any(r.passthrough for r in self.job.renditions)

    # -- input ---------------------------------------------------------------------------------
    def on_item(self, item: MediaItem) -> None:
        try:
            if isinstance(item, AccessUnit):
                if item.kind == "video":
                    self._on_video(item)
                else:
                    self._on_audio(item)
            elif isinstance(item, TrackInfo):
                if item.kind == "video":
                    self._on_video_track(item)
                else:
                    self._on_audio_track(item)
            elif isinstance(item, SourceMetadata):
                if self._metadata is None:
                    self._metadata = dict(item.values)
        except av.error.InvalidDataError as exc:
            at = item.dts_ms if isinstance(item, AccessUnit) else 0
            log.warning("stream %s: undecodable data at %d ms: %s", self.job.stream_id, at, exc)
            if isinstance(item, AccessUnit) and item.kind == "video":
                self._note_undecodable(item, exc)

    def _note_undecodable(self, unit: AccessUnit, exc: Exception) -> None:
        """A source whose video never decodes fails within seconds, with the decoder's reason."""
        if self._frames_decoded:
            return
        if self._undecodable_since is None:
            self._undecodable_since = unit.dts_ms
        elif unit.dts_ms - self._undecodable_since >= UNDECODABLE_SPAN * 1000:
            assert self._video_track is not None
            raise UnsupportedSource(f"the encoder's {codec_name(self._video_track.codec)} video can't be decoded "
                                    f"({exc}); check the encoder's codec settings")

    @property
    def _copyable(self) -> bool:
        """Whether a rung may copy the source's packets: only H.264 with its avcC (what the packager writes)."""
        return self._source_avcc is not None

    def _on_video_track(self, track: TrackInfo) -> None:
        if self._audio_only:
            self._warn_once("video-after-audio-only",
                            "video began after the stream went live audio-only; it is ignored until the encoder reconnects")
            return
        if track == self._video_track:
            return
        if self._video_decoder is not None:
            log.info("stream %s: new video parameters (%s); reopening the decoder", self.job.stream_id,
                     codec_name(track.codec))
            self._flush_decoder()
            if self._passthrough and self.started:
                self._reopen_for_new_source()
        self._video_decoder = open_decoder(track)  # type: ignore[assignment]
        self._video_track = track
        copyable = track.codec == "h264" and track.extradata[:1] == b"\x01"
        self._source_avcc = track.extradata if copyable else None
        if not copyable and self.started and self._passthrough:
            self._reopen_for_new_source()

    def _on_video(self, unit: AccessUnit) -> None:
        if self._audio_only:
            self._warn_once("video-after-audio-only",
                            "video began after the stream went live audio-only; it is ignored until the encoder reconnects")
            return
        if self._video_decoder is None or not unit.data:
            return
        dts_ms = self.clock.place_ms("video", unit.dts_ms)
        dts_t = self.clock.start + dts_ms / 1000.0
        self.media_time = dts_t if self.media_time is None else max(self.media_time, dts_t)
        pts_t = dts_t + max(unit.cts_ms, 0) / 1000.0
        pts90 = round(pts_t * VIDEO_TIMESCALE)
        dts90 = round(dts_t * VIDEO_TIMESCALE)
        if not self.started and len(self._packet_dts) < _MAX_RATE_STAMPS:
            self._packet_dts.append(dts_ms)
        self._note_video_timing(pts_t, unit.keyframe, unit.data)
        if self.started and self._passthrough:
            boundary = unit.keyframe and self._is_boundary(pts_t, unit.keyframe)
            if boundary:
                self._boundary_pts.add(pts90)
            item = EncodedVideoItem(unit.data, pts90, dts90, unit.keyframe, boundary)
            for r in self.renditions:
                if r.plan.passthrough:
                    r.queue.put(item)
        elif not self.started and self._may_passthrough:
            # Boundaries are set when the rungs open, once it is known whether a rung copies these.
            self._held_packets.append(EncodedVideoItem(unit.data, pts90, dts90, unit.keyframe, False))
            if len(self._held_packets) > self.max_held_frames * 3:
                self._warn_once("held-packets", "video packets held before the encoders open hit the cap")
                del self._held_packets[0]
        packet = av.Packet(unit.data)
        packet.pts = pts90
        packet.dts = dts90
        packet.time_base = Fraction(1, VIDEO_TIMESCALE)
        if self._undecoded is not None:
            self._undecoded.append(packet)
            self._maybe_start()
            return
        try:
            self._decode(packet)
        except av.error.FFmpegError as exc:
            if isinstance(exc, av.error.InvalidDataError):
                raise
            log.warning("stream %s: decoding video at %d ms: %s", self.job.stream_id, unit.dts_ms, exc)
            self._note_undecodable(unit, exc)

    def _decode(self, packet: av.Packet | None) -> None:
        assert self._video_decoder is not None
        for frame in self._video_decoder.decode(packet):
            self._on_decoded(frame)

    def _note_video_timing(self, pts_t: float, keyframe: bool, data: bytes) -> None:
        """Keeps what the top rung's choice needs (first keyframes, x264's keyint); warns when a copied
        source later spaces its keyframes further apart than the choice assumed."""
        if self._first_video_pts is None:
            self._first_video_pts = pts_t
        if self._newest_video_pts is None or pts_t > self._newest_video_pts:
            self._newest_video_pts = pts_t
        if not keyframe:
            return
        if self._x264_keyint is None and not self._keyframe_pts:
            self._x264_keyint = x264_keyint(data)
        if len(self._keyframe_pts) < 8 and not self.started:
            self._keyframe_pts.append(pts_t)
        gap = pts_t - self._last_keyframe if self._last_keyframe is not None else 0.0
        if self._auto_passthrough and gap > self.max_keyframe_interval + 0.5 / max(self.frame_rate, 1.0):
            self._warn_once("keyframe-gap", "the source's keyframes are now %.1f s apart; the copied top rung "
                            "(and so every rung) can only cut segments there", gap)
        self._last_keyframe = pts_t

    def _flush_decoder(self) -> None:
        if self._video_decoder is None:
            return
        try:
            self._release_undecoded()
            self._decode(None)
        except av.error.FFmpegError as exc:
            log.warning("stream %s: flushing the decoder: %s", self.job.stream_id, exc)

    def _on_audio_track(self, track: TrackInfo) -> None:
        if self._audio is not None:
            if track != self._audio_track_info:
                self._warn_once("audio-change", "the audio parameters changed mid-stream; the first ones are kept "
                                "until the encoder reconnects")
            return
        if self.started and not self._audio_only:
            self._reopen_with_audio(track)
            return
        self._audio = self._audio_transcoder(track, self.job.time_offset)
        self._audio_track_info = track
        self._maybe_start()

    def _audio_transcoder(self, track: TrackInfo, start_floor: float) -> AudioTranscoder:
        decoder = open_decoder(track)
        if not isinstance(decoder, av.AudioCodecContext):
            raise UnsupportedSource(f"{codec_name(track.codec)} is not an audio codec")
        return AudioTranscoder(decoder, sample_rate=self.job.audio_sample_rate,
                               bitrate=self.job.audio_bitrate, start_floor=start_floor)

    def _on_audio(self, unit: AccessUnit) -> None:
        if self._audio is None or not unit.data:
            return
        at = self.clock.place("audio", unit.dts_ms)
        if self._video_decoder is None:
            self.media_time = at if self.media_time is None else max(self.media_time, at)
        items = self._audio.push(unit.data, at)
        self._dispatch_audio(items)

    def _dispatch_audio(self, items: list[AudioItem]) -> None:
        if not self.renditions:
            self._held_audio.extend(items)
            if len(self._held_audio) > self.max_held_audio:
                self._warn_once("held-audio", "audio held before the encoders open hit its cap of %d packets",
                                self.max_held_audio)
                del self._held_audio[: len(self._held_audio) - self.max_held_audio]
            self._maybe_start()
            return
        for item in items:
            for r in self._fed:
                r.queue.put(item)

    # -- boundaries ----------------------------------------------------------------------------
    def _is_boundary(self, t: float, keyframe_allowed: bool) -> bool:
        half_frame = 0.5 / self.frame_rate
        if self._next_boundary is None:
            if not keyframe_allowed:
                return False
            self._next_boundary = t + self.job.segment_duration
            return True
        if t + half_frame >= self._next_boundary and keyframe_allowed:
            if self._passthrough:
                # Source keyframes set the grid: the next cut is a full segment after this one.
                self._next_boundary = t + self.job.segment_duration
            else:
                while self._next_boundary <= t + half_frame:
                    self._next_boundary += self.job.segment_duration
            return True
        return False

    # -- decoded video -------------------------------------------------------------------------
    def _on_decoded(self, frame: av.VideoFrame) -> None:
        self._frames_decoded += 1
        if not self._source_format:
            self._source_format = frame.format.name
        self._source_interlaced = self._source_interlaced or bool(frame.interlaced_frame)
        for progressive in self._deinterlacer.push(frame):
            self._on_frame(progressive)

    def _on_frame(self, frame: av.VideoFrame) -> None:
        if not self.renditions:
            self._held_frames.append(frame)
            self._maybe_start()
            return
        self._dispatch_frame(frame)

    def _dispatch_frame(self, frame: av.VideoFrame) -> None:
        assert frame.pts is not None
        pts90 = int(frame.pts)
        t = pts90 / VIDEO_TIMESCALE
        if self._passthrough:
            boundary = pts90 in self._boundary_pts
            self._boundary_pts.discard(pts90)
        else:
            boundary = self._is_boundary(t, True)
        item = VideoFrameItem(frame, pts90, boundary)
        if self._newest_pts90 is None or pts90 > self._newest_pts90:
            self._newest_pts90 = pts90
        for r in self._fed:
            if not r.plan.passthrough:
                r.queue.put(item)

    # -- when to open the encoders ---------------------------------------------------------------
    def _declared_rate(self) -> float | None:
        if self._video_decoder is not None:
            rate = self._video_decoder.framerate
            if rate is not None and rate.denominator and rate.numerator:
                vui = declared_rate(float(rate))
                if vui is not None:
                    return vui
        if self._metadata is not None:
            return declared_rate(self._metadata.get("framerate", self._metadata.get("videoframerate")))
        return None

    def _audio_expected(self) -> bool:
        """Whether to wait for an audio header: unless the metadata lists the stream's tracks without audio."""
        if self._audio is not None:
            return False
        if self._metadata is not None and "audiocodecid" not in self._metadata and "videocodecid" in self._metadata:
            return False
        return True

    def _maybe_start(self) -> None:
        if self.renditions:
            return
        if not self._held_frames:
            if self._audio is not None and self._held_audio:
                span = (self._held_audio[-1].pts - self._held_audio[0].pts) / self._audio.sample_rate
                # A video header without decodable pictures waits until the audio held hits its cap.
                if (self._video_decoder is None and span >= self.audio_only_wait) or (
                        len(self._held_audio) >= self.max_held_audio):
                    self._start_audio_only()
            return
        capped = len(self._held_frames) >= self.max_held_frames
        frames_span = (int(self._held_frames[-1].pts or 0) - int(self._held_frames[0].pts or 0)) / VIDEO_TIMESCALE
        stamps_span = (self._packet_dts[-1] - self._packet_dts[0]) if len(self._packet_dts) > 1 else 0
        rate_known = self._declared_rate() is not None or stamps_span >= FRAME_RATE_SPAN_MS
        if not (rate_known or capped):
            return
        if self._audio_expected() and frames_span < self.late_audio_wait and not capped:
            return
        if not self._top_rung_ready():
            if self._undecoded is None:
                self._undecoded = []  # the pictures so far show the source; the rest can wait as packets
            return
        if capped:
            self._warn_once("held-frames", "started after holding the cap of %d decoded frames", self.max_held_frames)
        self._start_renditions()
        self._release_undecoded()

    def _release_undecoded(self) -> None:
        pending, self._undecoded = self._undecoded, None
        for packet in pending or []:
            self._decode(packet)

    # -- the top rung: copied or encoded -----------------------------------------------------------
    def _source_rate(self) -> float:
        return choose_rate(self._declared_rate(), None, self._packet_dts)

    def _keyframe_interval(self) -> tuple[float | None, str]:
        """The source's longest keyframe interval (s) as far as known: the keyint x264 announces (a bound, where
        a scene cut may have put the second keyframe early), else measured between its first keyframes; None
        until one of them is known."""
        if self._x264_keyint is not None:
            if self._x264_keyint == 0:
                return math.inf, "x264 keyint infinite"
            rate = self._source_rate()
            return self._x264_keyint / rate, f"x264 keyint {self._x264_keyint} at {rate:g} fps"
        stamps = self._keyframe_pts
        if len(stamps) >= 2:
            return max(b - a for a, b in zip(stamps, stamps[1:])), ""
        return None, ""

    def _top_rung_ready(self) -> bool:
        """Whether the top rung's choice can be made: at once unless it hangs on the keyframe interval,
        else once that is known or the source has run past `max_keyframe_interval` without a second one."""
        first = self._held_frames[0]
        if not self._copyable:
            return True
        if not needs_keyframe_interval(self.top_rung, top_spec(self.job.renditions), first.width,
                                       first.height, self._source_format, self._source_interlaced):
            return True
        if self._keyframe_interval()[0] is not None:
            return True
        if self._undecoded is not None and len(self._undecoded) >= self.max_held_frames * 2:
            return True  # timestamps that don't advance must not hold the start forever
        start = self._keyframe_pts[0] if self._keyframe_pts else self._first_video_pts
        if start is None or self._newest_video_pts is None:
            return False
        half_frame = 0.5 / self._source_rate()
        return self._newest_video_pts - start > self.max_keyframe_interval + half_frame

    def _choose_top_rung(self, width: int, height: int) -> list[PlannedRendition]:
        if not self._copyable:
            # Only H.264 with its avcC can be copied into our segments: every rung is encoded.
            track = self._video_track
            what = codec_name(track.codec) if track is not None and track.codec != "h264" else "H.264 without an avcC"
            specs = [replace(s, passthrough=False, height=s.height or height) if s.passthrough else s
                     for s in self.job.renditions]
            choice = TopRungChoice(False, f"encoded: the source is {what} (HLS players get H.264)")
            plans = plan_ladder(specs, width, height, choice)
            log.info("stream %s: top rung %s", self.job.stream_id, choice.note)
            return plans
        interval, origin = self._keyframe_interval()
        source = SourceVideo(width, height, self._source_format, self._source_interlaced, interval, origin)
        spec = top_spec(self.job.renditions)
        choice = choose_top_rung(self.top_rung, spec, source, self.max_keyframe_interval, self.frame_rate)
        plans = plan_ladder(self.job.renditions, width, height, choice)
        self._auto_passthrough = self.top_rung == "auto" and choice.passthrough and spec is not None
        log.info("stream %s: top rung %s", self.job.stream_id, choice.note)
        return plans

    def _mark_held_boundaries(self) -> None:
        """Boundaries of the packets held before the rungs opened: source keyframes when a rung copies them."""
        if not self._passthrough:
            self._held_packets.clear()
            return
        for item in self._held_packets:
            if item.keyframe and self._is_boundary(item.pts / VIDEO_TIMESCALE, True):
                item.boundary = True
                self._boundary_pts.add(item.pts)

    def _audio_track(self) -> AudioTrack | None:
        if self._audio is None:
            return None
        return AudioTrack(AUDIO_TRACK_ID, self._audio.sample_rate, self._audio.sample_rate, 2, self._audio.config)

    def _open(self, plans: list[PlannedRendition], audio_track: AudioTrack | None, gop: int,
              first_sequence: int | None = None) -> None:
        for plan in plans:
            self.renditions.append(
                RenditionEncoder(
                    plan,
                    audio_track,
                    first_sequence=self._first_sequence if first_sequence is None else first_sequence,
                    frame_rate=self.frame_rate,
                    preset=self.job.preset,
                    tune=self.job.tune,
                    gop_frames=gop,
                    source_keyframes=self._passthrough,
                    on_init=self._on_init,
                    on_segment=self._on_segment,
                    source_avcc=self._source_avcc,
                    segment_duration=self.job.segment_duration,
                    generation=self._generation,
                    part_target=self.job.part_target,
                )
            )
        # A cascaded rung gets every item (pictures scaled, audio, the end) from the rung it scales from.
        by_name = {r.plan.name: r for r in self.renditions}
        for r in self.renditions:
            if r.plan.scale_from:
                by_name[r.plan.scale_from].children.append(r)
        self._fed = [r for r in self.renditions if not r.plan.scale_from]
        for r in self.renditions:
            r.start()

    def _start_audio_only(self) -> None:
        self._audio_only = True
        self.frame_rate = 0.0
        log.info("stream %s: no video after %.1f s of audio; going live audio-only", self.job.stream_id,
                 self.audio_only_wait)
        self._open([AUDIO_ONLY], self._audio_track(), 1)
        audio, self._held_audio = self._held_audio, []
        self._dispatch_audio(audio)

    def _reopen_with_audio(self, track: TrackInfo) -> None:
        """Audio began after the rungs opened without it: close them (their last segments are written)
        and open them again with the audio track, under a new init segment, where the video has got to."""
        frame = 1.0 / self.frame_rate if self.frame_rate > 0 else 1 / 30
        position = self.clock.start if self._newest_pts90 is None else self._newest_pts90 / VIDEO_TIMESCALE + frame
        log.info("stream %s: audio began at %.3f s, after the video; reopening the renditions with it",
                 self.job.stream_id, position)
        plans = [r.plan for r in self.renditions]
        next_sequence = self._close_renditions()
        self._generation += 1
        self._audio = self._audio_transcoder(track, position)
        self._audio_track_info = track
        self._next_boundary = None  # the next frame starts a segment (a keyframe in every rung)
        self._boundary_pts.clear()
        gop = max(1, round(self.frame_rate * self.job.segment_duration))
        self._open(plans, self._audio_track(), gop, first_sequence=next_sequence)

    def _close_renditions(self) -> int:
        """Ends every rung (their last segments are written); the media sequence number the next rungs take."""
        old = self.renditions
        for r in self._fed:
            r.queue.put(None)
        for r in old:
            r.join()
            if r.error is not None and self._failure is None:
                self._failure = r.error
        self.renditions, self._fed = [], []
        return max(r.next_sequence for r in old)

    def _reopen_for_new_source(self) -> None:
        """New SPS/PPS while a rung copies the source: the copy can't go on under the old parameters (a new size
        would break it), so every rung ends and the ladder is planned again from the new pictures, as at the
        start, under new init segments."""
        log.info("stream %s: new video parameters under a copied rung; planning the ladder again",
                 self.job.stream_id)
        for frame in self._deinterlacer.flush():
            self._on_frame(frame)
        self._first_sequence = self._close_renditions()
        self._generation += 1
        self._passthrough = any(r.passthrough for r in self.job.renditions)
        self._auto_passthrough = False
        self._next_boundary = None
        self._boundary_pts.clear()
        self._keyframe_pts, self._x264_keyint, self._last_keyframe = [], None, None
        self._first_video_pts = self._newest_video_pts = None
        self._source_format, self._source_interlaced = "", False

    def _start_renditions(self) -> None:
        first = self._held_frames[0]
        self.frame_rate = self._source_rate()
        plans = self._choose_top_rung(first.width, first.height)
        self._passthrough = any(p.passthrough for p in plans)
        self._mark_held_boundaries()
        gop = max(1, round(self.frame_rate * self.job.segment_duration))
        self._open(plans, self._audio_track(), gop)
        log.info(
            "stream %s: source %dx%d @ %.3f fps%s -> %s",
            self.job.stream_id, first.width, first.height, self.frame_rate,
            "" if self._audio is not None else " (no audio)",
            ", ".join(f"{p.name} {p.width}x{p.height}{' (passthrough)' if p.passthrough else ''}" for p in plans),
        )
        for item in self._held_packets:
            for r in self.renditions:
                if r.plan.passthrough:
                    r.queue.put(item)
        self._held_packets.clear()
        held, self._held_frames = self._held_frames, []
        for frame in held:
            self._dispatch_frame(frame)
        audio, self._held_audio = self._held_audio, []
        self._dispatch_audio(audio)

    # -- live stats ----------------------------------------------------------------------------
    def live_stats(self, now: float) -> dict[str, object]:
        """The body of the worker's `stats` event: each video rung's speed (× real time; None while the rung
        copies the source or encoded nothing in the last seconds) and the source audio's level over the last
        second (None before any audio; its levels None for digital silence). now: time.monotonic()."""
        rungs: dict[str, dict[str, object]] = {}
        for r in self.renditions:
            if r.plan.audio_only:
                continue
            speed = None if r.plan.passthrough else r.speed.speed(now)
            rungs[r.plan.name] = {"speed": None if speed is None else round(speed, 2),
                                  "passthrough": r.plan.passthrough}
        audio: dict[str, float | None] | None = None
        if self._audio is not None and self._audio.level.measured:
            rms, peak = self._audio.level.level()
            audio = {"rms_dbfs": None if rms is None else round(rms, 1),
                     "peak_dbfs": None if peak is None else round(peak, 1)}
        return {"rungs": rungs, "audio": audio}

    # -- end -----------------------------------------------------------------------------------
    def finish(self) -> None:
        """Flush decoders and encoders; blocks until every rendition has written its last segment."""
        self._flush_decoder()
        for frame in self._deinterlacer.flush():
            self._on_frame(frame)
        if not self.renditions:
            if self._held_frames:
                self._start_renditions()
            elif self._held_audio:
                self._start_audio_only()
        if self._audio is not None:
            self._dispatch_audio(self._audio.flush())
        for r in self._fed:
            r.queue.put(None)
        for r in self.renditions:
            r.join()

    def failed(self) -> BaseException | None:
        if self._failure is not None:
            return self._failure
        for r in self.renditions:
            if r.error is not None:
                return r.error
        return None
