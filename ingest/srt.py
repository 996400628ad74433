"""SRT ingest: caller encoders push MPEG-TS to an ffmpeg (libsrt) listener, one UDP port per stream key.

ffmpeg's listener takes one caller per process and cannot route callers of one port by streamid, so every stream key
has its own port (mediaserver/srt_routes.py assigns them). The caller's streamid, which ffmpeg logs at -loglevel
verbose ("accept streamid [...]"), names the key; ffmpeg remuxes the TS to FLV on its stdout (video copied, audio
re-encoded to AAC since broadcast TS often carries MP2 or AC-3, which FLV can't hold), and FlvReader and FlvUnpacker
turn that into MediaItems for the session. A wrong passphrase is refused by libsrt itself during the handshake.
"""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable

import ffmpeg  # ffmpeg-python: builds the command line

from ingest.flv import FlvError, FlvReader, FlvUnpacker, UnsupportedCodec
from ingest.media import AccessUnit, Authorizer, Publisher, PublishRefused

log = logging.getLogger(__name__)

PASSPHRASE_LENGTHS = (10, 79)  # what SRT accepts (SRTO_PASSPHRASE)
_CHUNK = 64 * 1024  # bytes read from ffmpeg's stdout at a time
_LOG_LINE_LIMIT = 64 * 1024  # a longer stderr line is cut (asyncio.StreamReader limit)
_KEPT_LOG_LINES = 20  # ffmpeg's last lines, for the error a failed listener reports


# -- sans-IO: the streamid and ffmpeg's log ----------------------------------------------------------------------
class StreamIdError(ValueError):
    """The caller's streamid names no stream key we can use; the message says why."""


def parse_streamid(streamid: str) -> str:
    """The stream key in an SRT streamid.

    Takes the SRT Access Control form (`#!::r=live/KEY,m=publish`, also `#!::u=NAME,r=KEY`: the key is the last
    path segment of r), MediaMTX's `publish:live/KEY`, and the plain key (`KEY` or `live/KEY`) that hardware
    encoders send. A caller asking to play (m=request, read:...) is refused: SRT here is for publishing."""
    text = streamid.strip()
    if not text:
        raise StreamIdError("the SRT streamid is empty; set it to the stream key")
    if text.startswith("#!::"):
        values: dict[str, str] = {}
        for pair in text[4:].split(","):
            name, sep, value = pair.partition("=")
            if not sep or not name.strip():
                raise StreamIdError(f"streamid item {pair!r} is not NAME=VALUE")
            values[name.strip()] = value.strip()
        mode = values.get("m", "publish")
        if mode != "publish":
            raise StreamIdError(f"streamid asks for m={mode}; this server only takes m=publish over SRT")
        resource = values.get("r")
        if not resource:
            raise StreamIdError("streamid has no r= (resource); use #!::r=live/STREAM_KEY,m=publish")
        text = resource
    else:
        action, sep, rest = text.partition(":")
        if sep and action in ("publish", "read"):
            if action == "read":
                raise StreamIdError("streamid asks to read; this server only takes publishers over SRT")
            text = rest
    key = text.rsplit("/", 1)[-1].strip()
    if not key:
        raise StreamIdError(f"no stream key in streamid {streamid!r}")
    return key


@dataclass(frozen=True, slots=True)
class Accepted:
    """ffmpeg accepted a caller with this streamid."""
    streamid: str


@dataclass(frozen=True, slots=True)
class HandshakeRejected:
    """libsrt refused a caller during the handshake (e.g. a wrong or missing passphrase)."""
    reason: str


@dataclass(frozen=True, slots=True)
class InputStream:
    """One stream of the caller's MPEG-TS, as ffmpeg's input dump lists it."""
    kind: str  # "video" or "audio"
    codec: str  # ffmpeg's codec name, e.g. "h264", "hevc", "mp2"


LogEvent = Accepted | HandshakeRejected | InputStream

_ACCEPT = re.compile(r"accept streamid \[(.*)\], length \d+")
_REJECT = re.compile(r"rsp\(REJECT\): \d+ - (.+)$")
_INPUT_STREAM = re.compile(r"^\s*Stream #0:\d+(?:\[0x[0-9a-f]+\])?(?:\(\w+\))?: (Video|Audio): (\w+)")


