"""Demuxes the FLV tags of one connection, decodes them and feeds every rendition thread.

Decides the segment boundaries once, here, so every rung puts its keyframes at identical timestamps.
"""
from __future__ import annotations

import logging
from fractions import Fraction

import av

from ingest.flv import TAG_AUDIO, TAG_VIDEO, FlvError, FlvTag, UnsupportedCodec, parse_audio_body, parse_video_body
from packager.fmp4 import AudioTrack
from packager.h264 import avcc_record
from packager.segmenter import AUDIO_TRACK_ID
from transcode.audio import AudioTranscoder
from transcode.job import TranscodeJob
from transcode.ladder import plan_ladder
from transcode.rendition import (
    VIDEO_TIMESCALE,
    AudioItem,
    EncodedVideoItem,
    InitSink,
    RenditionEncoder,
    SegmentSink,
    VideoFrameItem,
)

log = logging.getLogger(__name__)

# Decoded frames held back to measure the frame rate before the encoders open.
FRAME_RATE_PROBE = 6


class PipelineError(RuntimeError):
    """The source can't be transcoded (unsupported codec, no video); the message says why."""


class Pipeline:
    def __init__(self, job: TranscodeJob, on_init: InitSink, on_segment: SegmentSink) -> None:
        self.job = job
        self._on_init = on_init
        self._on_segment = on_segment
        self.renditions: list[RenditionEncoder] = []
        self._video_decoder: av.VideoCodecContext | None = None
        self._source_avcc: bytes | None = None
        self._audio: AudioTranscoder | None = None
        self._base_ms: int | None = None
        self._held_frames: list[av.VideoFrame] = []
        self._held_audio: list[AudioItem] = []
        self._packet_dts: list[int] = []
        self._passthrough = any(r.passthrough for r in job.renditions)
        self._held_packets: list[EncodedVideoItem] = []
        self._boundary_pts: set[int] = set()
        self._next_boundary: float | None = None
        self.frame_rate = 30.0

    # -- input ---------------------------------------------------------------------------------
    def on_tag(self, tag: FlvTag) -> None:
        if tag.kind not in (TAG_AUDIO, TAG_VIDEO):
            return  # onMetaData: nothing we need that the bitstream doesn't say
        try:
            if tag.kind == TAG_VIDEO:
                self._on_video(tag)
            else:
                self._on_audio(tag)
        except UnsupportedCodec as exc:
            raise PipelineError(str(exc)) from exc
        except FlvError as exc:
            log.warning("stream %s: skipping bad tag at %d ms: %s", self.job.stream_id, tag.timestamp_ms, exc)
        except av.error.InvalidDataError as exc:
            log.warning("stream %s: undecodable data at %d ms: %s", self.job.stream_id, tag.timestamp_ms, exc)

    def _time(self, ms: int) -> float:
        if self._base_ms is None:
            self._base_ms = ms
        return (ms - self._base_ms) / 1000.0 + self.job.time_offset

    def _on_video(self, tag: FlvTag) -> None:
        info = parse_video_body(tag.body)
        if info.packet_type == 0:
            record = avcc_record(info.data)
            if self._video_decoder is None:
                dec = av.CodecContext.create("h264", "r")
                dec.extradata = record
                self._video_decoder = dec  # type: ignore[assignment]
            self._source_avcc = record
            return
        if info.packet_type != 1 or self._video_decoder is None or not info.data:
            return
        dts_t = self._time(tag.timestamp_ms)
        pts_t = dts_t + info.composition_time_ms / 1000.0
        pts90 = round(pts_t * VIDEO_TIMESCALE)
        dts90 = round(dts_t * VIDEO_TIMESCALE)
        if len(self._packet_dts) < 30:
            self._packet_dts.append(tag.timestamp_ms)
        if self._passthrough:
            boundary = info.keyframe and self._is_boundary(pts_t, info.keyframe)
            if boundary:
                self._boundary_pts.add(pts90)
            item = EncodedVideoItem(info.data, pts90, dts90, info.keyframe, boundary)
            if self.renditions:
                for r in self.renditions:
                    if r.plan.passthrough:
                        r.queue.put(item)
            else:
                self._held_packets.append(item)
        packet = av.Packet(info.data)
        packet.pts = pts90
        packet.dts = dts90
        packet.time_base = Fraction(1, VIDEO_TIMESCALE)
        for frame in self._video_decoder.decode(packet):
            self._on_frame(frame)

    def _on_audio(self, tag: FlvTag) -> None:
        info = parse_audio_body(tag.body)
        if info.packet_type == 0:
            if self._audio is None:
                self._audio = AudioTranscoder(
                    info.data, sample_rate=self.job.audio_sample_rate, bitrate=self.job.audio_bitrate,
                    start_floor=self.job.time_offset,
                )
            return
        if self._audio is None or not info.data:
            return
        items = self._audio.push(info.data, self._time(tag.timestamp_ms))
        self._dispatch_audio(items)

    def _dispatch_audio(self, items: list[AudioItem]) -> None:
        if not self.renditions:
            self._held_audio.extend(items)
            return
        for item in items:
            for r in self.renditions:
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
    def _on_frame(self, frame: av.VideoFrame) -> None:
        if not self.renditions:
            self._held_frames.append(frame)
            if len(self._held_frames) < FRAME_RATE_PROBE:
                return
            self._start_renditions()
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
        for r in self.renditions:
            if not r.plan.passthrough:
                r.queue.put(item)

    def _measure_frame_rate(self) -> float:
        stamps = sorted(set(self._packet_dts))
        if len(stamps) < 2 or stamps[-1] <= stamps[0]:
            return 30.0
        # FLV timestamps are whole milliseconds: take the standard rate whose frame times they round to.
        for rate in (30.0, 29.97, 25.0, 24.0, 23.976, 60.0, 59.94, 50.0, 48.0):
            if all(abs((ts - stamps[0]) - i * 1000.0 / rate) <= 1.01 for i, ts in enumerate(stamps)):
                return rate
        measured = (len(stamps) - 1) * 1000.0 / (stamps[-1] - stamps[0])
        return max(1.0, min(120.0, measured))

    def _start_renditions(self) -> None:
        first = self._held_frames[0]
        self.frame_rate = self._measure_frame_rate()
        plans = plan_ladder(self.job.renditions, first.width, first.height)
        audio_track = None
        if self._audio is not None:
            audio_track = AudioTrack(
                AUDIO_TRACK_ID, self._audio.sample_rate, self._audio.sample_rate, 2, self._audio.config
            )
        gop = max(1, round(self.frame_rate * self.job.segment_duration))
        for plan in plans:
            self.renditions.append(
                RenditionEncoder(
                    plan,
                    audio_track,
                    first_sequence=self.job.first_sequence,
                    frame_rate=self.frame_rate,
                    preset=self.job.preset,
                    tune=self.job.tune,
                    gop_frames=gop,
                    on_init=self._on_init,
                    on_segment=self._on_segment,
                    source_avcc=self._source_avcc,
                )
            )
        for r in self.renditions:
            r.start()
        log.info(
            "stream %s: source %dx%d @ %.2f fps -> %s",
            self.job.stream_id, first.width, first.height, self.frame_rate,
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

    # -- end -----------------------------------------------------------------------------------
    def finish(self) -> None:
        """Flush decoders and encoders; blocks until every rendition has written its last segment."""
        if self._video_decoder is not None:
            try:
                for frame in self._video_decoder.decode(None):
                    self._on_frame(frame)
            except av.error.FFmpegError as exc:
                log.warning("stream %s: flushing the decoder: %s", self.job.stream_id, exc)
        if not self.renditions and self._held_frames:
            self._start_renditions()
        if self._audio is not None:
            self._dispatch_audio(self._audio.flush())
        for r in self.renditions:
            r.queue.put(None)
        for r in self.renditions:
            r.join()

    def failed(self) -> BaseException | None:
        for r in self.renditions:
            if r.error is not None:
                return r.error
        return None
