"""A local copy of every cloud recording (mediaserver/cloud_recordings.py), end to end on the stand-ins.

A real 6 s HLS (H.264 with the frame number drawn into each picture, AAC tone, MPEG-TS segments as the platforms
serve them) is served by the Mux stand-in as stream.mux.com serves an asset (a signed one only with a valid
playback JWT, checked with the public key) and uploaded to moto's S3 as IVS records it. The lifecycle runs
through the real webhooks (Mux-Signature, EventBridge). What a church sees is checked against measurements made
here: the copied MP4's frames are the source's frame numbers in order; the podcast episode of the
auto-published sermon is real AAC as long as the source's sound; a chat message lands at its media time (from
Mux's recording_times, and for IVS from the broadcast's start); a clip of the copy has the right frames; a private
IVS recording plays from our copy with a token and not without; recording.ready goes out once, after the MP4
was written; a platform answering 500 gets bounded retries, then recording.ready with the reason; with
copy_recordings off nothing is copied and the recording says why.
"""
from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

import av
import boto3
import pytest

from bench import frame_code
from tests.chat_client import connect, guest_session
from tests.ivs_fixture import ACCESS, IvsStandIn, post_event, recording_end, stream_state
from tests.mux_standin import MuxStandIn
from tests.platform_media import FPS, SECONDS, MuxMedia, Served, make_hls, start_mux_with_media
from mediaserver.config import Config
from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config
from tests.waiting import until
from tests.webhook_receiver import WebhookReceiver

MUX_ID, MUX_SECRET, MUX_HOOK_SECRET, MUX_KEY_ID = "copy-token-id", "copy-token-secret", "copy-hook-secret", "copy-kid"
HOOK_SECRET = "receiver-secret-0123456789"
BUCKET = "church-recordings"


def frames_of(source: Any) -> list[int | None]:
    """The frame number read from every decoded picture, in presentation order."""
    with av.open(source) as container:
        return [frame_code.read_frame(f) for f in container.decode(video=0)]


def sound_seconds(source: Any) -> tuple[float, list[str]]:
    """(seconds of decoded AAC, the container's stream types)."""
    with av.open(source) as container:
        kinds = [s.type for s in container.streams]
        assert container.streams.audio[0].codec_context.name == "aac"
        samples, rate = 0, 1
        for frame in container.decode(audio=0):
            samples, rate = samples + frame.samples, frame.sample_rate
    return samples / rate, kinds


def frame_at(mp4: bytes, seconds: float) -> int | None:
    with av.open(io.BytesIO(mp4), "r") as container:
        stream = container.streams.video[0]
        assert stream.time_base is not None
        for frame in container.decode(stream):
            if frame.pts is not None and float(frame.pts * stream.time_base) >= seconds - 0.5 / FPS:
                return frame_code.read_frame(frame)
    return None


class Env:
    def __init__(self, server: ServerHandle, standin: MuxStandIn, media: MuxMedia, ivs: IvsStandIn,
                 receiver: WebhookReceiver, source: Path, make_config: Callable[[Path], Config]) -> None:
        self.server, self.standin, self.media, self.ivs = server, standin, media, ivs
        self.receiver, self.source, self.make_config = receiver, source, make_config
        self.s3 = boto3.client("s3", endpoint_url=ivs.endpoint, **ACCESS)
        self.s3.create_bucket(Bucket=BUCKET)

    @property
    def data_path(self) -> Path:
        return Path(self.server.server.config.data_path)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    mux = start_mux_with_media(tmp_path_factory.mktemp("source"), MUX_ID, MUX_SECRET, MUX_HOOK_SECRET)
    source, media, standin = mux.source, mux.media, mux.standin
    ivs = IvsStandIn(tmp_path_factory.mktemp("ivs")).start()

    def make_config(data_dir: Path) -> Config:
        config = small_config(data_dir)
        config.webhooks.allow_private_networks = True  # the receiver is on loopback
        mux.configure(config, MUX_KEY_ID)  # the API and stream.mux.com, both stand-ins
        config.ivs = ivs.config()
        config.backends.copy_attempts, config.backends.copy_retry_seconds = 2, 0.3
        return config

    server = run_server(make_config(tmp_path_factory.mktemp("data")))
    receiver = WebhookReceiver()
    subscribe(server, receiver)
    try:
        yield Env(server, standin, media, ivs, receiver, source, make_config)
    finally:
        server.stop()
        standin.stop()
        ivs.stop()
        receiver.http.shutdown()