def parse_log_line(line: str) -> LogEvent | None:
    """What one line of the listener's stderr tells us, if anything."""
    if match := _ACCEPT.search(line):
        return Accepted(match.group(1))
    if match := _REJECT.search(line):
        return HandshakeRejected(match.group(1).strip())
    if match := _INPUT_STREAM.match(line):
        return InputStream(match.group(1).lower(), match.group(2))
    return None


_CODEC_NAMES = {"hevc": "HEVC (H.265)", "mpeg2video": "MPEG-2", "av1": "AV1", "vp9": "VP9", "mpeg4": "MPEG-4 Part 2"}


def unsupported_video_message(codec: str) -> str:
    name = _CODEC_NAMES.get(codec, codec)
    return f"the SRT source's video is {name}; SRT ingest takes H.264 only: set the encoder's video codec to H.264 (AVC)"


def listener_command(*, ffmpeg_path: str, host: str, port: int, latency_ms: int, passphrase: str | None,
                     probe_seconds: float) -> list[str]:
    """The ffmpeg command of one listener. The passphrase goes as an option, not in the URL (no escaping needed)."""
    options: dict[str, object] = {"analyzeduration": int(probe_seconds * 1_000_000), "latency": latency_ms * 1000}
    if passphrase:
        options["passphrase"] = passphrase
    url = f"srt://{'[' + host + ']' if ':' in host else host}:{port}?mode=listener"
    stream = ffmpeg.input(url, **options).output(
        "pipe:1", f="flv", vcodec="copy", acodec="aac", flvflags="no_duration_filesize")
    args: list[str] = stream.compile(cmd=ffmpeg_path)
    # Global options first: ffmpeg reads them anywhere, but warns about options after the output.
    return [args[0], "-hide_banner", "-nostdin", "-nostats", "-loglevel", "verbose", *args[1:]]


