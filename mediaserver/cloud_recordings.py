"""A local copy of every cloud (Mux, IVS) recording, written as the built-in engine writes its own: CMAF init and
segments per rendition, the index the workers log, VOD playlists, a fast-start MP4 and the thumbnails.

The sermon library's podcast audio, clips, chat replay and re-airs all read that layout, so with the copy a Mux or
IVS service works there as ours do. The platform's HLS (Mux: the asset's playback URL, signed when private; IVS:
the recording's objects in its S3 bucket) is fetched, its top variant remuxed without re-encoding through our own
segmenter, and the segments dated from the broadcast's start (what chat replay maps messages with).

One copy at a time, off the event loop; a failed copy is retried a bounded number of times; recording.ready goes
out once, when the copy is in place or has finally failed (the reason in the recording's `error`).
"""
from __future__ import annotations

import asyncio
import json
import logging
import posixpath
import re
import struct
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Protocol

import av

from mediaserver.backends.base import BackendError, RemoteStream, Unsupported
from mediaserver.backends.lifecycle import COPY_EVENT
from mediaserver.backends.registry import BackendRegistry
from mediaserver.config import Config
from mediaserver.db import Database
from mediaserver.events import Event, LocalEventBus
from packager.h264 import H264Error, aac_codec_string, avcc_record, codec_string, sps_dimensions, to_avcc_sample
from packager.fmp4 import AudioTrack, VideoTrack
from packager.recording import load_index, mp4_source, write_mp4, write_vod
from packager.segmenter import Segment, Segmenter
from packager.thumbnails import write_thumbnails
from storage.local import LocalStore

log = logging.getLogger(__name__)

VIDEO_TIMESCALE = 90_000
MAX_FILE = 512 * 1024 * 1024      # one playlist or segment; more is not a recording's HLS
FETCH_TIMEOUT = 30.0
OFF = ("no local copy: [backends] copy_recordings is off, so the sermon library can't make podcast audio, and "
       "clips and chat replay need the recording here")
MEDIA_ROOT = "media"              # as mediaserver/sessions.py: web/media.py serves media/<stream>/<broadcast>/...


class CopyError(RuntimeError):
    """The copy can't be made (bad media, the object is gone); trying again would fail the same way."""


class TransientCopyError(CopyError):
    """The platform couldn't be read this time (unreachable, 5xx, throttled): worth another try."""


class Cancelled(CopyError):
    """The server is stopping; the copy resumes at the next start."""


# -- sans-IO: HLS playlists and AAC framing ---------------------------------------------------------------

_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def attributes(text: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in _ATTRIBUTE.findall(text)}


def best_variant(master: str) -> str | None:
    """The URI of the highest-BANDWIDTH variant of a master playlist; None when it is a media playlist."""
    best: tuple[int, str] | None = None
    lines = master.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("#EXT-X-STREAM-INF:"):
            uri = next((u.strip() for u in lines[i + 1:] if u.strip() and not u.startswith("#")), None)
            bandwidth = int(attributes(line.split(":", 1)[1]).get("BANDWIDTH", "0") or 0)
            if uri is not None and (best is None or bandwidth > best[0]):
                best = (bandwidth, uri)
    return best[1] if best else None


def media_files(media: str) -> list[str]:
    """The URIs to read, in order, from a media playlist: its init section (EXT-X-MAP) if any, then every
    segment. A master playlist, or one with no segments, is refused."""
    if not media.lstrip().startswith("#EXTM3U"):
        raise CopyError("the platform's recording playlist is not HLS (no #EXTM3U)")
    files: list[str] = []
    segments = 0
    expect_segment = False
    for line in (raw.strip() for raw in media.splitlines()):
        if line.startswith("#EXT-X-MAP:"):
            uri = attributes(line.split(":", 1)[1]).get("URI")
            if uri and uri not in files:
                files.append(uri)
        elif line.startswith("#EXTINF:"):
            expect_segment = True
        elif line and not line.startswith("#") and expect_segment:
            files.append(line)
            segments += 1
            expect_segment = False
    if not segments:
        raise CopyError("the platform's recording playlist lists no segments")
    return files


ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def adts_frames(data: bytes) -> tuple[bytes, list[bytes]] | None:
    """(AudioSpecificConfig, raw AAC frames) of ADTS-framed data (AAC in MPEG-TS); None if it isn't ADTS."""
    frames: list[bytes] = []
    asc = b""
    pos = 0
    while pos + 7 <= len(data):
        if data[pos] != 0xFF or data[pos + 1] & 0xF6 != 0xF0:
            return None if not frames else (asc, frames)
        protection_absent = data[pos + 1] & 1
        profile = data[pos + 2] >> 6
        rate_index = (data[pos + 2] >> 2) & 0x0F
        channels = ((data[pos + 2] & 1) << 2) | (data[pos + 3] >> 6)
        length = ((data[pos + 3] & 3) << 11) | (data[pos + 4] << 3) | (data[pos + 5] >> 5)
        header = 7 if protection_absent else 9
        if length < header or pos + length > len(data) or rate_index >= len(ADTS_RATES):
            return None if not frames else (asc, frames)
        if not asc:
            asc = struct.pack(">H", ((profile + 1) << 11) | (rate_index << 7) | (channels << 3))
        frames.append(data[pos + header:pos + length])
        pos += length
    return (asc, frames) if frames else None


