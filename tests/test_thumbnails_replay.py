"""Recording pictures and chat replay, end to end: a real RTMP broadcast whose frames carry their numbers
(bench/frame_code.py), chat from real WebSocket clients while it is on air, then the recording's poster, sprite
sheet + WebVTT storyboard, and its chat replay (hide/unhide), and the player using both in Chromium."""
from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import re
import time
from typing import Any, Iterator

import av
import numpy as np
import pytest

from bench import frame_code
from tests.browser import module_browser
from tests.chat_client import connect, guest_session
from tests.media_source import publish_numbered
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config

pytestmark = pytest.mark.media

FPS = 30
SECONDS = 14.0
WIDTH, HEIGHT = 320, 180


def decode_jpeg(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data), "r", format="jpeg_pipe") as source:
        frame = next(source.decode(video=0))
        return frame.to_ndarray(format="rgb24")


def luma(rgb: np.ndarray) -> np.ndarray:
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]).astype(np.uint8)


def parse_vtt(text: str) -> list[tuple[float, float, str, tuple[int, int, int, int]]]:
    def seconds(stamp: str) -> float:
        h, m, s = stamp.split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    assert text.startswith("WEBVTT")
    cues = []
    for start, end, uri, x, y, w, h in re.findall(
            r"(\S+) --> (\S+)\n(\S+)#xywh=(\d+),(\d+),(\d+),(\d+)", text):
        cues.append((seconds(start), seconds(end), uri, (int(x), int(y), int(w), int(h))))
    return cues


def first_frame_number(server: ServerHandle, mp4_url: str) -> int:
    """The number drawn in the recording's first picture (the MP4 starts where the recording does)."""
    status, _, body = server.get(mp4_url)
    assert status == 200
    with av.open(io.BytesIO(body), "r", format="mp4") as source:
        frame = next(source.decode(video=0))
        number = frame_code.read_frame(frame)
    assert number is not None
    return number


class Broadcast:
    """One broadcast, made once for the module: the stream, its recording and the chat sent while on air."""

    def __init__(self, server: ServerHandle, stream: dict[str, Any], sent: dict[str, float], started: float) -> None:
        self.server, self.stream, self.sent, self.started = server, stream, sent, started
        self.view = server.api("GET", f"/api/streams/{stream['id']}")[1]
        self.recording = self.view["recording"]


async def chat_during(server: ServerHandle, stream_id: str, started: list[float]) -> dict[str, float]:
    """Two guests write at about 4 s and 9 s into the broadcast; returns each message's id and send time."""
    sent: dict[str, float] = {}
    async with guest_session() as a, guest_session() as b:
        while not started:
            await asyncio.sleep(0.05)
        alice = await connect(a, server, stream_id, name="Alice")
        bob = await connect(b, server, stream_id, name="Bob")
        for delay, who, text in ((4.0, alice, "Good morning church"), (9.0, alice, "Amen to that")):
            await asyncio.sleep(max(0.0, started[0] + delay - time.time()))
            at = time.time()
            await who.send("chat:message", {"text": text})
            echo = await bob.expect("chat:message", lambda d, t=text: d["text"] == t)
            sent[text] = at
            sent[f"id:{text}"] = echo["id"]  # type: ignore[assignment]
        await alice.ws.close()
        await bob.ws.close()
    return sent


@pytest.fixture(scope="module")
def broadcast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broadcast]:
    server = run_server(small_config(tmp_path_factory.mktemp("data")))
    try:
        stream = server.create_stream("Replay Sunday")
        ctx = multiprocessing.get_context("spawn")
        queue: "multiprocessing.Queue[float]" = ctx.Queue()
        publisher = ctx.Process(target=publish_numbered, args=(server.rtmp_url(stream["stream_key"]), SECONDS, queue, 0, "gradient"),
                                daemon=True)
        publisher.start()
        started = [queue.get(timeout=60)]
        sent = asyncio.run(asyncio.wait_for(chat_during(server, stream["id"], started), 60))
        publisher.join(60)
        assert publisher.exitcode == 0
        status, ended = server.api("POST", f"/api/streams/{stream['id']}/end")
        # On a loaded machine the 2 s reconnect window may already have ended it: that is the same end.
        assert status == 200 or (status == 409 and ended["details"]["status"] == "ENDED"), ended
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            body = server.api("GET", f"/api/streams/{stream['id']}")[1]
            if body["status"] == "ENDED" and body["recording"] and body["recording"]["status"] == "READY":
                break
            time.sleep(0.3)
        else:
            raise AssertionError("the recording was not saved")
        yield Broadcast(server, stream, sent, started[0])
    finally:
        server.stop()


