"""What the server tells a transcode worker (argv JSON) and what the worker reports back (stdout JSON lines).

Kept as plain dataclasses so both sides of the process boundary share one definition.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RenditionSpec:
    name: str
    height: int
    video_bitrate: int
    passthrough: bool = False


@dataclass
class TranscodeJob:
    stream_id: str
    store_root: str          # LocalStore root folder
    key_prefix: str          # e.g. "media/<stream>/<broadcast>"
    renditions: list[RenditionSpec]
    segment_duration: float = 2.0
    first_sequence: int = 0  # media sequence number of the first segment this worker writes
    period: int = 0          # connection number inside the broadcast; names the init segment
    time_offset: float = 0.0  # broadcast timeline seconds where this connection's media starts
    preset: str = "veryfast"
    tune: str = "zerolatency"
    audio_bitrate: int = 128_000
    audio_sample_rate: int = 48_000
    reserve_bytes: int = 0     # free space the store keeps back (see storage.reserve_mb)
    top_rung: str = "auto"     # transcode.top_rung: "auto" | "passthrough" | "encode" (see transcode/ladder.py)
    part_target: float | None = None  # LL-HLS: parts of at most this many seconds; None = segments only

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "TranscodeJob":
        data = json.loads(text)
        data["renditions"] = [RenditionSpec(**r) for r in data["renditions"]]
        return cls(**data)


# Worker events (one JSON object per stdout line), by "event":
#   "rendition": name, width, height, bandwidth, codecs, frame_rate, init (store key)
#   "segment":   rendition, sequence, start, duration, pdt (unix seconds), size, key (store key),
#                init (store key of its init segment: a connection gets a second one if audio starts late)
#   "warning":   message      (e.g. disk full: a segment was lost, the stream goes on)
#   "rendition" also carries audio_only (a radio-style rung: width = height = 0, codecs "mp4a.40.2")
#   "part":      rendition, sequence, index, start, duration, independent (LL-HLS; payload: the part's bytes)
#   "segment" and "rendition" carry their bytes (the media segment, the init segment) as payload too.
#   An event with a payload says its size in "bytes"; the raw bytes follow its line on stdout.
#   "error":     message, and from the pipeline code + retry (retry false: the source's codec is
#                unsupported, a restarted worker would fail the same way) (fatal; the worker exits non-zero)
#   "end":       (all renditions flushed)
@dataclass
class WorkerEvent:
    event: str
    data: dict[str, Any] = field(default_factory=dict)
    payload: bytes | None = None

    @classmethod
    def parse(cls, line: bytes) -> "WorkerEvent":
        obj = json.loads(line)
        name = obj.pop("event")
        return cls(str(name), obj)


def split_events(data: bytes) -> list[WorkerEvent]:
    """Every event in a worker's whole stdout (lines, each followed by its payload when it has one)."""
    events: list[WorkerEvent] = []
    position = 0
    while position < len(data):
        end = data.index(b"\n", position)
        event = WorkerEvent.parse(data[position:end])
        position = end + 1
        size = event.data.pop("bytes", None)
        if isinstance(size, int):
            event.payload = data[position:position + size]
            position += size
        events.append(event)
    return events