def asc_sample_rate(asc: bytes) -> int:
    index = ((asc[0] & 0x07) << 1) | (asc[1] >> 7)
    if index >= len(ADTS_RATES):
        raise CopyError(f"unsupported AAC sampling frequency index {index}")
    return ADTS_RATES[index]


def asc_channels(asc: bytes) -> int:
    return (asc[1] >> 3) & 0x0F or 2


@dataclass(frozen=True)
class WallClock:
    """Media time -> wall time of a platform recording: spans of (wall start, media seconds), in media order
    (Mux's recording_times: one per encoder connection, so a reconnect's gap in wall time is kept out of the
    media timeline, as chat replay expects). Past the last span, its clock runs on."""
    spans: tuple[tuple[float, float], ...]

    def at(self, media: float) -> float:
        covered = 0.0
        for i, (wall, seconds) in enumerate(self.spans):
            if media < covered + seconds or i == len(self.spans) - 1:
                return wall + (media - covered)
            covered += seconds
        return media


# -- reading the platform's media (blocking) ---------------------------------------------------------------

class MediaSource(Protocol):
    def read(self, ref: str) -> bytes: ...
    def resolve(self, base: str, uri: str) -> str: ...


class HttpSource:
    """HLS over HTTP(S) (Mux's stream host). A signed playlist's token goes on to what it names, if they have
    none of their own."""

    def __init__(self, timeout: float = FETCH_TIMEOUT) -> None:
        self.timeout = timeout

    def read(self, ref: str) -> bytes:
        try:
            with urllib.request.urlopen(urllib.request.Request(ref), timeout=self.timeout) as response:
                data: bytes = response.read(MAX_FILE + 1)
        except urllib.error.HTTPError as exc:
            what = f"{_shown(ref)} answered {exc.code}"
            if exc.code >= 500 or exc.code in (408, 429):
                raise TransientCopyError(what) from None
            raise CopyError(what) from None
        except (urllib.error.URLError, OSError) as exc:
            raise TransientCopyError(f"cannot reach {_shown(ref)}: {getattr(exc, 'reason', exc)}") from None
        if len(data) > MAX_FILE:
            raise CopyError(f"{_shown(ref)} is larger than {MAX_FILE} bytes")
        return data

    def resolve(self, base: str, uri: str) -> str:
        url = urllib.parse.urljoin(base, uri)
        query = urllib.parse.urlsplit(base).query
        if query and not urllib.parse.urlsplit(url).query:
            url += "?" + query
        return url


def _shown(url: str) -> str:
    """A URL for logs and errors: without its query (a signed token is a credential)."""
    return url.split("?", 1)[0]


