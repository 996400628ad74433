"""RTMP ingest against real sockets on loopback: PyAV (FFmpeg's RTMP client) publishes, and a raw client
speaks OBS's command sequence, extended timestamps, aggregates, garbage and stalls."""
from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ingest.flv import TAG_AUDIO, TAG_VIDEO, FlvTag, encode_tag
from ingest.media import AccessUnit, MediaItem, Publisher, PublishRefused, SourceMetadata, TrackInfo
from ingest.rtmp import RtmpServer
from tests.media_source import PublishError, publish, start_publisher

KEY = "sk_test_key"


# -- a server in a background event loop, and what it hands its sinks ----------------------------------

class RecordingSink:
    def __init__(self, keys: "Keys", key: str) -> None:
        self.keys, self.key = keys, key
        self.tags: list[MediaItem] = []  # the items the RTMP ingest handed on, in order
        self.closes: list[str] = []
        self.rejected: list[str] = []
        self.closed = threading.Event()

    async def on_media(self, item: MediaItem) -> None:
        self.tags.append(item)

    async def reject_source(self, message: str) -> None:
        self.rejected.append(message)
        raise RuntimeError(message)

    async def on_close(self, reason: str) -> None:
        self.closes.append(reason)
        self.keys.live.discard(self.key)
        self.closed.set()

    def video(self) -> list[AccessUnit]:
        return [t for t in self.tags if isinstance(t, AccessUnit) and t.kind == "video"]

    def audio(self) -> list[AccessUnit]:
        return [t for t in self.tags if isinstance(t, AccessUnit) and t.kind == "audio"]


class Keys:
    """The authorize callback for tests: known keys, one live publish per key (as the session layer does)."""

    def __init__(self, *keys: str) -> None:
        self.keys = set(keys)
        self.live: set[str] = set()
        self.sinks: list[RecordingSink] = []
        self.calls: list[tuple[str, str, str]] = []

    async def __call__(self, app: str, key: str, peer: str) -> Publisher:
        self.calls.append((app, key, peer))
        if key not in self.keys:
            raise PublishRefused("unknown stream key")
        if key in self.live:
            raise PublishRefused("this stream already has a live encoder")
        self.live.add(key)
        sink = RecordingSink(self, key)
        self.sinks.append(sink)
        return sink