def subscribe(server: ServerHandle, receiver: WebhookReceiver) -> None:
    status, _ = server.api("POST", "/api/webhooks", {"url": receiver.url, "secret": HOOK_SECRET, "events": ["*"]})
    assert status == 201


# -- driving a broadcast through the platforms' webhooks ----------------------------------------------------
def mux_remote(env: Env, stream_id: str) -> str:
    [remote] = [sid for sid, s in env.standin.streams.items() if s.data.get("passthrough") == stream_id]
    return remote


def mux_send(env: Env, kind: str, data: dict[str, Any], server: ServerHandle | None = None) -> None:
    status, answer = env.standin.send(f"{(server or env.server).http}/hooks/mux", env.standin.event(kind, data))
    assert status == 200, answer


def say(server: ServerHandle, stream_id: str, text: str, headers: dict[str, str] | None = None) -> float:
    """A chat message during the live: returns the wall time it was sent (measured here)."""
    async def send() -> float:
        async with guest_session() as session:
            chat = await connect(session, server, stream_id, headers=headers, name="Ruth")
            at = time.time()
            await chat.send("chat:message", {"text": text})
            await chat.expect("chat:message", lambda d: d["text"] == text, timeout=15)
            await chat.ws.close()
            return at
    return asyncio.run(asyncio.wait_for(send(), 30))


def mux_broadcast(env: Env, body: dict[str, Any], *, say_text: str | None = None, fail: bool = False,
                  folder: Path | None = None, hold: threading.Event | None = None,
                  recording_start_before: float = 3.0,
                  server: ServerHandle | None = None) -> tuple[dict[str, Any], float | None]:
    """Create a Mux stream, go live (optionally chatting), end, and have Mux finish the asset: Mux's
    recording_times say the media began `recording_start_before` s before the chat message (or now). The
    asset's HLS is the source's (or folder's); fail: Mux answers 500; hold: Mux answers once it is set."""
    server, standin = server or env.server, env.standin
    status, created = server.api("POST", "/api/streams", {"backend": "mux", **body})
    assert status == 201, created
    remote = mux_remote(env, created["id"])
    standin.encoder_connects(remote)
    asset = standin.streams[remote].asset
    assert asset is not None
    pid = asset["playback_ids"][0]["id"]
    env.media.served[pid] = Served(folder or env.source, signed=asset["playback_ids"][0]["policy"] == "signed",
                                   fail=fail, hold=hold)
    for kind in ("video.live_stream.connected", "video.live_stream.active"):
        mux_send(env, kind, standin.streams[remote].data, server)
    said = say(server, created["id"], say_text) if say_text else None
    begun = (said if said is not None else time.time()) - recording_start_before
    env.media.starts[asset["id"]] = datetime.fromtimestamp(begun, timezone.utc).isoformat().replace("+00:00", "Z")
    status, ended = server.api("POST", f"/api/streams/{created['id']}/end")
    assert status == 200, ended
    done = standin.asset_completed(remote, SECONDS)
    mux_send(env, "video.live_stream.idle", standin.streams[remote].data, server)
    mux_send(env, "video.asset.live_stream_completed", done, server)
    mux_send(env, "video.asset.ready", done, server)  # repeated news of the same asset: one recording, one copy
    return created, said


def ready(env: Env, stream_id: str, server: ServerHandle | None = None) -> tuple[float, dict[str, Any]]:
    """Once recording.ready has reached the receiver: (when it arrived, the stream's API view)."""
    until(lambda: env.receiver.of("recording.ready", stream_id), 60, "recording.ready webhook")
    arrived = env.receiver.arrivals("recording.ready", stream_id)[0][0]
    status, view = (server or env.server).api("GET", f"/api/streams/{stream_id}")
    assert status == 200 and view["recording"]["status"] == "READY", view
    return arrived, view


