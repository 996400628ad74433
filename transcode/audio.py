"""The shared audio track: decode the source audio (AAC, Opus...), resample to the output rate, encode AAC
once for all rungs.

Output timestamps are sample counts on the broadcast timeline, so audio stays continuous across segments;
an AudioClock keeps that count on the source's timestamps (padding or dropping samples) so A/V stay in sync.
"""
from __future__ import annotations

import logging
from fractions import Fraction

import av
import numpy as np
from av.audio.resampler import AudioResampler

from transcode.audio_clock import AudioClock
from transcode.live_stats import LevelMeter
from transcode.rendition import AudioItem

log = logging.getLogger(__name__)


# Full scale of the integer sample formats a decoder may hand out (most give floats already).
_INT_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2147483648.0}


def float_samples(frame: av.AudioFrame) -> np.ndarray:
    """The frame's samples as floats in [-1, 1], any layout (for the level meter, which takes every channel)."""
    data = frame.to_ndarray()
    if data.dtype.kind == "f":
        return data
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    return data.astype(np.float32) / _INT_SCALE.get(data.dtype, 2.0 ** (8 * data.dtype.itemsize - 1))


class AudioTranscoder:
    def __init__(self, decoder: av.AudioCodecContext, *, sample_rate: int, bitrate: int, start_floor: float = 0.0,
                 sync_tolerance: float = 1 / 60) -> None:
        """decoder: an opened-on-first-use PyAV decoder for the source's audio (transcode.pipeline.open_decoder)."""
        self.sample_rate = sample_rate
        # Audio may precede the first video tag; it must still not start before this connection's
        # place on the timeline, or it would overlap the previous connection's audio.
        self._floor = int(round(start_floor * sample_rate))
        self.clock = AudioClock(sample_rate, floor=self._floor, tolerance=max(1, int(sync_tolerance * sample_rate)))
        self._decoder = decoder
        self._resampler = AudioResampler(format="fltp", layout="stereo", rate=sample_rate)
        enc = av.CodecContext.create("aac", "w")
        assert isinstance(enc, av.AudioCodecContext)
        enc.sample_rate = sample_rate
        enc.layout = "stereo"
        enc.format = "fltp"
        enc.bit_rate = bitrate
        enc.time_base = Fraction(1, sample_rate)
        enc.flags |= av.codec.context.Flags.global_header
        enc.open()
        self._encoder = enc
        self.config = bytes(enc.extradata or b"")  # AudioSpecificConfig for the init segment
        self._next_pts: int | None = None
        self._drop = 0  # output samples still to drop (the source clock is behind the counter)
        self.level = LevelMeter()  # of the decoded source audio, before resampling (transcode/live_stats.py)

    @property
    def next_pts(self) -> int | None:
        """The output sample count where the next encoded sample goes (None before the first frame)."""
        return self._next_pts

    def push(self, data: bytes, time_seconds: float) -> list[AudioItem]:
        """One compressed audio frame from the source, at its broadcast-timeline time."""
        packet = av.Packet(data)
        out: list[AudioItem] = []
        for frame in self._decoder.decode(packet):
            self.level.add(float_samples(frame), frame.samples, frame.sample_rate or self.sample_rate)
            out_samples = frame.samples * self.sample_rate / max(1, frame.sample_rate or self.sample_rate)
            placement = self.clock.place(time_seconds, int(round(out_samples)))
            if self._next_pts is None:
                self._next_pts = max(int(round(time_seconds * self.sample_rate)), self._floor)
            if placement.pad:
                out.extend(self._encode(self._silence(placement.pad)))
            self._drop += placement.drop
            for resampled in self._resampler.resample(frame):
                out.extend(self._encode(resampled))
        return out

    def flush(self) -> list[AudioItem]:
        out: list[AudioItem] = []
        if self._next_pts is not None:
            for resampled in self._resampler.resample(None):
                out.extend(self._encode(resampled))
        out.extend(self._convert(self._encoder.encode(None)))
        return out

    def _silence(self, samples: int) -> av.AudioFrame:
        frame = av.AudioFrame.from_ndarray(np.zeros((2, samples), dtype=np.float32), format="fltp", layout="stereo")
        frame.sample_rate = self.sample_rate
        return frame

    def _trim(self, frame: av.AudioFrame) -> av.AudioFrame | None:
        if self._drop <= 0:
            return frame
        if self._drop >= frame.samples:
            self._drop -= frame.samples
            return None
        kept = np.asarray(frame.to_ndarray(), dtype=np.float32)[:, self._drop :]
        self._drop = 0
        trimmed = av.AudioFrame.from_ndarray(np.ascontiguousarray(kept), format="fltp", layout="stereo")
        trimmed.sample_rate = self.sample_rate
        return trimmed

    def _encode(self, frame: av.AudioFrame) -> list[AudioItem]:
        assert self._next_pts is not None
        trimmed = self._trim(frame)
        if trimmed is None:
            return []
        trimmed.pts = self._next_pts
        trimmed.time_base = Fraction(1, self.sample_rate)
        self._next_pts += trimmed.samples
        return self._convert(self._encoder.encode(trimmed))

    def _convert(self, packets: list[av.Packet]) -> list[AudioItem]:
        items = []
        for p in packets:
            # The encoder's priming packet sits before zero; a track fragment can't start there.
            if p.pts is None or p.pts < 0:
                continue
            items.append(AudioItem(bytes(p), int(p.pts), int(p.duration or 1024)))
        return items