class RunningServer:
    def __init__(self, authorize: Any, **kwargs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = RtmpServer(authorize, host="127.0.0.1", port=0, **kwargs)
        self.run(self.server.start())

    def run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def url(self, key: str, app: str = "live") -> str:
        return f"rtmp://127.0.0.1:{self.server.port}/{app}/{key}"

    def close(self) -> None:
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def make_server() -> Iterator[Callable[..., RunningServer]]:
    servers: list[RunningServer] = []

    def make(authorize: Any, **kwargs: Any) -> RunningServer:
        servers.append(RunningServer(authorize, **kwargs))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- a raw RTMP client: AMF0 and chunking written out here, independent of the server's code -------------

def amf0(*values: Any) -> bytes:
    out = b""
    for value in values:
        if isinstance(value, str):
            out += b"\x02" + struct.pack(">H", len(value.encode())) + value.encode()
        elif isinstance(value, bool):
            out += b"\x01" + bytes([value])
        elif isinstance(value, (int, float)):
            out += b"\x00" + struct.pack(">d", value)
        elif value is None:
            out += b"\x05"
        else:
            assert isinstance(value, dict)
            out += b"\x03" + b"".join(struct.pack(">H", len(k)) + k.encode() + amf0(v) for k, v in value.items())
            out += b"\x00\x00\x09"
    return out


def basic_header(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes([fmt << 6 | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    return bytes([fmt << 6 | 1]) + (csid - 64).to_bytes(2, "little")  # little-endian, as the spec says


def encode_message(fmt: int, csid: int, field: int, type_id: int, payload: bytes, *, msid: int = 0,
                   chunk_size: int = 128) -> bytes:
    """One message in chunks: `field` is the timestamp (type 0) or delta (1, 2; and 3, which sends none)."""
    extended = field >= 0xFFFFFF
    ts = min(field, 0xFFFFFF).to_bytes(3, "big")
    header = {0: ts + len(payload).to_bytes(3, "big") + bytes([type_id]) + msid.to_bytes(4, "little"),
              1: ts + len(payload).to_bytes(3, "big") + bytes([type_id]), 2: ts, 3: b""}[fmt]
    ext = field.to_bytes(4, "big") if extended else b""
    out = [basic_header(fmt, csid) + header + ext + payload[:chunk_size]]
    for pos in range(chunk_size, len(payload), chunk_size):
        out.append(basic_header(3, csid) + ext + payload[pos : pos + chunk_size])  # continuations repeat the extension
    return b"".join(out)  # joined once: a 1 MB message in 128-byte chunks would take seconds of `+=`


class RawClient:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.received = b""
        self.chunk_size = 128

    def handshake(self) -> None:
        self.sock.sendall(b"\x03" + bytes(8) + os.urandom(1528))
        s0s1s2 = self.recv_exactly(3073)
        assert s0s1s2[0] == 3
        self.sock.sendall(s0s1s2[1:1537])  # C2 echoes S1

    def recv_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            more = self.sock.recv(n - len(data))
            assert more, "server closed during the handshake"
            data += more
        return data

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def message(self, type_id: int, payload: bytes, *, fmt: int = 0, field: int = 0, csid: int = 3,
                msid: int = 0) -> None:
        self.send(encode_message(fmt, csid, field, type_id, payload, msid=msid, chunk_size=self.chunk_size))

    def set_chunk_size(self, size: int) -> None:
        self.message(1, size.to_bytes(4, "big"), csid=2)
        self.chunk_size = size

    def command(self, *values: Any, msid: int = 0, csid: int = 3) -> None:
        self.message(0x14, amf0(*values), csid=csid, msid=msid)

    def recv_until(self, needle: bytes, timeout: float = 5) -> None:
        self.sock.settimeout(timeout)
        while needle not in self.received:
            more = self.sock.recv(65536)
            assert more, f"server closed before sending {needle!r}; got {self.received[-300:]!r}"
            self.received += more

    def is_closed_by_server(self, timeout: float) -> bool:
        """True once the server closes the connection (EOF or reset) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                more = self.sock.recv(65536)
                if not more:
                    return True
                self.received += more
        except ConnectionError:
            return True
        except socket.timeout:
            return False

    def connect_and_publish(self, key: str = KEY, app: str = "live") -> None:
        """OBS's sequence up to the publish reply."""
        self.handshake()
        self.set_chunk_size(4096)
        self.command("connect", 1, {"app": app, "type": "nonprivate", "flashVer": "FMLE/3.0 (compatible; FMSc/1.0)",
                                    "tcUrl": f"rtmp://127.0.0.1/{app}"})
        self.recv_until(b"NetConnection.Connect.Success")
        self.command("releaseStream", 2, None, key)
        self.command("FCPublish", 3, None, key)
        self.command("createStream", 4, None)
        self.command("publish", 5, None, key, "live", msid=1, csid=4)
        self.recv_until(b"NetStream.Publish.Start")

    def close(self) -> None:
        self.sock.close()


# A sequence header: avcC with one 4-byte SPS and one 2-byte PPS.
AVC_CONFIG = bytes([0x17, 0, 0, 0, 0, 1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1, 0, 4]) + b"\x67\x42\xc0\x1e\x01\x00\x02\x68\xce"


def video_body(i: int, size: int) -> bytes:
    return bytes([0x17 if i == 0 else 0x27, 1, 0, 0, 0]) + (size - 9).to_bytes(4, "big") + bytes([i % 256]) * (size - 9)


# -- raw-client tests ------------------------------------------------------------------------------------

def test_obs_command_sequence_and_compressed_headers(make_server: Callable[..., RunningServer],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    keys = Keys(KEY)
    server = make_server(keys)
    client = RawClient(server.server.port)
    client.connect_and_publish(KEY + "?token=abc")  # the query is not part of the key
    metadata = amf0("@setDataFrame", "onMetaData", {"width": 320, "height": 180})
    client.message(0x12, metadata, csid=4, msid=1)
    client.message(9, AVC_CONFIG, csid=6, msid=1)
    client.message(8, b"\xaf\x00\x11\x90", csid=5, msid=1)
    # Type 1 (new size), type 2 (same size), then type 3: a new message repeating the previous delta of 33.
    frames = [(0, 0, 9000), (1, 33, 12000), (2, 33, 12000), (3, 0, 12000), (3, 0, 12000), (1, 34, 700)]
    for i, (fmt, delta, size) in enumerate(frames):
        client.message(9, video_body(i, size), fmt=fmt, field=delta, csid=6, msid=1)
    client.message(8, b"\xaf\x01" + bytes(300), fmt=1, field=21, csid=5, msid=1)
    client.command("FCUnpublish", 6, None, KEY)
    client.command("deleteStream", 7, None, 1)
    assert client.is_closed_by_server(5)
    client.close()

    assert [c[:2] for c in keys.calls] == [("live", KEY)]
    sink = keys.sinks[0]
    assert sink.closed.wait(5) and sink.closes == ["encoder stopped publishing"]
    assert sink.tags[0] == SourceMetadata({"width": 320, "height": 180})
    assert sink.tags[1] == TrackInfo("video", "h264", AVC_CONFIG[5:])
    assert sink.tags[2] == TrackInfo("audio", "aac", b"\x11\x90")
    videos = sink.video()
    assert [t.dts_ms for t in videos] == [0, 33, 66, 99, 132, 166]
    assert [t.data for t in videos] == [video_body(i, size)[5:] for i, (_, _, size) in enumerate(frames)]
    assert videos[0].keyframe and not videos[1].keyframe
    assert sink.tags[-1] == AccessUnit("audio", 21, 0, True, bytes(300))
    assert not [r for r in caplog.records if r.name.startswith("pyrtmp") or r.levelno >= logging.WARNING]


def test_extended_timestamps_across_the_24_bit_limit(make_server: Callable[..., RunningServer]) -> None:
    keys = Keys(KEY)
    server = make_server(keys)
    client = RawClient(server.server.port)
    client.connect_and_publish()
    client.message(9, AVC_CONFIG, csid=7, msid=1)  # the parameters first (on their own chunk stream)
    sent = [  # (fmt, field, size); sizes over 4096 make continuation chunks
        (0, 0xFFFFF0, 5000),      # just under the limit
        (2, 0x0F, 5000),          # lands exactly on 0xFFFFFF: pyrtmp would read an extension here
        (3, 0, 5000),             # delta repeats: 0x100000E
        (0, 0x01000100, 9000),    # extended, continuations repeat it
        (1, 40, 300),
        (0, 0x01000200, 5000),    # extended again
        (3, 0, 5000),             # a type 3 after an extended type 0 repeats the extended field as its delta
    ]
    for i, (fmt, field, size) in enumerate(sent):
        if fmt == 3 and sent[i - 1][1] >= 0xFFFFFF:
            client.send(basic_header(3, 6) + sent[i - 1][1].to_bytes(4, "big") + video_body(i, size)[:4096]
                        + basic_header(3, 6) + sent[i - 1][1].to_bytes(4, "big") + video_body(i, size)[4096:])
        else:
            client.message(9, video_body(i, size), fmt=fmt, field=field, csid=6, msid=1)
    client.command("deleteStream", 6, None, 1)
    assert client.is_closed_by_server(5)
    sink = keys.sinks[0]
    assert sink.closed.wait(5)
    assert [t.dts_ms for t in sink.video()] == [
        0xFFFFF0, 0xFFFFFF, 0x100000E, 0x01000100, 0x01000128, 0x01000200, 0x02000400]
    assert [t.data for t in sink.video()] == [video_body(i, size)[5:] for i, (_, _, size) in enumerate(sent)]


def test_aggregate_amf3_and_unknown_messages(make_server: Callable[..., RunningServer],
                                            caplog: pytest.LogCaptureFixture) -> None:
    keys = Keys(KEY)
    server = make_server(keys)
    client = RawClient(server.server.port)
    client.handshake()
    client.message(0x11, b"\x00" + amf0("connect", 1, {"app": "live"}))  # AMF3 command, AMF0 inside
    client.recv_until(b"NetConnection.Connect.Success")
    client.command("createStream", 2, None)
    client.message(0x11, b"\x00" + amf0("publish", 3, None, KEY), csid=4, msid=1)  # no publishing type
    client.recv_until(b"NetStream.Publish.Start")
    # An aggregate: FLV tags whose timestamps are shifted to the message's own.
    inner = [FlvTag(TAG_VIDEO, 1000, AVC_CONFIG), FlvTag(TAG_AUDIO, 1010, b"\xaf\x01abc")]
    client.message(0x16, b"".join(encode_tag(t) for t in inner), field=5000, csid=6, msid=1)
    client.message(0x07, b"what is this", csid=6, msid=1)
    assert client.is_closed_by_server(5)
    sink = keys.sinks[0]
    assert sink.closed.wait(5)
    # The audio frame before any audio header can't be decoded and is not handed on.
    assert sink.tags == [TrackInfo("video", "h264", AVC_CONFIG[5:])]
    assert sink.closes == ["protocol error: unknown RTMP message type 0x07"]
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        f"rtmp 127.0.0.1:{client.sock.getsockname()[1]}: closing: unknown RTMP message type 0x07"]


def test_refusals_play_idle_budget_and_connection_limit(make_server: Callable[..., RunningServer],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    keys = Keys(KEY, "sk_second", "sk_third")
    server = make_server(keys, handshake_timeout=1.0, idle_timeout=1.0, max_connections=2, max_pending_per_address=3)
    # Wrong key and wrong app: an error status with the reason, then the server closes.
    for key, app, reason in [("nope", "live", b"unknown stream key"), (KEY, "other", b"unknown application")]:
        client = RawClient(server.server.port)
        client.handshake()
        client.command("connect", 1, {"app": app})
        client.command("createStream", 2, None)
        client.command("publish", 3, None, key, "live", msid=1)
        client.recv_until(b"NetStream.Publish.BadName")
        client.recv_until(reason)
        assert client.is_closed_by_server(2)
        client.close()
    # Play is not served.
    player = RawClient(server.server.port)
    player.handshake()
    player.command("connect", 1, {"app": "live"})
    player.command("createStream", 2, None)
    player.command("play", 3, None, KEY, msid=1)
    player.recv_until(b"NetStream.Play.Failed")
    assert player.is_closed_by_server(2)
    # A publisher that goes quiet is closed after idle_timeout; its sink hears about it once.
    quiet = RawClient(server.server.port)
    quiet.connect_and_publish()
    started = time.monotonic()
    assert quiet.is_closed_by_server(4)
    assert 0.7 < time.monotonic() - started < 3
    assert keys.sinks[0].closed.wait(2) and keys.sinks[0].closes == ["timed out (idle while publishing)"]
    # Megabytes before publishing: closed, whatever the timeouts.
    flood = RawClient(server.server.port)
    flood.handshake()
    try:
        flood.send(encode_message(0, 6, 0, 9, bytes(1_000_000)))
    except ConnectionError:
        pass
    assert flood.is_closed_by_server(2)
    # Past max_pending_per_address, the oldest connection without a key is closed so the new one gets in.
    held = [RawClient(server.server.port) for _ in range(3)]
    time.sleep(0.2)
    extra = RawClient(server.server.port)
    assert held[0].is_closed_by_server(1)
    assert not extra.is_closed_by_server(0.2) and not held[1].is_closed_by_server(0.2)
    for client in held + [extra]:
        client.close()
    # Past max_connections publishers, a valid key is refused before authorize() sees it.
    publishers = [RawClient(server.server.port) for _ in range(2)]
    for client, key in zip(publishers, [KEY, "sk_second"]):
        client.connect_and_publish(key)
    third = RawClient(server.server.port)
    third.handshake()
    third.command("connect", 1, {"app": "live"})
    third.command("createStream", 2, None)
    third.command("publish", 3, None, "sk_third", "live", msid=1)
    third.recv_until(b"NetStream.Publish.BadName")
    third.recv_until(b"2 publishing connections already open")
    assert third.is_closed_by_server(2)
    assert [c[1] for c in keys.calls][-2:] == [KEY, "sk_second"]
    for client in publishers + [third, flood, quiet, player]:
        client.close()
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("publish refused (key nope...): unknown stream key" in m for m in messages) == 1, messages
    assert sum("unknown application 'other'" in m for m in messages) == 1, messages
    assert any("only publishing is supported" in m for m in messages)
    assert any("timed out (idle while publishing)" in m for m in messages)
    assert any("without publishing" in m for m in messages)
    assert any("connections already open" in m for m in messages)
    assert sum("closing to make room for a new connection" in m for m in messages) == 1, messages


def test_stop_and_a_failing_sink_close_publishes_once(make_server: Callable[..., RunningServer]) -> None:
    class FailingKeys(Keys):
        async def __call__(self, app: str, key: str, peer: str) -> Publisher:
            sink = await super().__call__(app, key, peer)

            async def refuse(item: MediaItem) -> None:
                raise RuntimeError("stream cancelled by an admin")

            if key == "failing":
                sink.on_media = refuse  # type: ignore[method-assign]
            return sink

    keys = FailingKeys(KEY, "failing")
    server = make_server(keys)
    failing = RawClient(server.server.port)
    failing.connect_and_publish("failing")
    failing.message(9, AVC_CONFIG, csid=6, msid=1)
    assert failing.is_closed_by_server(3)
    live = RawClient(server.server.port)
    live.connect_and_publish()
    live.message(9, AVC_CONFIG, csid=6, msid=1)
    wait_for(lambda: len(keys.sinks) == 2 and len(keys.sinks[1].tags) == 1, 3, "the tag")
    server.run(server.server.stop())
    assert live.is_closed_by_server(3)
    assert keys.sinks[0].closes == ["ended by the server: stream cancelled by an admin"]
    assert keys.sinks[1].closes == ["server stopping"]


def test_importing_leaves_logging_alone() -> None:
    code = ("import logging; before = list(logging.getLogger().handlers); import ingest.rtmp; "
            "root = logging.getLogger(); assert root.handlers == before and root.level == logging.WARNING, root; "
            "bad = [n for n in logging.root.manager.loggerDict if n.startswith('pyrtmp') "
            "and logging.getLogger(n).getEffectiveLevel() < logging.WARNING]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30, cwd=os.path.dirname(os.path.dirname(__file__)))


# -- PyAV (FFmpeg's RTMP client) publishing ----------------------------------------------------------------

def check_media(sink: RecordingSink, frames: int) -> None:
    tracks = [t for t in sink.tags if isinstance(t, TrackInfo)]
    video_track = next(t for t in tracks if t.kind == "video")
    audio_track = next(t for t in tracks if t.kind == "audio")
    assert video_track.codec == "h264" and video_track.extradata[0] == 1  # avcC record
    assert sink.tags.index(video_track) < sink.tags.index(sink.video()[0])  # the parameters come first
    coded = sink.video()
    assert len(coded) == frames
    assert coded[0].keyframe and sum(u.keyframe for u in coded) >= frames // 30  # g = 1 s at 30 fps
    assert audio_track.codec == "aac" and len(audio_track.extradata) >= 2  # AudioSpecificConfig
    assert len(sink.audio()) > frames * 0.8 * 48000 / 1024 / 30
    assert any(isinstance(t, SourceMetadata) and "width" in t.values for t in sink.tags)
    for units in (sink.video(), sink.audio()):
        stamps = [t.dts_ms for t in units]
        assert stamps == sorted(stamps)


@pytest.mark.media
def test_pyav_publish_reaches_the_sink(make_server: Callable[..., RunningServer]) -> None:
    keys = Keys(KEY)
    server = make_server(keys)
    frames = publish(server.url(KEY), seconds=2.0)
    assert frames == 60
    sink = keys.sinks[0]
    assert sink.closed.wait(5)
    check_media(sink, frames)
    time.sleep(0.2)
    assert len(sink.closes) == 1


@pytest.mark.media
def test_wrong_key_is_refused_then_a_good_publish_works(make_server: Callable[..., RunningServer],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    keys = Keys(KEY)
    server = make_server(keys)
    with pytest.raises(PublishError):
        publish(server.url("sk_wrong"), seconds=1.0)
    refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(refusals) == 1 and "127.0.0.1:" in refusals[0] and "unknown stream key" in refusals[0], refusals
    frames = publish(server.url(KEY), seconds=1.0)
    assert keys.sinks[0].closed.wait(5)
    check_media(keys.sinks[0], frames)


@pytest.mark.media
def test_garbage_and_stalled_clients_do_not_disturb_a_publish(make_server: Callable[..., RunningServer]) -> None:
    keys = Keys(KEY)
    server = make_server(keys, handshake_timeout=1.0)
    publisher = start_publisher(server.url(KEY), seconds=3.0)
    wait_for(lambda: bool(keys.sinks) and len(keys.sinks[0].tags) > 5, 10, "the publish to start")
    rng = random.Random(5)
    garbage = RawClient(server.server.port)
    garbage.send(rng.randbytes(5000))
    garbage_after_handshake = RawClient(server.server.port)
    garbage_after_handshake.handshake()
    garbage_after_handshake.send(rng.randbytes(5000))
    stalled = RawClient(server.server.port)
    stalled.send(b"\x03" + bytes(700))  # half a C1, then nothing
    silent = RawClient(server.server.port)
    silent.handshake()  # then never connects
    started = time.monotonic()
    for client in (garbage, garbage_after_handshake, stalled, silent):
        assert client.is_closed_by_server(3)
        client.close()
    assert time.monotonic() - started < 2.5
    publisher.join(timeout=15)
    assert publisher.error is None, publisher.error
    sink = keys.sinks[0]
    assert sink.closed.wait(5)
    check_media(sink, publisher.frames)
    assert len(keys.sinks) == 1 and sink.closes == ["encoder stopped publishing"]


@pytest.mark.media
def test_second_publisher_on_a_live_key_is_refused(make_server: Callable[..., RunningServer]) -> None:
    keys = Keys(KEY)
    server = make_server(keys)
    first = start_publisher(server.url(KEY), seconds=3.0)
    wait_for(lambda: bool(keys.sinks) and len(keys.sinks[0].tags) > 5, 10, "the first publish to start")
    with pytest.raises(PublishError):
        publish(server.url(KEY), seconds=1.0)
    first.join(timeout=15)
    assert first.error is None, first.error
    assert keys.sinks[0].closed.wait(5)
    check_media(keys.sinks[0], first.frames)
    assert len(keys.sinks) == 1
    assert [c[1] for c in keys.calls] == [KEY, KEY]