def org_token(server: ServerHandle, slug: str) -> str:
    db = server.server.db
    org = db.org(slug) or db.create_org(slug, slug.title())
    return str(db.create_token(org["id"], "test")[1])


# -- the tests ----------------------------------------------------------------------------------------------
def test_mux_recording_copied_for_library_replay_and_clips(env: Env) -> None:
    server = env.server
    created, said = mux_broadcast(env, {"title": "Grace on Mux", "library_auto_publish": True},
                                  say_text="Good morning from the balcony")
    assert said is not None
    sid = created["id"]
    arrived, view = ready(env, sid)
    recording = view["recording"]
    assert recording["error"] is None and recording["mp4_url"], recording
    # The platform still plays its asset (its CDN); the copy gives the MP4, pictures and chat replay.
    assert recording["playback_url"].startswith(f"{env.standin.url}/") and recording["playback_url"].endswith(".m3u8")

    # The MP4 is the source, frame for frame: every number 0..179 in order, 6 s long.
    status, _, mp4 = server.get(recording["mp4_url"])
    assert status == 200
    assert frames_of(io.BytesIO(mp4)) == list(range(int(SECONDS * FPS)))
    source_sound, _ = sound_seconds(str(env.source / "playlist.m3u8"))
    copied_sound, kinds = sound_seconds(io.BytesIO(mp4))
    assert kinds == ["video", "audio"] and abs(copied_sound - source_sound) < 0.1
    assert abs(recording["duration"] - SECONDS) < 0.05
    status, headers, _ = server.get(recording["poster_url"])  # the pictures our own recordings get
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    # Our HLS of the copy plays too (PyAV through our playlists), the same frames.
    assert frames_of(recording["mp4_url"].rsplit("/", 1)[0] + "/master.m3u8") == list(range(int(SECONDS * FPS)))

    # recording.ready: once, and only after the MP4 was in place (its file time, measured on disk).
    mp4_file = env.data_path / "media" / sid / view["recording"]["mp4_url"].split(f"/hls/{sid}/", 1)[1]
    assert mp4_file.stat().st_mtime <= arrived
    assert len(env.receiver.of("recording.ready", sid)) == 1

    # The auto-published sermon's podcast episode: AAC only, as long as the source's sound.
    def item() -> dict[str, Any] | None:
        feed = json.loads(server.get("/library/default/feed.json")[2])
        found = [i for i in feed["items"] if i.get("attachments") and sid in json.dumps(i)]
        return found[0] if found else None
    entry = until(item, 30, "the episode in feed.json")
    [attachment] = entry["attachments"]
    status, _, m4a = server.get(attachment["url"])
    assert status == 200 and len(m4a) == attachment["size_in_bytes"]
    episode_sound, kinds = sound_seconds(io.BytesIO(m4a))
    assert kinds == ["audio"] and abs(episode_sound - source_sound) < 0.1
    status, _, xml = server.get("/library/default/podcast.xml")
    assert status == 200 and attachment["url"].encode() in xml and f'length="{len(m4a)}"'.encode() in xml

    # Chat replay: the message at (sent - Mux's recording start) = 3 s, and the picture there is frame ~90.
    status, _, body = server.get(recording["chat_replay_url"])
    assert status == 200, body
    [message] = [i for i in json.loads(body)["items"] if i["text"] == "Good morning from the balcony"]
    assert abs(message["media_time"] - 3.0) < 1.0, message
    shown = frame_at(mp4, message["media_time"])
    assert shown is not None and abs(shown - message["media_time"] * FPS) <= 1

    # A clip of the copied recording: exactly its frames.
    status, clip = server.api("POST", f"/api/streams/{sid}/clips", {"title": "Welcome", "start": 1.0, "end": 3.0,
                                                                    "recording_id": recording["id"]})
    assert status == 202, clip
    clip_path = f"/api/streams/{sid}/clips/{clip['id']}"

    def made() -> dict[str, Any] | None:
        found = server.api("GET", clip_path)[1]
        return found if found["status"] in ("READY", "FAILED") else None
    clip = until(made, 60, "the clip")
    assert clip["status"] == "READY", clip
    status, _, clip_mp4 = server.get(clip["mp4_url"])
    assert status == 200 and frames_of(io.BytesIO(clip_mp4)) == list(range(30, 90))