class S3Source:
    """An IVS recording's objects, read from its bucket with the IVS back-end's credentials (private recordings
    too: nothing public is needed)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client, self.bucket = client, bucket

    def read(self, ref: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=ref)["Body"]
            data: bytes = body.read(MAX_FILE + 1)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            what = f"s3://{self.bucket}/{ref}: {error.get('Code', '?')} {error.get('Message', '')}".strip()
            if status >= 500 or error.get("Code") in ("SlowDown", "Throttling", "RequestTimeout"):
                raise TransientCopyError(what) from None
            raise CopyError(what) from None
        except BotoCoreError as exc:
            raise TransientCopyError(f"cannot read s3://{self.bucket}/{ref}: {exc}") from None
        if len(data) > MAX_FILE:
            raise CopyError(f"s3://{self.bucket}/{ref} is larger than {MAX_FILE} bytes")
        return data

    def resolve(self, base: str, uri: str) -> str:
        return posixpath.normpath(posixpath.join(posixpath.dirname(base), uri))


def download_hls(source: MediaSource, playlist: str, target: Path, cancelled: threading.Event) -> int:
    """The top variant of the HLS at `playlist`, its init section and segments joined into target (MPEG-TS and
    fragmented MP4 both stay demuxable joined). Returns the variant's segment count."""
    text = source.read(playlist).decode("utf-8", "replace")
    variant = best_variant(text)
    if variant is not None:
        playlist = source.resolve(playlist, variant)
        text = source.read(playlist).decode("utf-8", "replace")
    files = media_files(text)
    with open(target, "wb") as out:
        for uri in files:
            if cancelled.is_set():
                raise Cancelled("the server is stopping")
            out.write(source.read(source.resolve(playlist, uri)))
    return len(files)


# -- remux into our layout (blocking) ----------------------------------------------------------------------

@dataclass
class Probe:
    avcc: bytes
    width: int
    height: int
    frame_rate: float
    asc: bytes | None


