"""A recurring series on a cloud back-end: one live stream at the platform for the whole series (its occurrences
share its ingest and key, as a built-in series' occurrences share our key); the platform's notifications go to the
occurrence on air, else the scheduled one nearest now; a recording belongs to the service that made it; the
platform's live stream stays while the series still has services to air, and goes with the series.

What the server did at the platform is read back independently: the Mux stand-in's own state, moto's IVS channels.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from tests.ivs_fixture import Ivs, stream_state
from tests.waiting import until
from tests.test_backends import Env, env  # noqa: F401  (env: the module's server + stand-ins)


def series_body(title: str, backend: str, **extra: Any) -> dict[str, Any]:
    """Daily services from a few minutes from now, three of them."""
    first = datetime.now(timezone.utc) + timedelta(minutes=5)
    return {"title": title, "rrule": "FREQ=DAILY;COUNT=3", "start_time": first.strftime("%H:%M"), "duration": 60,
            "timezone": "UTC", "dtstart": first.date().isoformat(), "backend": backend, **extra}


def occurrences(env: Env, series_id: str) -> list[dict[str, Any]]:
    status, listed = env.server.api("GET", "/api/streams?state=all&limit=100")
    assert status == 200
    rows = [s for s in listed["streams"] if s.get("series_id") == series_id]
    return sorted(rows, key=lambda s: s["scheduled_start"])


def live_streams_of(env: Env, series_id: str) -> list[str]:
    return [sid for sid, s in env.standin.streams.items() if s.data.get("passthrough") == series_id]


def status_of(env: Env, stream_id: str) -> str:
    return str(env.server.api("GET", f"/api/streams/{stream_id}")[1]["status"])


def broadcast(env: Env, remote: str, duration: float) -> None:
    """An encoder comes to Mux's live stream and, later, leaves: Mux's webhooks as it sends them."""
    standin, hook = env.standin, f"{env.server.http}/hooks/mux"
    standin.encoder_connects(remote)
    for kind in ("video.live_stream.connected", "video.live_stream.active"):
        assert standin.send(hook, standin.event(kind, standin.streams[remote].data))[0] == 200


def finish(env: Env, remote: str, duration: float) -> None:
    standin, hook = env.standin, f"{env.server.http}/hooks/mux"
    asset = standin.asset_completed(remote, duration)
    for kind in ("video.live_stream.idle", "video.asset.live_stream_completed", "video.asset.ready"):
        data = asset if kind.startswith("video.asset") else standin.streams[remote].data
        assert standin.send(hook, standin.event(kind, data))[0] == 200


def test_mux_series_shares_one_live_stream_and_each_service_gets_its_own_broadcast(env: Env) -> None:
    server, standin, receiver = env.server, env.standin, env.receiver
    status, created = server.api("POST", "/api/series", series_body("Daily prayer on Mux", "mux"))
    assert status == 201, created
    assert created["backend"] == "mux"
    remotes = live_streams_of(env, created["id"])
    assert len(remotes) == 1  # one live stream at Mux for the whole series
    remote = remotes[0]
    assert created["stream_key"] == standin.streams[remote].data["stream_key"]  # Mux's key, shown once
    assert created["rtmp_url"] == "rtmp://global-live.mux.com:5222/app"
    services = occurrences(env, created["id"])
    assert len(services) == 3
    playback = f"https://stream.mux.com/{standin.streams[remote].data['playback_ids'][0]['id']}.m3u8"
    for service in services:  # every service: Mux's ingest and playback, no key of ours
        assert service["backend"] == "mux" and service["rtmp_url"] == created["rtmp_url"]
        assert service["playback_url"] == playback
    first, second, third = (s["id"] for s in services)

    # The encoder connects: the service nearest now goes live, the others wait.
    broadcast(env, remote, 30.0)
    until(lambda: status_of(env, first) == "LIVE", 30, "the first service live")
    assert status_of(env, second) == status_of(env, third) == "SCHEDULED"
    until(lambda: receiver.of("stream.live", first), 30, "stream.live webhook")
    assert server.api("POST", f"/api/streams/{first}/end")[0] == 200
    finish(env, remote, 30.0)
    until(lambda: receiver.of("recording.ready", first), 30, "the first service's recording")
    view = server.api("GET", f"/api/streams/{first}")[1]
    assert view["status"] == "ENDED" and view["recording"]["duration"] == 30.0

    # The next time the encoder connects (the same key), the next service airs; the first keeps its recording.
    broadcast(env, remote, 12.0)
    until(lambda: status_of(env, second) == "LIVE", 30, "the second service live")
    assert status_of(env, first) == "ENDED" and status_of(env, third) == "SCHEDULED"
    finish(env, remote, 12.0)  # Mux ends it itself (idle) this time
    until(lambda: receiver.of("recording.ready", second), 30, "the second service's recording")
    assert status_of(env, second) == "ENDED"
    assert server.api("GET", f"/api/streams/{second}")[1]["recording"]["duration"] == 12.0
    assert server.api("GET", f"/api/streams/{first}")[1]["recording"]["duration"] == 30.0
    assert len(receiver.of("stream.live", first)) == len(receiver.of("stream.live", second)) == 1
    assert not receiver.of("stream.live", third)

    # A new key for the series, asked on any service: Mux's key changes, and the series' streams know it.
    old_key = created["stream_key"]
    status, rotated = server.api("POST", f"/api/streams/{third}/rotate-key")
    assert status == 200 and rotated["stream_key"] != old_key
    assert rotated["stream_key"] == standin.streams[remote].data["stream_key"]

    # One service turned private alone would change the shared live stream for all: refused with the reason.
    status, refused = server.api("PATCH", f"/api/streams/{third}", {"visibility": "PRIVATE"})
    assert status == 400 and "series" in refused["details"]["visibility"]

    # Deleting one service leaves the series' live stream at Mux; ending the series removes it.
    assert server.api("DELETE", f"/api/streams/{third}")[0] == 204
    assert remote in standin.streams
    assert server.api("DELETE", f"/api/series/{created['id']}")[0] == 204
    until(lambda: remote not in standin.streams, 10, "Mux's live stream removed")
    # The services that aired keep their recordings (Mux's assets are not the live stream).
    assert server.api("GET", f"/api/streams/{first}")[1]["recording"]["status"] == "READY"


def test_mux_series_split_carries_the_same_live_stream(env: Env) -> None:
    """Changing a series from a date on makes a new series: it carries on with the same Mux live stream and key,
    so the encoder's settings don't change; deleting the old one leaves Mux's live stream alone."""
    server, standin = env.server, env.standin
    body = series_body("Evening prayer", "mux")
    body["rrule"] = "FREQ=DAILY;COUNT=10"
    status, created = server.api("POST", "/api/series", body)
    assert status == 201, created
    remote = live_streams_of(env, created["id"])[0]
    later = (datetime.fromisoformat(body["dtstart"]) + timedelta(days=3)).date().isoformat()
    status, carried = server.api("PATCH", f"/api/series/{created['id']}", {"from": later, "start_time": "20:00"})
    assert status == 200, carried
    assert carried["backend"] == "mux" and carried["rtmp_url"] == created["rtmp_url"]
    assert len(standin.streams) == len({*standin.streams})  # nothing new made at Mux
    assert not live_streams_of(env, carried["id"])
    newer = occurrences(env, carried["id"])
    assert newer and all(s["backend"] == "mux" for s in newer)
    assert server.api("DELETE", f"/api/series/{created['id']}")[0] == 204
    assert remote in standin.streams  # the carried-on series still airs on it
    assert server.api("DELETE", f"/api/series/{carried['id']}")[0] == 204
    until(lambda: remote not in standin.streams, 10, "Mux's live stream removed")


