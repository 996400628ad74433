"""Deinterlaces decoded video (1080i broadcast cameras and encoders) before it is scaled and encoded.

Interlaced frames go through a PyAV filter graph (bwdif, one output frame per input frame); progressive
frames pass untouched until a source first sends an interlaced one.
"""
from __future__ import annotations

import logging
from fractions import Fraction

import av
import av.filter

log = logging.getLogger(__name__)


class Deinterlacer:
    def __init__(self, filter_name: str = "bwdif", time_base: Fraction = Fraction(1, 90_000)) -> None:
        self.filter_name = filter_name
        self.time_base = time_base
        self._graph: av.filter.Graph | None = None
        self._shape: tuple[int, int, str] | None = None
        self.deinterlaced = 0

    def _open(self, frame: av.VideoFrame) -> av.filter.Graph:
        graph = av.filter.Graph()
        src = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                               time_base=self.time_base)
        # deint=interlaced: frames flagged progressive go through as they are.
        deint = graph.add(self.filter_name, "mode=send_frame:parity=auto:deint=interlaced")
        sink = graph.add("buffersink")
        src.link_to(deint)
        deint.link_to(sink)
        graph.configure()
        return graph

    def push(self, frame: av.VideoFrame) -> list[av.VideoFrame]:
        shape = (frame.width, frame.height, frame.format.name)
        out: list[av.VideoFrame] = []
        if self._graph is not None and shape != self._shape:
            out.extend(self.flush())
        if self._graph is None:
            if not frame.interlaced_frame:
                out.append(frame)
                return out
            log.info("interlaced source (%dx%d); deinterlacing with %s", frame.width, frame.height, self.filter_name)
            self._graph = self._open(frame)
            self._shape = shape
        frame.time_base = self.time_base
        self._graph.push(frame)
        out.extend(self._pull())
        return out

    def _pull(self) -> list[av.VideoFrame]:
        assert self._graph is not None
        out: list[av.VideoFrame] = []
        while True:
            try:
                result = self._graph.pull()
            except (BlockingIOError, EOFError):
                return out
            except av.error.FFmpegError as exc:
                if getattr(exc, "errno", None) in (11, 35):  # EAGAIN
                    return out
                raise
            assert isinstance(result, av.VideoFrame)
            self.deinterlaced += 1
            out.append(result)

    def flush(self) -> list[av.VideoFrame]:
        if self._graph is None:
            return []
        try:
            self._graph.push(None)
            out = self._pull()
        finally:
            self._graph = None
            self._shape = None
        return out