def test_signed_mux_asset_is_read_with_a_playback_jwt(env: Env) -> None:
    refused = env.media.refused
    created, _ = mux_broadcast(env, {"title": "Elders on Mux", "visibility": "PRIVATE"})
    sid = created["id"]
    asset = env.standin.streams[mux_remote(env, sid)].asset
    assert asset is not None and asset["playback_ids"][0]["policy"] == "signed"
    _, view = ready(env, sid)
    assert view["recording"]["error"] is None and view["recording"]["mp4_url"]
    assert env.media.refused == refused  # every request carried a valid JWT
    # ... which the stand-in does check: without one, nothing.
    pid = asset["playback_ids"][0]["id"]
    try:
        urllib.request.urlopen(f"{env.standin.url}/{pid}.m3u8", timeout=10)
        raise AssertionError("the signed asset played without a token")
    except urllib.error.HTTPError as exc:
        assert exc.code == 403
    # Our copy keeps the stream's privacy: nothing without a token.
    assert env.server.get(view["recording"]["mp4_url"])[0] in (401, 403)


def upload_ivs_recording(env: Env, prefix: str) -> None:
    """The recording as IVS writes it to S3: <prefix>/media/hls/master.m3u8 -> 180p30/playlist.m3u8 -> N.ts."""
    env.s3.put_object(Bucket=BUCKET, Key=f"{prefix}/media/hls/master.m3u8", Body=(
        "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=320x180,CODECS=\"avc1.42c00d,mp4a.40.2\"\n"
        "180p30/playlist.m3u8\n").encode())
    for path in env.source.iterdir():
        env.s3.put_object(Bucket=BUCKET, Key=f"{prefix}/media/hls/180p30/{path.name}", Body=path.read_bytes())