def test_sprite_tiles_show_the_frames_of_their_cue_times(broadcast: Broadcast) -> None:
    server, recording = broadcast.server, broadcast.recording
    status, headers, vtt = server.get(recording["storyboard_url"])
    assert status == 200 and headers["Content-Type"].startswith("text/vtt")
    cues = parse_vtt(vtt.decode())
    assert len(cues) >= 5, vtt
    assert cues[0][0] == 0 and abs(cues[-1][1] - recording["duration"]) < 0.05
    status, headers, sprite = server.get(recording["sprite_url"])
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    sheet = decode_jpeg(sprite)
    first = first_frame_number(server, recording["mp4_url"])
    # At 160x90 the drawn number is too small to read back, so each tile is matched against every picture of the
    # recording's MP4 (numbered at full size, scaled to the tile's size here): the closest must be the frame of
    # the cue's time.
    status, _, body = server.get(recording["mp4_url"])
    assert status == 200
    thumbs: dict[int, np.ndarray] = {}
    with av.open(io.BytesIO(body), "r", format="mp4") as source:
        for frame in source.decode(video=0):
            number = frame_code.read_frame(frame)
            if number is not None:
                thumbs[number] = frame.reformat(width=160, height=90, format="gray").to_ndarray().astype(np.int16)
    assert len(thumbs) > SECONDS * FPS * 0.8
    for start, _, uri, (x, y, w, h) in cues:
        assert uri == "sprite.jpg" and (w, h) == (160, 90)
        tile = luma(sheet[y:y + h, x:x + w]).astype(np.int16)
        expected = first + start * FPS
        nearest = min(thumbs, key=lambda n: float(np.abs(thumbs[n] - tile).mean()))
        # The tile is the first frame at or after its cue time: at most a frame later.
        assert expected - 1.5 <= nearest <= expected + 1.5, (start, nearest, expected)


def test_poster_is_a_real_frame_of_the_tallest_rung(broadcast: Broadcast) -> None:
    status, headers, poster = broadcast.server.get(broadcast.recording["poster_url"])
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    picture = decode_jpeg(poster)
    assert picture.shape[:2] == (HEIGHT, WIDTH)  # the source's own size: its passthrough rung
    y = luma(picture)
    assert y.mean() > 60 and y.std() > 20  # not black, not flat
    assert frame_code.read(y) is not None  # a frame of the broadcast


def test_chat_replay_puts_messages_at_their_media_time(broadcast: Broadcast) -> None:
    server, stream, recording = broadcast.server, broadcast.stream, broadcast.recording
    first = first_frame_number(server, recording["mp4_url"])
    status, _, body = server.get(recording["chat_replay_url"])  # anonymous: the stream is public
    assert status == 200, body
    replay = json.loads(body)
    messages = {i["text"]: i for i in replay["items"] if i["kind"] == "message"}
    for text in ("Good morning church", "Amen to that"):
        assert text in messages, replay
        # Independently: the publisher was at frame (sent - frame 0's wall time) * FPS; the recording
        # begins at frame `first`.
        expected = (broadcast.sent[text] - broadcast.started) - first / FPS
        assert abs(messages[text]["media_time"] - expected) < 1.0, (text, messages[text], expected)
    times = [i["media_time"] for i in replay["items"]]
    assert times == sorted(times)
    assert 0 <= min(times) and max(times) <= replay["duration"]
    assert stream["id"] == replay["stream_id"]


def test_hidden_message_is_gone_for_viewers_and_flagged_for_staff(broadcast: Broadcast) -> None:
    server, stream, recording = broadcast.server, broadcast.stream, broadcast.recording
    message_id = str(broadcast.sent["id:Amen to that"])
    base = f"/api/streams/{stream['id']}/recordings/{recording['id']}/chat-replay"
    outsider = org_token(server, "elsewhere")
    assert server.api("POST", f"{base}/{message_id}/hide", token=outsider)[0] == 404
    assert server.api("POST", f"{base}/{message_id}/hide", token=None)[0] == 401
    status, body = server.api("POST", f"{base}/{message_id}/hide")
    assert (status, body) == (200, {"id": message_id, "hidden": True})

    def texts(token: str | None) -> dict[str, bool]:
        status, replay = server.api("GET", base, token=token)
        assert status == 200, replay
        return {i["text"]: i["hidden"] for i in replay["items"] if i["kind"] == "message"}
    assert "Amen to that" not in texts(None)
    assert "Amen to that" not in texts(outsider)  # another organization watches as any viewer does
    assert texts(ADMIN_TOKEN)["Amen to that"] is True
    _, audit = server.api("GET", f"/api/streams/{stream['id']}/chat/audit")
    assert [e["action"] for e in audit["entries"]][-1] == "replay_hide"
    assert server.api("POST", f"{base}/{message_id}/unhide")[0] == 200
    assert texts(None)["Amen to that"] is False


def org_token(server: ServerHandle, slug: str) -> str:
    db = server.server.db
    org = db.org(slug) or db.create_org(slug, slug.title())
    return str(db.create_token(org["id"], "test")[1])