def probe(path: Path) -> Probe:
    """The H.264 configuration (from extradata or the first keyframe's parameter sets) and the AAC one."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise CopyError("the platform's recording has no video")
        video = container.streams.video[0]
        if video.codec_context.name != "h264":
            raise CopyError(f"the platform's recording is {video.codec_context.name}, not H.264")
        audio = container.streams.audio[0] if container.streams.audio else None
        rate = video.average_rate or video.guessed_rate or 30
        avcc: bytes | None = None
        asc: bytes | None = None
        if video.codec_context.extradata:
            avcc = avcc_record(bytes(video.codec_context.extradata))
        if audio is not None and audio.codec_context.extradata:
            asc = bytes(audio.codec_context.extradata)
        wanted = [video] + ([audio] if audio is not None and asc is None else [])
        for packet in container.demux(wanted):
            if packet.size == 0:
                continue
            if packet.stream.type == "video" and avcc is None and packet.is_keyframe:
                avcc = avcc_record(bytes(packet))
            elif packet.stream.type == "audio" and asc is None:
                framed = adts_frames(bytes(packet))
                asc = framed[0] if framed else None
            if avcc is not None and (audio is None or asc is not None):
                break
    if avcc is None:
        raise CopyError("no H.264 keyframe with its parameter sets in the platform's recording")
    width, height = sps_dimensions(avcc)
    return Probe(avcc, width, height, float(rate), asc if audio is not None else None)


def remux(path: Path, store: LocalStore, key_prefix: str, clock: WallClock, segment_duration: float,
          cancelled: threading.Event) -> list[dict[str, Any]]:
    """Cut the joined source into our CMAF segments (cuts on source keyframes, at least segment_duration apart)
    and write them and the index the built-in workers log; returns the index lines. Segment dates: the
    source's first frame at the clock's start."""
    info = probe(path)
    name = f"{info.height}p"
    video = VideoTrack(1, VIDEO_TIMESCALE, info.width, info.height, info.avcc)
    audio = None
    if info.asc is not None:
        audio = AudioTrack(2, asc_sample_rate(info.asc), asc_sample_rate(info.asc), asc_channels(info.asc), info.asc)
    segmenter = Segmenter(video, audio, segment_duration=segment_duration)
    init_key = f"{key_prefix}/{name}/init-0.mp4"
    store.write(init_key, segmenter.init_bytes(), use_reserve=True)
    codecs = codec_string(info.avcc) + (f",{aac_codec_string(info.asc)}" if info.asc else "")
    segments: list[dict[str, Any]] = []

    def keep(outputs: list[Any]) -> None:
        for out in outputs:
            if not isinstance(out, Segment):
                continue
            key = f"{key_prefix}/{name}/seg-{out.sequence}.m4s"
            store.write(key, out.data, use_reserve=True)
            segments.append({"event": "segment", "rendition": name, "sequence": out.sequence,
                             "start": round(out.start, 6), "duration": round(out.duration, 6),
                             "pdt": round(clock.at(out.start), 3), "size": len(out.data), "key": key,
                             "init": init_key})

    step = int(segment_duration * VIDEO_TIMESCALE)
    with av.open(str(path)) as container:
        vstream = container.streams.video[0]
        astream = container.streams.audio[0] if container.streams.audio and audio is not None else None
        origin: float | None = None      # the first video frame's decode time: our time 0
        last_cut: int | None = None
        audio_next = 0
        for packet in container.demux([s for s in (vstream, astream) if s is not None]):
            if cancelled.is_set():
                raise Cancelled("the server is stopping")
            if packet.size == 0 or packet.pts is None or packet.time_base is None:
                continue
            base = float(packet.time_base)
            if packet.stream.type == "video":
                dts_s = (packet.dts if packet.dts is not None else packet.pts) * base
                if origin is None:
                    if not packet.is_keyframe:
                        continue             # nothing decodable before the first keyframe
                    origin = dts_s
                pts = round((packet.pts * base - origin) * VIDEO_TIMESCALE)
                dts = round((dts_s - origin) * VIDEO_TIMESCALE)
                boundary = packet.is_keyframe and (last_cut is None or pts - last_cut >= step - VIDEO_TIMESCALE // 100)
                if boundary:
                    last_cut = pts
                try:
                    sample = to_avcc_sample(bytes(packet))
                except H264Error as exc:
                    raise CopyError(f"bad H.264 in the platform's recording: {exc}") from None
                keep(segmenter.add_video(sample, pts, dts, packet.is_keyframe, boundary))
            elif audio is not None and origin is not None:
                raw = bytes(packet)
                framed = adts_frames(raw)
                frames = framed[1] if framed else [raw]
                pts = round((packet.pts * base - origin) * audio.timescale)
                if pts + 1024 * len(frames) <= 0:
                    continue
                pts = max(pts, audio_next)
                for frame in frames:
                    keep(segmenter.add_audio(frame, pts, 1024))
                    pts += 1024
                audio_next = pts
        keep(segmenter.finish())
    if not segments:
        raise CopyError("the platform's recording gave no segments (no decodable video)")
    peak = max(int(s["size"] * 8 / s["duration"]) for s in segments if s["duration"] > 0) if segments else 0
    rendition = {"event": "rendition", "name": name, "width": info.width, "height": info.height, "bitrate": peak,
                 "codecs": codecs, "audio_only": False, "frame_rate": round(info.frame_rate, 3), "init": init_key,
                 "passthrough": True, "note": "copied from the cloud platform's recording"}
    lines = [rendition, *segments]
    store.write(f"{key_prefix}/index-0.jsonl",
                "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode(), use_reserve=True)
    return lines


@dataclass
class Copied:
    playlist_key: str
    mp4_key: str | None
    size: int
    mp4_size: int | None
    duration: float
    note: str | None       # what is missing, if the copy stands without it (e.g. no MP4)


def write_copy(store: LocalStore, key_prefix: str, path: Path, clock: WallClock, segment_duration: float,
               cancelled: threading.Event) -> Copied:
    """The whole recording in our layout under key_prefix, from the joined platform media at path."""
    store.delete_prefix(key_prefix)  # what an interrupted copy left
    remux(path, store, key_prefix, clock, segment_duration, cancelled)
    tracks = [t for t in load_index(store, key_prefix) if t.entries]  # read back as every reader will
    write_vod(store, key_prefix, tracks, segment_duration)
    duration = sum(e.duration for e in tracks[0].entries)
    size = sum(e.size for t in tracks for e in t.entries)
    try:
        write_thumbnails(store, key_prefix, tracks)
    except Exception:  # extras: the recording stands without them
        log.exception("%s: thumbnails of the copied recording failed", key_prefix)
    source = mp4_source(tracks)
    if source is None:
        return Copied(f"{key_prefix}/master.m3u8", None, size, None, duration, "MP4 not made")
    mp4_key = write_mp4(store, key_prefix, source)
    local = store.local_path(mp4_key)
    return Copied(f"{key_prefix}/master.m3u8", mp4_key, size, local.stat().st_size if local else None, duration,
                  None)


# -- where the platform keeps a recording, and when it began -------------------------------------------------

def _remote(stream: dict[str, Any]) -> RemoteStream:
    data = json.loads(stream.get("backend_ref") or "{}")
    return RemoteStream(backend=data.get("backend", stream.get("backend") or ""), remote_id=data.get("remote_id", ""),
                        playback_id=data.get("playback_id"), extra=data.get("extra") or {})


def _private(stream: dict[str, Any]) -> bool:
    return (stream.get("visibility") or "PUBLIC") != "PUBLIC" or bool(stream.get("password_hash"))


def _moment(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


def mux_recording_clock(config: Config, asset_id: str) -> WallClock | None:
    """When the Mux asset's media was live: its recording_times (started_at, duration), None if not given."""
    import mux_python
    from mux_python.rest import ApiException
    from urllib3.exceptions import HTTPError

    configuration = mux_python.Configuration(host=config.mux.base_url.rstrip("/"))
    configuration.username = config.mux.env("token_id")
    configuration.password = config.mux.env("token_secret")
    try:
        asset = mux_python.AssetsApi(mux_python.ApiClient(configuration)).get_asset(asset_id).data
    except (ApiException, HTTPError, OSError, ValueError) as exc:
        log.info("Mux asset %s: no recording_times (%s); dating it from the broadcast's start", asset_id, exc)
        return None
    times = getattr(asset, "recording_times", None) or []
    spans = []
    for span in times:
        started = _moment(getattr(span, "started_at", None))
        if started is None:
            return None
        spans.append((started, float(getattr(span, "duration", None) or 0.0)))
    return WallClock(tuple(spans)) if spans else None