def ffmpeg_has_srt(ffmpeg_path: str = "ffmpeg") -> bool:
    """Whether this ffmpeg was built with libsrt (Debian's is; PyAV's bundled FFmpeg is not)."""
    try:
        result = subprocess.run([ffmpeg_path, "-hide_banner", "-protocols"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return any(line.strip() == "srt" for line in result.stdout.splitlines())


# -- the listeners -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SrtEndpoint:
    """One listening port and the stream keys (their hashes) it takes."""
    port: int
    key_hashes: frozenset[str]
    passphrase: str | None = None
    label: str = ""  # for the logs: the streams it serves


@dataclass
class SrtSettings:
    host: str = "0.0.0.0"
    latency_ms: int = 500
    probe_seconds: float = 2.0  # how long ffmpeg reads the TS to learn its codecs before media flows
    start_timeout: float = 15.0  # seconds from the accept to the first FLV bytes before the caller is dropped
    ffmpeg_path: str = "ffmpeg"
    backoff_max: float = 30.0  # longest wait before restarting a listener whose ffmpeg keeps failing
    stop_timeout: float = 3.0  # seconds ffmpeg gets after SIGTERM before SIGKILL


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the server dies, so no ffmpeg outlives a crashed server."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class _Caller:
    """What one ffmpeg run learned about its caller."""
    accepted: asyncio.Future[str | None]  # the streamid; None when ffmpeg ended without a caller
    streams: list[InputStream] = field(default_factory=list)
    last_lines: list[str] = field(default_factory=list)


class SrtListener:
    """One port: an ffmpeg listener waiting for a caller, serving it, then listening again (so a reconnect inside
    the reconnect window continues the same broadcast); restarted with backoff when ffmpeg fails."""

    def __init__(self, endpoint: SrtEndpoint, authorize: Authorizer, key_hash: Callable[[str], str],
                 settings: SrtSettings) -> None:
        self.endpoint = endpoint
        self._authorize = authorize
        self._key_hash = key_hash
        self.settings = settings
        self.busy = False  # a caller is connected
        self.retiring = False  # finish the current caller, then stop
        self._proc: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._restart_idle = False

    @property
    def port(self) -> int:
        return self.endpoint.port

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"srt-listener-{self.port}")

    def update(self, endpoint: SrtEndpoint) -> None:
        """New keys apply to the next caller at once; a new passphrase restarts an idle listener."""
        changed = endpoint.passphrase != self.endpoint.passphrase
        self.endpoint = endpoint
        self.retiring = False
        if changed and not self.busy and self._proc is not None:
            self._restart_idle = True
            self._signal(signal.SIGTERM)

    def retire(self) -> None:
        """Stop listening; a connected caller is served to its end."""
        self.retiring = True
        if not self.busy:
            self._stopping = True
            self._signal(signal.SIGTERM)

    async def stop(self) -> None:
        self._stopping = True
        self._signal(signal.SIGTERM)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait(self) -> None:
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _signal(self, sig: int) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)  # its own process group: nothing it started survives

    async def _run(self) -> None:
        backoff = 1.0
        while not self._stopping and not self.retiring:
            started = time.monotonic()
            try:
                served = await self._serve_one()
            except Exception:
                log.exception("SRT port %d: listener failed", self.port)
                served = False
            if self._stopping or self.retiring:
                break
            if served or self._restart_idle or time.monotonic() - started > 60:
                backoff = 1.0
                self._restart_idle = False
                continue
            log.warning("SRT port %d: ffmpeg listener stopped; restarting in %.0f s", self.port, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.backoff_max)

    async def _spawn(self) -> asyncio.subprocess.Process:
        command = listener_command(ffmpeg_path=self.settings.ffmpeg_path, host=self.settings.host, port=self.port,
                                   latency_ms=self.settings.latency_ms, passphrase=self.endpoint.passphrase,
                                   probe_seconds=self.settings.probe_seconds)
        return await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=_LOG_LINE_LIMIT, start_new_session=True,
            preexec_fn=_die_with_parent)

    async def _read_log(self, proc: asyncio.subprocess.Process, caller: _Caller) -> None:
        assert proc.stderr is not None
        while True:
            try:
                raw = await proc.stderr.readline()
            except ValueError:  # a line over the limit: drop it
                continue
            if not raw:
                break
            line = raw.decode(errors="replace").rstrip()
            caller.last_lines = (caller.last_lines + [line])[-_KEPT_LOG_LINES:]
            event = parse_log_line(line)
            if isinstance(event, Accepted) and not caller.accepted.done():
                caller.accepted.set_result(event.streamid)
            elif isinstance(event, HandshakeRejected):
                log.warning("SRT port %d: caller refused by SRT: %s", self.port, event.reason)
            elif isinstance(event, InputStream):
                caller.streams.append(event)
        if not caller.accepted.done():
            caller.accepted.set_result(None)

    async def _serve_one(self) -> bool:
        """Run one ffmpeg until its caller leaves. True when a caller was accepted (whatever came of it)."""
        proc = self._proc = await self._spawn()
        caller = _Caller(asyncio.get_running_loop().create_future())
        log_task = asyncio.create_task(self._read_log(proc, caller), name=f"srt-log-{self.port}")
        try:
            streamid = await caller.accepted
            if streamid is None:
                await proc.wait()
                if not self._stopping and not self._restart_idle and not self.retiring:
                    log.warning("SRT port %d: ffmpeg exited with %s before a caller came: %s", self.port,
                                proc.returncode, " | ".join(caller.last_lines[-3:]))
                return False
            self.busy = True
            await self._serve_caller(proc, streamid, caller, log_task)
            return True
        finally:
            self.busy = False
            await self._end(proc)
            log_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await log_task
            self._proc = None
            if self.retiring:
                self._stopping = True

    async def _end(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), self.settings.stop_timeout)
            except TimeoutError:
                self._signal(signal.SIGKILL)
                await proc.wait()

    async def _serve_caller(self, proc: asyncio.subprocess.Process, streamid: str, caller: _Caller,
                            log_task: asyncio.Task[None]) -> None:
        peer = f"srt:{self.port}"
        try:
            key = parse_streamid(streamid)
        except StreamIdError as exc:
            log.warning("SRT port %d: caller refused: %s", self.port, exc)
            return
        if self._key_hash(key) not in self.endpoint.key_hashes:
            log.warning("SRT port %d: caller refused: wrong stream key for this port (%s)", self.port,
                        self.endpoint.label or "no stream")
            return
        try:
            publisher = await self._authorize(key, peer, "srt")
        except PublishRefused as exc:
            log.warning("SRT port %d: caller refused: %s", self.port, exc)
            return
        stream_id = getattr(publisher, "stream_id", "?")
        log.info("stream %s: SRT caller on port %d publishing", stream_id, self.port)
        reason = "SRT caller disconnected"
        try:
            reason = await self._pump(proc, publisher, caller, log_task)
        except Exception as exc:  # on_media / reject_source raise when the server ended the publish
            reason = str(exc) or type(exc).__name__
            log.info("stream %s: SRT connection closed: %s", stream_id, reason)
        finally:
            await self._end(proc)
            await publisher.on_close(reason)

    async def _pump(self, proc: asyncio.subprocess.Process, publisher: Publisher, caller: _Caller,
                    log_task: asyncio.Task[None]) -> str:
        """ffmpeg's FLV into the publisher until the caller leaves; returns why it ended."""
        assert proc.stdout is not None
        reader, unpacker = FlvReader(), FlvUnpacker()
        got_video = False
        first = True
        while True:
            try:
                timeout = self.settings.start_timeout if first else None
                data = await asyncio.wait_for(proc.stdout.read(_CHUNK), timeout)
            except TimeoutError:
                return f"no media {self.settings.start_timeout:g} s after the SRT caller connected"
            if not data:
                break
            first = False
            try:
                tags = reader.feed(data)
            except FlvError as exc:  # ffmpeg's own output: a bug or a torn pipe, not the encoder's doing
                return f"ffmpeg's FLV is malformed: {exc}"
            for tag in tags:
                try:
                    items = unpacker.feed(tag)
                except UnsupportedCodec as exc:
                    await publisher.reject_source(str(exc))
                    return str(exc)
                except FlvError as exc:
                    log.debug("SRT port %d: skipping a malformed tag: %s", self.port, exc)
                    continue
                for item in items:
                    got_video = got_video or (isinstance(item, AccessUnit) and item.kind == "video")
                    await publisher.on_media(item)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), self.settings.stop_timeout)
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(log_task), 1.0)
        video = next((s.codec for s in caller.streams if s.kind == "video"), None)
        if not got_video and video is not None and video != "h264":
            message = unsupported_video_message(video)
            await publisher.reject_source(message)
            return message
        if proc.returncode not in (0, None) and not got_video:
            return f"ffmpeg failed: {' | '.join(caller.last_lines[-2:])}"
        return "SRT caller disconnected"


