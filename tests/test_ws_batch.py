"""web/ws_batch.py: the text-frame encoder against independent decoders, bursts through a real server in order,
and the close codes and reasons the room asks for, as before the batching."""
from __future__ import annotations

import asyncio
import json
import struct
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web

from mediaserver.chat.room import Viewer
from tests.chat_client import connect, guest_session, run
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config
from web.ws_batch import FrameCache, SocketSink, encode_text_frame, pump_frames

SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000]


def payload(size: int, tag: int) -> bytes:
    """`size` bytes of valid UTF-8 that differ per tag, so a mixed-up order or a truncated frame shows."""
    return (f"{tag:06d}" + "abcdefghij" * (size // 10 + 1))[:size].encode() if size >= 6 else b"x" * size


def hand_parse(data: bytes) -> list[tuple[int, bytes]]:
    """RFC 6455 section 5.2 read by hand: [(first byte, payload)], every frame unmasked."""
    out, at = [], 0
    while at < len(data):
        first, second = data[at], data[at + 1]
        assert second & 0x80 == 0, "a server must not mask"
        length, at = second & 0x7F, at + 2
        if length == 126:
            (length,), at = struct.unpack("!H", data[at:at + 2]), at + 2
        elif length == 127:
            (length,), at = struct.unpack("!Q", data[at:at + 8]), at + 8
        out.append((first, data[at:at + length]))
        at += length
    return out


def test_encoder_uses_the_three_length_forms() -> None:
    for size, header_len, marker in [(0, 2, 0), (125, 2, 125), (126, 4, 126), (65535, 4, 126), (65536, 10, 127),
                                     (70000, 10, 127)]:
        body = payload(size, size)
        encoded = encode_text_frame(body)
        assert encoded[0] == 0x81  # FIN + text
        assert encoded[1] == marker
        assert len(encoded) == header_len + size
        assert int.from_bytes(encoded[2:header_len], "big") == (size if header_len > 2 else 0)
        assert hand_parse(encoded) == [(0x81, body)]
    every = b"".join(encode_text_frame(payload(s, i)) for i, s in enumerate(SIZES))
    assert hand_parse(every) == [(0x81, payload(s, i)) for i, s in enumerate(SIZES)]


def test_cache_finds_a_payload_by_identity_and_stays_bounded() -> None:
    cache = FrameCache(entries=4)
    first = payload(300, 1)
    assert cache.encoded(first) is cache.encoded(first)  # once per event, then the same object
    equal = bytes(bytearray(first))
    assert equal is not first and cache.encoded(equal) == encode_text_frame(first)
    for i in range(20):
        assert hand_parse(cache.encoded(payload(200, i))) == [(0x81, payload(200, i))]
    assert len(cache) <= 4


async def serve(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/ws"
    finally:
        await runner.cleanup()


async def read_all(url: str) -> tuple[list[Any], int | None, Any]:
    """Every message aiohttp's client decodes, then (close code, close reason)."""
    got: list[Any] = []
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(url, max_msg_size=0) as ws:
            while True:
                msg = await ws.receive(timeout=20)
                if msg.type == aiohttp.WSMsgType.CLOSE:
                    return got, msg.data, msg.extra
                if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    return got, ws.close_code, None
                got.append((msg.type, msg.data))


def test_one_burst_of_every_length_form_reaches_aiohttps_client_then_the_close() -> None:
    """All frames are queued before the sender wakes: one write of them all, then the close code and reason."""
    async def main() -> None:
        async def handler(request: web.Request) -> web.StreamResponse:
            ws = web.WebSocketResponse(compress=False)
            await ws.prepare(request)
            queue: asyncio.Queue[bytes | None] = asyncio.Queue()
            for i, size in enumerate(SIZES * 3):
                queue.put_nowait(payload(size, i))
            queue.put_nowait(None)
            await pump_frames(ws, request, queue, FrameCache())
            await ws.close(code=4403, message=b"stream is private")
            return ws

        async for url in serve(handler):
            got, code, reason = await read_all(url)
            assert [t for t, _ in got] == [aiohttp.WSMsgType.TEXT] * len(SIZES) * 3
            assert [d for _, d in got] == [payload(s, i).decode() for i, s in enumerate(SIZES * 3)]
            assert (code, reason) == (4403, "stream is private")

    run(main())


def test_a_viewer_too_slow_for_the_room_is_closed_1008_too_slow() -> None:
    """The room's queue-full rule: more offered than the queue holds before the sender runs."""
    async def main() -> None:
        viewers: list[Viewer] = []

        async def handler(request: web.Request) -> web.StreamResponse:
            ws = web.WebSocketResponse(compress=False)
            await ws.prepare(request)
            viewer = Viewer("slow", "guest", "127.0.0.1", queue_size=8)
            viewers.append(viewer)
            offered = [viewer.offer(payload(50, i)) for i in range(12)]
            assert offered == [True] * 8 + [False] * 4
            await pump_frames(ws, request, viewer.queue, FrameCache())
            await ws.close(code=viewer.close_code, message=viewer.close_reason.encode())
            return ws

        async for url in serve(handler):
            got, code, reason = await read_all(url)
            assert got == []  # a dropped viewer's backlog is discarded, as before
            assert (code, reason) == (1008, "too slow")
            assert viewers[0].dropped

    run(main())


def test_the_direct_writer_drops_a_socket_that_stops_reading_and_keeps_the_others_going() -> None:
    """Viewer.sink (what the chat socket uses): frames go straight to the transport once per loop turn; a
    client that stops reading fills its socket and then the writer's limit, and is dropped 1008 "too slow"
    while a reading client gets every frame, in order."""
    async def main() -> None:
        results: dict[str, Any] = {}
        reader_ready = asyncio.Event()
        stalled = asyncio.Event()

        async def handler(request: web.Request) -> web.StreamResponse:
            ws = web.WebSocketResponse(compress=False)
            await ws.prepare(request)
            role = request.query["role"]
            viewer = Viewer(role, "guest", "127.0.0.1")
            sink = SocketSink(request, viewer.drop_too_slow, limit=128 * 1024, cache=FrameCache())
            viewer.sink = sink
            results[role] = viewer

            async def pump() -> None:
                await viewer.queue.get()
                if not viewer.dropped:
                    sink.flush()
                await ws.close(code=viewer.close_code, message=viewer.close_reason.encode())

            sender = asyncio.get_running_loop().create_task(pump())
            if role == "reader":
                reader_ready.set()
            else:
                await reader_ready.wait()
                await asyncio.sleep(0.2)
                reader = results["reader"]
                sent = 0
                while not viewer.dropped and sent < 200_000:
                    text = payload(1000, sent)
                    viewer.offer(text)
                    reader.offer(text)
                    sent += 1
                    if sent % 20 == 0:
                        await asyncio.sleep(0.001)  # the loop turns: both sinks flush
                results["sent"] = sent
                reader.close(1000, "done")
                stalled.set()
            await sender
            return ws

        async for url in serve(handler):
            async with aiohttp.ClientSession() as session:
                reading = asyncio.get_running_loop().create_task(read_all(url + "?role=reader"))
                await reader_ready.wait()
                async with session.ws_connect(url + "?role=stalled", max_msg_size=0) as stalled_ws:
                    await asyncio.wait_for(stalled.wait(), 60)  # it never read a byte meanwhile
                    got_stalled = 0
                    while True:
                        msg = await stalled_ws.receive(timeout=20)
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            break
                        got_stalled += 1
                    assert (stalled_ws.close_code, msg.extra) == (1008, "too slow"), msg
                got, code, _ = await reading
            sent = results["sent"]
            assert results["stalled"].dropped and sent < 200_000
            # Its backlog was bounded: what the kernel buffers held plus the writer's limit, then nothing.
            assert got_stalled < sent, (got_stalled, sent)
            assert [d for _, d in got] == [payload(1000, i).decode() for i in range(sent)]
            assert code == 1000

    run(main())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    config = small_config(tmp_path_factory.mktemp("ws-batch"))
    config.chat.messages_per_viewer = 2000
    config.chat.messages_per_address = 4000
    handle = run_server(config)
    try:
        yield handle
    finally:
        handle.stop()


def test_a_burst_of_500_room_messages_arrives_in_order_each_its_own_text_message(server: ServerHandle) -> None:
    stream = server.create_stream("Burst")

    async def main() -> None:
        async with guest_session() as a, guest_session() as b, aiohttp.ClientSession() as staff_session:
            listeners = [await connect(a, server, stream["id"], name="Ann"),
                         await connect(b, server, stream["id"], name="Ben")]
            staff = await connect(staff_session, server, stream["id"], name="Pastor", token=ADMIN_TOKEN)
            texts = [f"burst {i:03d} " + "amen " * (i % 40) for i in range(500)]
            # In five bursts of 100 sent back to back: each reaches the room in one or a few reads, so the
            # listeners' queues hold up to 100 frames when their senders wake (a multi-frame write). Not all
            # 500 at once: the room handles a socket's frames without yielding, and more than the send queue
            # (256) before a sender runs is the room's "too slow" rule, batching or not.
            for start in range(0, 500, 100):
                await asyncio.gather(*(staff.send("chat:message", {"text": t}) for t in texts[start:start + 100]))
                last = texts[start + 99].strip()
                await staff.expect("chat:message", lambda d, last=last: d["text"] == last, timeout=20)
            for listener in listeners:
                seen: list[str] = []
                while len(seen) < 500:
                    msg = await listener.ws.receive(timeout=20)
                    assert msg.type == aiohttp.WSMsgType.TEXT, msg
                    frame = json.loads(msg.data)  # one whole JSON event per message: no frames glued together
                    if frame["event"] == "chat:message" and frame["data"]["text"].startswith("burst "):
                        seen.append(frame["data"]["text"])
                assert seen == [t.strip() for t in texts]

    run(main())


def test_an_oversized_frame_gets_its_error_and_then_the_close_1009(server: ServerHandle) -> None:
    stream = server.create_stream("Too large")

    async def main() -> None:
        async with guest_session() as session:
            client = await connect(session, server, stream["id"], name="Carl")
            await client.ws.send_str(json.dumps({"event": "chat:message", "data": {"text": "x" * 70_000}}))
            events = []
            while True:
                msg = await client.ws.receive(timeout=20)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                events.append(json.loads(msg.data))
            assert msg.type == aiohttp.WSMsgType.CLOSE and (msg.data, msg.extra) == (1009, "frame too large")
            assert [e["data"]["code"] for e in events if e["event"] == "chat:error"] == ["too_large"]

    run(main())


def test_made_private_mid_service_a_guest_is_told_then_closed_4403(server: ServerHandle) -> None:
    stream = server.create_stream("Going private")

    async def main() -> None:
        async with guest_session() as session:
            client = await connect(session, server, stream["id"], name="Dora")
            status, _ = await asyncio.to_thread(server.api, "PATCH", f"/api/streams/{stream['id']}",
                                                {"visibility": "PRIVATE"})
            assert status == 200
            events = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                msg = await client.ws.receive(timeout=20)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                events.append(json.loads(msg.data))
            assert msg.type == aiohttp.WSMsgType.CLOSE and (msg.data, msg.extra) == (4403, "stream is private")
            assert any(e["event"] == "chat:error" and e["data"]["code"] == "forbidden" for e in events)

    run(main())