def test_series_refuses_what_the_platform_cannot_do(env: Env) -> None:
    server = env.server
    status, refused = server.api("POST", "/api/series", series_body("Rewindable", "ivs", dvr_enabled=True))
    assert status == 400 and "DVR" in refused["details"]["dvr_enabled"]
    status, refused = server.api("POST", "/api/series",
                                 series_body("Re-aired", "mux", simulated_recording_id="rec_none"))
    assert status == 400 and "re-air" in refused["details"]["simulated_recording_id"]
    status, single = server.api("POST", "/api/streams", {"title": "One service on Mux", "backend": "mux"})
    assert status == 201
    status, refused = server.api("PATCH", f"/api/streams/{single['id']}", {"simulated_recording_id": "rec_none"})
    assert status == 400 and "re-air" in refused["details"]["simulated_recording_id"]
    status, listed = server.api("GET", "/api/series")
    assert status == 200 and not [s for s in listed["series"] if s["title"] in ("Rewindable", "Re-aired")]


def test_ivs_series_one_channel_and_the_service_on_air(env: Env) -> None:
    server = env.server
    driver = Ivs(env)
    status, created = server.api("POST", "/api/series", series_body("Vespers on IVS", "ivs"))
    assert status == 201, created
    channels = [c for c in driver.aws.list_channels()["channels"] if c["name"] == f"mediaserver-{created['id']}"]
    assert len(channels) == 1  # one IVS channel for the series
    arn = channels[0]["arn"]
    assert driver.key_values(arn) == [created["stream_key"]]
    services = occurrences(env, created["id"])
    assert len(services) == 3 and all(s["backend"] == "ivs" for s in services)
    for name in ("Session Created", "Stream Start"):
        driver.send(stream_state(arn, name))
    until(lambda: status_of(env, services[0]["id"]) == "LIVE", 30, "the first service live")
    assert [status_of(env, s["id"]) for s in services[1:]] == ["SCHEDULED", "SCHEDULED"]
    driver.send(stream_state(arn, "Stream End"))
    until(lambda: status_of(env, services[0]["id"]) in ("ENDING", "ENDED"), 30, "the first service ending")
    assert server.api("DELETE", f"/api/series/{created['id']}")[0] == 204
    until(lambda: not [c for c in driver.aws.list_channels()["channels"] if c["arn"] == arn], 10,
          "the IVS channel removed")
