"""The transcode worker process: media items (ingest/media.py) on stdin, CMAF segments into the store, JSON
events on stdout. It never knows which protocol fed it.

One process per live connection keeps codec work off the server's event loop and a crash contained.
Run as `python -m transcode.worker '<TranscodeJob JSON>' [--no-store]`.
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import IO

from ingest.media import AccessUnit, ItemReader, MediaWireError, arrival_clock
from packager.segmenter import Output, Part, Segment
from storage.local import LocalStore
from storage.store import StorageError, StorageFullError
from transcode.bandwidth import peak_bandwidth
from transcode.job import TranscodeJob
from transcode.pipeline import Pipeline, PipelineError
from transcode.rendition import RenditionEncoder

log = logging.getLogger("transcode.worker")


class EventWriter:
    """Serializes events from the rendition threads onto stdout, one JSON line each.

    Rendition and segment events also go to the broadcast's index file, from which a restarted
    server rebuilds the recording."""

    def __init__(self, out: IO[bytes], index_path: str | None = None) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._index: IO[bytes] | None = open(index_path, "ab") if index_path else None

    def send(self, event: str, payload: bytes | None = None, **data: object) -> None:
        """One JSON line; with a payload, the line says its size ("bytes") and the raw bytes follow it
        (stdout only), so the server holds the newest media in memory without reading the disk."""
        if payload is not None:
            data["bytes"] = len(payload)
        line = json.dumps({"event": event, **data}, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            if self._index is not None and event in ("rendition", "segment"):
                try:
                    self._index.write(line)
                    self._index.flush()
                except OSError as exc:  # a full disk must not stop the live stream
                    log.error("cannot append to the recording index: %s", exc)
            self._out.write(line)
            if payload is not None:
                self._out.write(payload)
            self._out.flush()


class DiscardStore:
    """The store of a worker run with --no-store: media goes out only as event payloads."""

    def write(self, key: str, data: bytes, *, use_reserve: bool = False) -> None:
        pass


class Worker:
    def __init__(self, job: TranscodeJob, events: EventWriter, *, stats_interval: float = 1.0,
                 discard_media: bool = False) -> None:
        """stats_interval: seconds between `stats` events (transcode speed per rung, audio level), sent as
        media comes in. discard_media: write nothing to the store (a remote worker: the origin stores the
        payloads of the events)."""
        self.job = job
        self.events = events
        self.stats_interval = stats_interval
        self._stats_at: float | None = None  # monotonic time of the last stats event
        self.store: LocalStore | DiscardStore = (DiscardStore() if discard_media
                                                 else LocalStore(job.store_root, job.reserve_bytes))
        # Program date-time = anchor + timeline seconds. The anchor is the smallest (read time - media time)
        # seen before the first segment: the media read on time. The first read alone would date everything
        # late by the backlog that piled up in the pipe while this process started (about half a second).
        self._best_anchor: float | None = None
        self._anchor: float | None = None  # fixed at the first segment, so dates never jump
        self._first_read: float | None = None
        self._init_keys: dict[str, str] = {}
        self.pipeline = Pipeline(job, self._on_init, self._on_output)

    def _key(self, rendition: str, name: str) -> str:
        return f"{self.job.key_prefix}/{rendition}/{name}"

    def _on_init(self, rendition: RenditionEncoder, data: bytes, codecs: str) -> None:
        suffix = f"-{rendition.generation}" if rendition.generation else ""
        key = self._key(rendition.plan.name, f"init-{self.job.period}{suffix}.mp4")
        self.store.write(key, data)
        self._init_keys[rendition.plan.name] = key
        audio_codec = "mp4a.40.2" if rendition._audio_track is not None else ""
        audio_bitrate = self.job.audio_bitrate if audio_codec else 0
        if rendition.plan.passthrough:
            # The source's own rate is not ours to bound: the measured peak takes over as segments come.
            bitrate = rendition.plan.video_bitrate + audio_bitrate
        else:
            bitrate = peak_bandwidth(0 if rendition.plan.audio_only else rendition.plan.video_bitrate, audio_bitrate,
                                     segment_duration=self.job.segment_duration, frame_rate=self.pipeline.frame_rate,
                                     audio_sample_rate=self.job.audio_sample_rate)
        self.events.send(
            "rendition",
            data,
            name=rendition.plan.name,
            width=rendition.plan.width,
            height=rendition.plan.height,
            bitrate=bitrate,  # the peak a player will meet: BANDWIDTH from the first master playlist on
            codecs=",".join(c for c in (codecs, audio_codec) if c),
            audio_only=rendition.plan.audio_only,
            frame_rate=round(self.pipeline.frame_rate, 3),
            init=key,
            passthrough=rendition.plan.passthrough,
            note=getattr(rendition.plan, "note", ""),  # why passthrough or encoded
        )

    def _pdt(self, start: float) -> float:
        if self._anchor is None:
            if self._best_anchor is not None:
                self._anchor = self._best_anchor
            else:  # a segment out of the first read: that read's time is the media's start
                first = self._first_read if self._first_read is not None else time.time()
                self._anchor = first - self.job.time_offset
        return self._anchor + start

    def _note_read(self, read_at: float) -> None:
        media = self.pipeline.media_time
        if self._anchor is None and media is not None:
            anchor = read_at - media
            if self._best_anchor is None or anchor < self._best_anchor:
                self._best_anchor = anchor

    def _on_output(self, rendition: RenditionEncoder, output: Output) -> None:
        if isinstance(output, Part):
            self._on_part(rendition, output)
        else:
            self._on_segment(rendition, output)

    def _on_part(self, rendition: RenditionEncoder, part: Part) -> None:
        """LL-HLS parts live in the server's memory only; their segment (the parts joined) is the file."""
        self.events.send("part", part.data, rendition=rendition.plan.name, sequence=part.sequence, index=part.index,
                         start=round(part.start, 6), duration=round(part.duration, 6),
                         independent=part.independent)

    def _on_segment(self, rendition: RenditionEncoder, segment: Segment) -> None:
        key = self._key(rendition.plan.name, f"seg-{segment.sequence}.m4s")
        try:
            self.store.write(key, segment.data)
        except StorageFullError as exc:
            log.error("stream %s: %s", self.job.stream_id, exc)
            self.events.send("warning", code="disk_full", message=str(exc), rendition=rendition.plan.name)
            return
        except StorageError as exc:
            log.error("stream %s: %s", self.job.stream_id, exc)
            self.events.send("warning", code="storage", message=str(exc), rendition=rendition.plan.name)
            return
        self.events.send(
            "segment",
            segment.data,
            rendition=rendition.plan.name,
            sequence=segment.sequence,
            start=round(segment.start, 6),
            duration=round(segment.duration, 6),
            pdt=round(self._pdt(segment.start), 3),
            size=len(segment.data),
            key=key,
            init=self._init_keys.get(rendition.plan.name, ""),
        )

    def _maybe_send_stats(self) -> None:
        now = time.monotonic()
        if not self.pipeline.started:
            return
        if self._stats_at is not None and now - self._stats_at < self.stats_interval:
            return
        self._stats_at = now
        stats = self.pipeline.live_stats(now)
        self.events.send("stats", rungs=stats["rungs"], audio=stats["audio"])

    def run(self, source: IO[bytes]) -> int:
        reader = ItemReader()
        arrived: float | None = None
        try:
            while True:
                chunk = source.read1(65536) if hasattr(source, "read1") else source.read(65536)
                if not chunk:
                    break
                read_at = time.time()
                if self._first_read is None:
                    self._first_read = read_at
                for item in reader.feed(chunk):
                    if (stamp := arrival_clock(item)) is not None:
                        arrived = stamp  # the server's arrival time of the access unit that follows
                        continue
                    self.pipeline.on_item(item)
                    if arrived is not None and isinstance(item, AccessUnit):
                        self._note_read(arrived)
                        arrived = None
                # Without stamps (a bare item stream) the read time stands in: later, so never the minimum else.
                self._note_read(read_at)
                self._maybe_send_stats()
                failure = self.pipeline.failed()
                if failure is not None:
                    raise failure
        except (MediaWireError, PipelineError) as exc:
            # retry=False: the source itself is unsupported; restarting the worker can't help.
            retry = not isinstance(exc, PipelineError) or exc.retry
            self.events.send("error", message=str(exc), retry=retry,
                             code="unsupported_codec" if not retry else "bad_source")
            log.error("stream %s: %s", self.job.stream_id, exc)
            self.pipeline.finish()
            return 2
        self.pipeline.finish()
        failure = self.pipeline.failed()
        if failure is not None:
            self.events.send("error", message=f"{type(failure).__name__}: {failure}")
            return 3
        self.events.send("end")
        return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s worker %(levelname)s %(message)s")
    job = TranscodeJob.from_json(argv[0])
    # --no-store (a remote worker, transcode/remote_server.py): no files here, the origin keeps them.
    discard = "--no-store" in argv[1:]
    index: str | None = None
    if not discard:
        path = LocalStore(job.store_root).path_for(f"{job.key_prefix}/index-{job.period}.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        index = str(path)
    events = EventWriter(sys.stdout.buffer, index)
    try:
        return Worker(job, events, discard_media=discard).run(sys.stdin.buffer)
    except Exception as exc:
        log.exception("stream %s: worker failed", job.stream_id)
        events.send("error", message=f"{type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