def s3_client(config: Config) -> Any:
    """boto3 S3 with the [ivs] credentials and endpoint (the bucket IVS records into)."""
    import boto3
    from botocore.config import Config as BotoConfig
    kwargs: dict[str, Any] = {"region_name": config.ivs.region, "config": BotoConfig(
        connect_timeout=5, read_timeout=FETCH_TIMEOUT, retries={"max_attempts": 2, "mode": "standard"})}
    if config.ivs.endpoint_url:
        kwargs["endpoint_url"] = config.ivs.endpoint_url
    if config.ivs.access_key_id:
        kwargs["aws_access_key_id"] = config.ivs.access_key_id
        kwargs["aws_secret_access_key"] = config.ivs.secret_access_key
    return boto3.client("s3", **kwargs)


# -- the copier ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    stream_id: str
    recording_id: str
    attempt: int = 1


class CloudRecordingCopier:
    """Copies cloud recordings one at a time (announced on the bus as COPY_EVENT by the lifecycle), and
    announces recording.ready for each once, after its copy or its final failure."""

    def __init__(self, config: Config, db: Database, store: LocalStore, bus: LocalEventBus,
                 backends: BackendRegistry) -> None:
        self.config, self.db, self.store, self.bus, self.backends = config, db, store, bus, backends
        self.settings = config.backends
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._cancelled = threading.Event()
        self._timers: set[asyncio.TimerHandle] = set()
        self._task: asyncio.Task[None] | None = None
        self._s3: Any = None
        self._unsubscribe: Callable[[], None] = bus.subscribe(self._on_event)

    async def _on_event(self, event: Event) -> None:
        if event.name == COPY_EVENT:
            self._queue.put_nowait(Job(event.stream_id, str(event.data["recording"])))

    async def start(self) -> None:
        """Resume what an earlier run left: cloud recordings still waiting for their copy."""
        pending = await asyncio.to_thread(self.db.recordings_where,
                                          "remote_asset is not null and playlist_key is null and status = ?",
                                          ["PROCESSING"])
        for row in sorted(pending, key=lambda r: r["created_at"]):
            log.info("stream %s: resuming the copy of recording %s", row["stream_id"], row["id"])
            self._queue.put_nowait(Job(row["stream_id"], row["id"]))
        self._task = asyncio.get_running_loop().create_task(self._run(), name="cloud-recording-copier")

    async def stop(self) -> None:
        self._unsubscribe()
        self._cancelled.set()  # a copy under way stops at its next file; the next start resumes it
        for timer in self._timers:
            timer.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._handle(job)
            except Exception:
                log.exception("stream %s: copy of recording %s failed unexpectedly", job.stream_id, job.recording_id)
                await self._finish(job, None, "copy failed unexpectedly (see the server log)")

    async def _handle(self, job: Job) -> None:
        recording = await asyncio.to_thread(self.db.recording, job.stream_id, job.recording_id)
        if recording is None or recording.get("playlist_key") or recording.get("status") != "PROCESSING":
            return  # deleted meanwhile, or already copied or announced
        if not self.settings.copy_recordings:
            await self._finish(job, None, OFF)
            return
        try:
            copied = await asyncio.to_thread(self._copy, recording)
        except Cancelled:
            log.info("stream %s: copy of recording %s stopped with the server", job.stream_id, job.recording_id)
            return
        except TransientCopyError as exc:
            attempts = max(1, self.settings.copy_attempts)
            if job.attempt < attempts:
                delay = self.settings.copy_retry_seconds * 2 ** (job.attempt - 1)
                log.warning("stream %s: copy of recording %s failed (try %d of %d), again in %.0f s: %s",
                            job.stream_id, job.recording_id, job.attempt, attempts, delay, exc)
                await asyncio.to_thread(self.db.update_recording, job.recording_id,
                                        error=f"copy failed (try {job.attempt} of {attempts}), retrying: {exc}")
                self._later(delay, Job(job.stream_id, job.recording_id, job.attempt + 1))
                return
            await self._finish(job, None, f"copy failed after {attempts} tries: {exc}")
            return
        except (CopyError, BackendError, Unsupported, H264Error, av.FFmpegError, OSError) as exc:
            await self._finish(job, None, f"copy failed: {exc}")
            return
        await self._finish(job, copied, copied.note)

    def _later(self, delay: float, job: Job) -> None:
        loop = asyncio.get_running_loop()

        def due() -> None:
            self._timers.discard(timer)
            self._queue.put_nowait(job)
        timer = loop.call_later(delay, due)
        self._timers.add(timer)

    async def _finish(self, job: Job, copied: Copied | None, error: str | None) -> None:
        fields: dict[str, Any] = {"status": "READY", "error": error}
        if copied is not None:
            fields.update(playlist_key=copied.playlist_key, mp4_key=copied.mp4_key, size=copied.size,
                          mp4_size=copied.mp4_size, duration=copied.duration)
            log.info("stream %s: recording %s copied here: %.1f s", job.stream_id, job.recording_id, copied.duration)
        else:
            log.warning("stream %s: recording %s not copied here: %s", job.stream_id, job.recording_id, error)
        recording = await asyncio.to_thread(self.db.recording, job.stream_id, job.recording_id)
        if recording is None:
            return
        await asyncio.to_thread(self.db.update_recording, job.recording_id, **fields)
        self.bus.publish(Event("recording.ready", job.stream_id, {"recording": job.recording_id,
                                                                  "broadcast": recording.get("broadcast_id")}))

    # -- one copy (blocking, in a thread) --------------------------------------------------------------------
    def _copy(self, recording: dict[str, Any]) -> Copied:
        stream = self.db.stream(recording["stream_id"])
        broadcast_id = recording.get("broadcast_id")
        if stream is None or not broadcast_id:
            raise CopyError("the recording has no broadcast to file it under")
        asset = json.loads(recording["remote_asset"])
        backend_name = str(stream.get("backend") or "")
        source: MediaSource
        if backend_name == "mux":
            backend = self.backends.get("mux")
            playlist = backend.recording_playback_url(_remote(stream), asset, private=_private(stream),
                                                      ttl_seconds=3600)
            source = HttpSource()
            clock = mux_recording_clock(self.config, str(asset.get("id") or ""))
        elif backend_name == "ivs":
            if not asset.get("bucket") or not asset.get("playlist"):
                raise CopyError("the IVS recording names no bucket or playlist")
            if self._s3 is None:
                self._s3 = s3_client(self.config)
            source, playlist, clock = S3Source(self._s3, str(asset["bucket"])), str(asset["playlist"]), None
        else:
            raise CopyError(f"no copy for recordings of the {backend_name or 'builtin'} back-end")
        if clock is None:  # the broadcast's start (the stream's actual_start while it is the latest one)
            broadcast = self.db.broadcast(broadcast_id) or {}
            latest = self.db.latest_broadcast(stream["id"]) or {}
            actual = stream.get("actual_start") if latest.get("id") == broadcast_id else None
            clock = WallClock(((float(actual or broadcast.get("started_at") or time.time()), 0.0),))
        key_prefix = f"{MEDIA_ROOT}/{stream['id']}/{broadcast_id}"
        with tempfile.TemporaryDirectory(dir=self.config.data_path, prefix=".cloud-copy-") as folder:
            joined = Path(folder) / "source"
            download_hls(source, playlist, joined, self._cancelled)
            try:
                return write_copy(self.store, key_prefix, joined, clock, self.config.hls.segment_duration,
                                  self._cancelled)
            except BaseException:
                self.store.delete_prefix(key_prefix)  # no half copy left for a reader to find
                raise