def test_private_ivs_recording_plays_from_our_copy(env: Env) -> None:
    server, ivs = env.server, env.ivs
    status, created = server.api("POST", "/api/streams", {"title": "Members' evening", "backend": "ivs",
                                                          "visibility": "PRIVATE"})
    assert status == 201, created
    sid = created["id"]
    aws = boto3.client("ivs", endpoint_url=ivs.endpoint, **ACCESS)
    [channel] = [c for c in aws.list_channels()["channels"] if c["name"] == f"mediaserver-{sid}"]
    hook = f"{server.http}/hooks/ivs"
    secret = ivs.config().notification_secret
    began = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(seconds=2)
    for event in (stream_state(channel["arn"], "Session Created"), stream_state(channel["arn"], "Stream Start",
                                                                                at=began)):
        assert post_event(hook, event, secret)[0] == 200
    said = say(server, sid, "Praying for you all", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert post_event(hook, stream_state(channel["arn"], "Stream End"), secret)[0] == 200
    prefix = f"ivs/v1/123456789012/{channel['arn'].rsplit('/', 1)[1]}/2026/12/2/9/0/copy"
    upload_ivs_recording(env, prefix)
    assert post_event(hook, recording_end(channel["arn"], prefix), secret)[0] == 200
    _, view = ready(env, sid)
    recording = view["recording"]
    # IVS can't sign a recording's playback: the API plays our copy instead, with our access rules.
    assert recording["playback_url"].endswith(f"/hls/{sid}/{recording['mp4_url'].split('/')[-2]}/master.m3u8")
    assert recording["error"] is None and abs(recording["duration"] - SECONDS) < 0.05
    assert server.get(recording["playback_url"])[0] in (401, 403)          # no token: nothing
    outsider = org_token(server, "elsewhere")
    request = urllib.request.Request(recording["playback_url"], headers={"Authorization": f"Bearer {outsider}"})
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("another church's token played a private recording")
    except urllib.error.HTTPError as exc:
        assert exc.code in (403, 404)   # the media routes' answer for built-in private recordings too
    assert server.api("GET", f"/api/streams/{sid}", token=outsider)[0] == 404

    # The watch page of a signed-in volunteer plays our copy with one of our tokens; the player gets every frame.
    page = urllib.request.Request(f"{server.http}/watch/{sid}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(page, timeout=30) as response:
        text = response.read().decode()
    marker = '<script id="player-config" type="application/json">'
    start = text.index(marker) + len(marker)
    config = json.loads(text[start:text.index("</script>", start)])
    assert config["playback_url"].startswith(f"/hls/{sid}/") and "?token=" in config["playback_url"]
    assert frames_of(server.http + config["playback_url"]) == list(range(int(SECONDS * FPS)))
    # A stranger's page names no URL at all.
    with urllib.request.urlopen(f"{server.http}/watch/{sid}", timeout=30) as response:
        stranger = response.read().decode()
    assert f"/hls/{sid}/" not in stranger

    # Chat replay: time 0 of an IVS recording is the broadcast's start (IVS's Stream Start time).
    token = quote(config["playback_url"].split("?token=", 1)[1], safe="")
    status, _, body = server.get(f"{recording['chat_replay_url']}?token={token}")
    assert status == 200, body
    [message] = [i for i in json.loads(body)["items"] if i["text"] == "Praying for you all"]
    assert abs(message["media_time"] - (said - began.timestamp())) < 1.0, (message, said, began)


def test_platform_failure_is_retried_then_announced_with_its_reason(env: Env) -> None:
    created, _ = mux_broadcast(env, {"title": "Stormy Sunday"}, fail=True)
    sid = created["id"]
    _, view = ready(env, sid)
    recording = view["recording"]
    assert "500" in (recording["error"] or "") and "2 tries" in recording["error"], recording
    assert recording["mp4_url"] is None and recording["playback_url"].startswith(env.standin.url)
    asset = env.standin.streams[mux_remote(env, sid)].asset
    assert asset is not None
    served = env.media.served[asset["playback_ids"][0]["id"]]
    assert served.masters == 2   # bounded: copy_attempts
    # The second try waited copy_retry_seconds (0.3 s here) after the first failed.
    assert served.master_times[1] - served.master_times[0] >= env.server.server.config.backends.copy_retry_seconds
    assert len(env.receiver.of("recording.ready", sid)) == 1
    assert not list((env.data_path / "media" / sid).rglob("*.m4s"))  # no half copy left behind
    assert env.server.api("GET", "/api/streams")[0] == 200   # the server is fine


def test_copy_off_leaves_the_platform_asset_and_says_why(env: Env) -> None:
    settings = env.server.server.config.backends
    settings.copy_recordings = False
    try:
        created, _ = mux_broadcast(env, {"title": "Quiet Sunday"})
        sid = created["id"]
        _, view = ready(env, sid)
    finally:
        settings.copy_recordings = True
    recording = view["recording"]
    assert recording["mp4_url"] is None and "copy_recordings is off" in (recording["error"] or "")
    assert "podcast audio" in recording["error"]
    assert not (env.data_path / "media" / sid).exists()
    status, item = env.server.api("POST", "/api/library", {"stream_id": sid, "recording_id": recording["id"]})
    assert status == 201 and item["audio_url"] is None, item
    assert len(env.receiver.of("recording.ready", sid)) == 1


def test_bad_media_fails_once_with_its_reason(env: Env, tmp_path: Path) -> None:
    (tmp_path / "playlist.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n0.ts\n#EXT-X-ENDLIST\n")
    (tmp_path / "0.ts").write_bytes(bytes(range(256)) * 64)  # not MPEG-TS at all
    created, _ = mux_broadcast(env, {"title": "Garbled Sunday"}, folder=tmp_path)
    sid = created["id"]
    _, view = ready(env, sid)
    assert (view["recording"]["error"] or "").startswith("copy failed:") and view["recording"]["mp4_url"] is None
    asset = env.standin.streams[mux_remote(env, sid)].asset
    assert asset is not None
    assert env.media.served[asset["playback_ids"][0]["id"]].masters == 1   # bad media: no retry
    assert not list((env.data_path / "media" / sid).rglob("*.m4s"))  # no half copy left behind
    assert len(env.receiver.of("recording.ready", sid)) == 1


def test_a_copy_cut_by_a_restart_resumes(env: Env, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = run_server(env.make_config(data_dir))
    subscribe(first, env.receiver)
    hold = threading.Event()
    try:
        created, _ = mux_broadcast(env, {"title": "Interrupted Sunday"}, hold=hold, server=first)
        sid = created["id"]
        asset = env.standin.streams[mux_remote(env, sid)].asset
        assert asset is not None
        served = env.media.served[asset["playback_ids"][0]["id"]]
        until(lambda: served.masters == 1, 30, "the copy to start")
    finally:
        first.stop()          # while the copy waits on Mux
        hold.set()
    # Read without the server: the recording still waits for its copy, and nobody was told it is ready.
    with sqlite3.connect(data_dir / "mediaserver.db") as db:
        [(status, playlist_key)] = db.execute("select status, playlist_key from recordings where stream_id = ?",
                                              [sid]).fetchall()
    assert (status, playlist_key) == ("PROCESSING", None)
    assert not env.receiver.of("recording.ready", sid)
    served.hold = None
    second = run_server(env.make_config(data_dir))
    try:
        _, view = ready(env, sid, second)
        assert view["recording"]["error"] is None and view["recording"]["mp4_url"]
        status, _, mp4 = second.get(view["recording"]["mp4_url"])
        assert status == 200 and frames_of(io.BytesIO(mp4)) == list(range(int(SECONDS * FPS)))
        assert len(env.receiver.of("recording.ready", sid)) == 1
    finally:
        second.stop()


# -- the sans-IO parts, on their own --------------------------------------------------------------------------
def test_playlists_and_adts_parsing(tmp_path: Path) -> None:
    import random

    from mediaserver.cloud_recordings import CopyError, WallClock, adts_frames, best_variant, media_files

    # Mux's recording_times after a reconnect: the media goes on where the wall clock jumped.
    clock = WallClock(((1000.0, 4.0), (2000.0, 2.0)))
    assert [clock.at(m) for m in (0.0, 3.5, 4.0, 5.5, 7.0)] == [1000.0, 1003.5, 2000.0, 2001.5, 2003.0]
    assert WallClock(((500.0, 0.0),)).at(12.5) == 512.5   # only the start known: one clock from there

    master = ('#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360\nlow.m3u8\n'
              '#EXT-X-STREAM-INF:BANDWIDTH=2500000,RESOLUTION=1280x720,CODECS="avc1.64001f,mp4a.40.2"\nhigh.m3u8\n'
              '#EXT-X-STREAM-INF:BANDWIDTH=1200000\nmid.m3u8\n')
    assert best_variant(master) == "high.m3u8"
    media = ('#EXTM3U\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:2.0,\na.m4s\n#EXT-X-DISCONTINUITY\n'
             '#EXTINF:2.0,\nb.m4s\n#EXT-X-ENDLIST\n')
    assert best_variant(media) is None and media_files(media) == ["init.mp4", "a.m4s", "b.m4s"]
    for bad in ("", "not a playlist", "#EXTM3U\n#EXT-X-ENDLIST\n", '#EXTM3U\n#EXT-X-MAP:URI="init.mp4"\n'):
        with pytest.raises(CopyError):
            media_files(bad)
    # ADTS from the source's own TS, as FFmpeg demuxes it: one frame per packet, a 2-byte AAC-LC config.
    make_hls(tmp_path)
    with av.open(str(tmp_path / "0.ts")) as container:
        packets = [bytes(p) for p in container.demux(audio=0) if p.size][:20]
    parsed = [adts_frames(p) for p in packets]
    assert all(p is not None and p[0] == bytes([0x11, 0x88]) and len(p[1]) == 1 for p in parsed), parsed[:2]
    # Random and cut input never raises: it is ADTS or it isn't.
    rng = random.Random(15)
    for _ in range(300):
        data = bytearray(rng.choice(packets))
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        data = data[: rng.randint(0, len(data))]
        result = adts_frames(bytes(data))
        assert result is None or (len(result[0]) == 2 and all(isinstance(f, bytes) for f in result[1]))
