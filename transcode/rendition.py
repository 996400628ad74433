"""One ladder rung: a thread that scales, encodes (or passes through) and segments one rendition.

Each thread owns its VideoReformatter and encoder: sharing a reformatter across threads crashes PyAV.
A rung can feed lower ones (its children) its scaled picture, cheaper to scale again than the source's.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import av
from av.video.frame import PictureType
from av.video.reformatter import VideoReformatter

from packager.fmp4 import AudioTrack, VideoTrack
from packager.h264 import avcc_record, codec_string, to_avcc_sample
from packager.segmenter import VIDEO_TRACK_ID, Output, Segmenter
from transcode.bandwidth import rate_limits
from transcode.ladder import PlannedRendition
from transcode.live_stats import SpeedMeter

log = logging.getLogger(__name__)

VIDEO_TIMESCALE = 90_000
# Up to this many pixels per second (720p30), x264 runs on one thread: its sliced threads (tune zerolatency)
# cost about 30 % more CPU on a 360p picture (no less on 480p or 720p), and one thread still encodes 720p30
# veryfast at several times real time. Larger pictures keep x264's threads, for latency.
SINGLE_THREAD_PIXEL_RATE = 1280 * 720 * 30


@dataclass(slots=True)
class VideoFrameItem:
    frame: av.VideoFrame
    pts: int  # 90 kHz, broadcast timeline
    boundary: bool


@dataclass(slots=True)
class EncodedVideoItem:
    """A source packet for passthrough renditions."""

    data: bytes
    pts: int
    dts: int
    keyframe: bool
    boundary: bool


@dataclass(slots=True)
class AudioItem:
    data: bytes
    pts: int  # audio timescale
    duration: int


Item = VideoFrameItem | EncodedVideoItem | AudioItem | None
# Receives every Part (LL-HLS) and Segment the rung produces, in order.
SegmentSink = Callable[["RenditionEncoder", Output], None]
InitSink = Callable[["RenditionEncoder", bytes, str], None]


class RenditionEncoder(threading.Thread):
    """Consumes frames (or source packets for passthrough) and audio packets from its own queue."""

    def __init__(
        self,
        plan: PlannedRendition,
        audio_track: AudioTrack | None,
        *,
        first_sequence: int,
        frame_rate: float,
        preset: str,
        tune: str,
        gop_frames: int,
        on_init: InitSink,
        on_segment: SegmentSink,
        source_avcc: bytes | None = None,
        queue_size: int = 90,
        segment_duration: float = 2.0,
        generation: int = 0,
        part_target: float | None = None,
        source_keyframes: bool = False,
    ) -> None:
        super().__init__(name=f"rendition-{plan.name}", daemon=True)
        self.plan = plan
        # Bumped when the pipeline reopens the rungs mid-connection (audio that started late): a new init.
        self.generation = generation
        self.queue: queue.Queue[Item] = queue.Queue(maxsize=queue_size)
        self.error: BaseException | None = None
        # Lower rungs that scale this rung's picture; they get every item through here, in order.
        self.children: list[RenditionEncoder] = []
        self._audio_track = audio_track
        self._first_sequence = first_sequence
        self._frame_rate = frame_rate
        self._on_init = on_init
        self._on_segment = on_segment
        self._segmenter: Segmenter | None = None
        self._boundaries: set[int] = set()
        self._reformatter = VideoReformatter()
        # From a taller rung's picture, bicubic: still cheaper than bilinear from the source, and closer to a
        # Lanczos scaling of the source once encoded (measured 1080p -> 720p -> 480p/360p: +1 / +2.5 dB PSNR).
        self._interpolation = "BICUBIC" if plan.scale_from else "BILINEAR"
        self._encoder: av.VideoCodecContext | None = None
        self._last_dts = 0
        self._segment_duration = segment_duration
        self._part_target = part_target
        # × real time of this rung's own scaling and encoding (transcode/live_stats.py); read by the worker.
        self.speed = SpeedMeter()
        if plan.audio_only:
            if audio_track is None:
                raise ValueError("an audio-only rendition needs the audio track")
            self._start_segmenter(None)
        elif plan.passthrough:
            if source_avcc is None:
                raise ValueError("passthrough needs the source's AVC configuration")
            self._start_segmenter(source_avcc)
        else:
            self._encoder = self._open_encoder(preset, tune, gop_frames, source_keyframes)
            self._start_segmenter(avcc_record(bytes(self._encoder.extradata or b"")))

    def _open_encoder(self, preset: str, tune: str, gop_frames: int, source_keyframes: bool) -> av.VideoCodecContext:
        enc = av.CodecContext.create("libx264", "w")
        assert isinstance(enc, av.VideoCodecContext)
        enc.width = self.plan.width
        enc.height = self.plan.height
        enc.pix_fmt = "yuv420p"
        enc.time_base = Fraction(1, VIDEO_TIMESCALE)
        enc.framerate = Fraction(self._frame_rate).limit_denominator(1001)
        limits = rate_limits(self.plan.video_bitrate, self._segment_duration)
        enc.bit_rate = limits.bitrate
        enc.gop_size = gop_frames
        enc.max_b_frames = 0
        enc.flags |= av.codec.context.Flags.global_header
        options = {
            "preset": preset,
            "forced-idr": "1",
            "sc_threshold": "0",
            # The limits the variant's BANDWIDTH is derived from (transcode/bandwidth.py).
            "maxrate": str(limits.maxrate),
            "bufsize": str(limits.bufsize),
        }
        if tune:
            options["tune"] = tune
        if self.plan.width * self.plan.height * self._frame_rate <= SINGLE_THREAD_PIXEL_RATE:
            options["threads"] = "1"
        # Keyframes come only where the pipeline forces them, so every rung cuts at the same instants. When
        # a rung copies the source, cuts follow the source's keyframes, however far apart: no keyframe of
        # our own may come between them.
        keyint = "infinite" if source_keyframes else str(gop_frames * 4)
        options["x264-params"] = f"keyint={keyint}:min-keyint={gop_frames * 4}:scenecut=0"
        enc.options = options
        enc.open()
        return enc

    def _start_segmenter(self, avcc: bytes | None) -> None:
        video = None
        self.codecs = ""  # the video codec; the worker adds the audio one
        if avcc is not None:
            video = VideoTrack(VIDEO_TRACK_ID, VIDEO_TIMESCALE, self.plan.width, self.plan.height, avcc)
            self.codecs = codec_string(avcc)
        self._segmenter = Segmenter(video, self._audio_track, first_sequence=self._first_sequence,
                                    segment_duration=self._segment_duration, part_target=self._part_target)
        self._on_init(self, self._segmenter.init_bytes(), self.codecs)

    @property
    def next_sequence(self) -> int:
        """The media sequence number the next segment of this rung would get."""
        assert self._segmenter is not None
        return self._segmenter.next_sequence

    def run(self) -> None:
        ended = False
        try:
            while True:
                item = self.queue.get()
                if item is None:
                    ended = True
                    self._forward(None)  # the children flush while this rung does
                    break
                self._handle(item)
            self._finish()
        except BaseException as exc:  # reported by the pipeline, which stops the worker
            log.exception("rendition %s failed", self.plan.name)
            self.error = exc
            if not ended:
                self._forward(None)
                self._drain()

    def _forward(self, item: Item) -> None:
        for child in self.children:
            child.queue.put(item)

    def _drain(self) -> None:
        """After a failure, take (and drop) what still comes, so the pipeline never blocks on a full queue."""
        while self.queue.get() is not None:
            pass

    def _handle(self, item: VideoFrameItem | EncodedVideoItem | AudioItem) -> None:
        seg = self._segmenter
        assert seg is not None
        if isinstance(item, AudioItem):
            self._forward(item)
            self._emit(seg.add_audio(item.data, item.pts, item.duration))
        elif isinstance(item, EncodedVideoItem):
            self._last_dts = item.dts
            # FLV already carries length-prefixed NALs: copied as they are (sniffing could mistake a
            # 0x000001xx length for an Annex B start code).
            self._emit(seg.add_video(item.data, item.pts, item.dts, item.keyframe, item.boundary))
        else:
            self._encode(item)

    def _encode(self, item: VideoFrameItem) -> None:
        assert self._encoder is not None
        # Only the scale and encode calls are timed: not the children's queues, the segmenter or the writes.
        began = time.perf_counter()
        frame = self._reformatter.reformat(
            item.frame, width=self.plan.width, height=self.plan.height, format="yuv420p",
            interpolation=self._interpolation,
        )
        frame.pts = item.pts
        frame.time_base = Fraction(1, VIDEO_TIMESCALE)
        frame.pict_type = PictureType.I if item.boundary else PictureType.NONE
        if item.boundary:
            self._boundaries.add(item.pts)
        spent = time.perf_counter() - began
        if self.children:
            # Set up before it is shared: from here on the children and the encoder only read it.
            self._forward(VideoFrameItem(frame, item.pts, item.boundary))
        began = time.perf_counter()
        packets = self._encoder.encode(frame)
        spent += time.perf_counter() - began
        if self._frame_rate > 0:
            self.speed.add(time.monotonic(), 1.0 / self._frame_rate, spent)
        for packet in packets:
            self._packet(packet)

    def _packet(self, packet: av.Packet) -> None:
        assert self._segmenter is not None and packet.pts is not None
        dts = packet.dts if packet.dts is not None else packet.pts
        self._last_dts = dts
        boundary = packet.pts in self._boundaries
        if boundary:
            self._boundaries.discard(packet.pts)
        self._emit(
            self._segmenter.add_video(to_avcc_sample(bytes(packet)), packet.pts, dts, packet.is_keyframe, boundary)
        )

    def _finish(self) -> None:
        if self._encoder is not None:
            for packet in self._encoder.encode(None):
                self._packet(packet)
        assert self._segmenter is not None
        step = int(VIDEO_TIMESCALE / self._frame_rate) if self._frame_rate > 0 else 3000
        self._emit(self._segmenter.finish(self._last_dts + step))

    def _emit(self, outputs: list[Output]) -> None:
        for output in outputs:
            self._on_segment(self, output)