class SrtIngest:
    """The listeners of every SRT port in use; `apply` makes them match the wanted endpoints."""

    def __init__(self, authorize: Authorizer, key_hash: Callable[[str], str], settings: SrtSettings) -> None:
        self._authorize = authorize
        self._key_hash = key_hash
        self.settings = settings
        self.listeners: dict[int, SrtListener] = {}
        self._retired: set[SrtListener] = set()

    def apply(self, endpoints: list[SrtEndpoint]) -> None:
        wanted = {e.port: e for e in endpoints}
        for port, listener in list(self.listeners.items()):
            if port not in wanted:
                listener.retire()
                self._retired.add(listener)
                del self.listeners[port]
        for port, endpoint in wanted.items():
            current = self.listeners.get(port)
            if current is None:  # retired but still serving its caller: it stays
                current = next((r for r in self._retired if r.port == port and r.retiring and r.busy), None)
                if current is not None:
                    self._retired.discard(current)
                    self.listeners[port] = current
            if current is not None:
                current.update(endpoint)
                continue
            listener = SrtListener(endpoint, self._authorize, self._key_hash, self.settings)
            self.listeners[port] = listener
            listener.start()
            log.info("SRT port %d listening for %s", port, endpoint.label or "a stream")

    async def stop(self) -> None:
        everyone = [*self.listeners.values(), *self._retired]
        self.listeners.clear()
        self._retired.clear()
        await asyncio.gather(*(listener.stop() for listener in everyone), return_exceptions=True)
