"""The shared audio track: decode the source AAC, resample to the output rate, encode AAC once for all rungs.

Output timestamps are sample counts on the broadcast timeline, so audio stays continuous across segments.
"""
from __future__ import annotations

from fractions import Fraction

import av
from av.audio.resampler import AudioResampler

from transcode.rendition import AudioItem


class AudioTranscoder:
    def __init__(self, source_config: bytes, *, sample_rate: int, bitrate: int, start_floor: float = 0.0) -> None:
        self.sample_rate = sample_rate
        # Audio may precede the first video tag; it must still not start before this connection's
        # place on the timeline, or it would overlap the previous connection's audio.
        self._floor = int(round(start_floor * sample_rate))
        self._decoder = av.CodecContext.create("aac", "r")
        self._decoder.extradata = source_config
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

    def push(self, data: bytes, time_seconds: float) -> list[AudioItem]:
        """One raw AAC frame from the source, at its broadcast-timeline time."""
        packet = av.Packet(data)
        out: list[AudioItem] = []
        for frame in self._decoder.decode(packet):
            if self._next_pts is None:
                self._next_pts = max(int(round(time_seconds * self.sample_rate)), self._floor)
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

    def _encode(self, frame: av.AudioFrame) -> list[AudioItem]:
        assert self._next_pts is not None
        frame.pts = self._next_pts
        frame.time_base = Fraction(1, self.sample_rate)
        self._next_pts += frame.samples
        return self._convert(self._encoder.encode(frame))

    def _convert(self, packets: list[av.Packet]) -> list[AudioItem]:
        items = []
        for p in packets:
            # The encoder's priming packet sits before zero; a track fragment can't start there.
            if p.pts is None or p.pts < 0:
                continue
            items.append(AudioItem(bytes(p), int(p.pts), int(p.duration or 1024)))
        return items
