"""An organization's default simulcast targets reach every new stream, whichever back-end carries it:

- built-in: copied, pushed by this server (as before);
- Mux: copied AND made at Mux (the local stand-in in tests/mux_standin.py, read back from its own state: the
  target there has YouTube's URL, the default's key, and our copy's id as passthrough);
- IVS (no simulcast): copied, FAILED with IVS's reason, so the console shows why it will never push.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.ivs_fixture import IvsStandIn
from tests.mux_standin import MuxStandIn
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.waiting import until

pytestmark = pytest.mark.timeout(120)

MUX_TOKEN_ID, MUX_TOKEN_SECRET = "defaults-token-id", "defaults-token-secret-4d5e"
MUX_WEBHOOK_SECRET = "defaults-webhook-secret-7a8b"
YOUTUBE_KEY = "yt-org-default-2k4m-8p9q"
FACEBOOK_KEY = "FB-1234567890123456?s_bl=1&s_ps=1&a=AbCdEf"
PATH = "/api/orgs/default/simulcast-targets"


class Env:
    def __init__(self, server: ServerHandle, standin: MuxStandIn, data_dir: Path) -> None:
        self.server, self.standin, self.data_dir = server, standin, data_dir


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    standin = MuxStandIn(MUX_TOKEN_ID, MUX_TOKEN_SECRET, MUX_WEBHOOK_SECRET).start()
    ivs = IvsStandIn(tmp_path_factory.mktemp("ivs")).start()
    data_dir = tmp_path_factory.mktemp("defaults")
    config = small_config(data_dir)
    config.mux.token_id, config.mux.token_secret = MUX_TOKEN_ID, MUX_TOKEN_SECRET
    config.mux.webhook_secret, config.mux.base_url = MUX_WEBHOOK_SECRET, standin.url
    config.ivs = ivs.config()
    server = run_server(config)
    try:
        # The organization's defaults: YouTube (source) and Facebook (asks for a ladder rung), one paused.
        status, youtube = server.api("POST", PATH, {"kind": "youtube", "key": YOUTUBE_KEY, "name": "Church YouTube"})
        assert status == 201, youtube
        status, facebook = server.api("POST", PATH, {"kind": "facebook", "key": FACEBOOK_KEY, "name": "Facebook",
                                                     "rendition": "360p"})
        assert status == 201, facebook
        status, paused = server.api("POST", PATH, {"kind": "rtmp", "url": "rtmp://live.example.org/app",
                                                   "key": "paused-key", "name": "Paused"})
        assert status == 201 and server.api("PATCH", f"{PATH}/{paused['id']}", {"enabled": False})[0] == 200
        yield Env(server, standin, data_dir)
    finally:
        server.stop()
        standin.stop()
        ivs.stop()


def targets(server: ServerHandle, stream_id: str) -> dict[str, dict[str, Any]]:
    status, body = server.api("GET", f"/api/streams/{stream_id}/simulcast-targets")
    assert status == 200, body
    return {t["name"]: t for t in body["targets"]}


def stored_remotes(server: ServerHandle, stream_id: str) -> list[tuple[Any, ...]]:
    """The stream's target rows' platform side, read from the database file's table (under the server's lock)."""
    db = server.server.db
    with db._lock:
        return list(db.db.execute("select remote from simulcast_targets where stream_id = ?", [stream_id]).fetchall())


def settled(server: ServerHandle, stream_id: str, count: int) -> Callable[[], dict[str, dict[str, Any]]]:
    """The stream's targets once the copy (done on the stream.created event, after the answer) is complete."""
    def check() -> dict[str, dict[str, Any]]:
        stored = [json.loads(r[0] or "null") for r in stored_remotes(server, stream_id)]
        return targets(server, stream_id) if len(stored) == count and all(stored) else {}
    return check


def test_a_new_mux_stream_gets_the_defaults_made_at_mux(env: Env) -> None:
    server, standin = env.server, env.standin
    status, created = server.api("POST", "/api/streams", {"title": "Sunday on Mux", "backend": "mux"})
    assert status == 201, created
    [remote] = [sid for sid, s in standin.streams.items() if s.data.get("passthrough") == created["id"]]
    copied = until(settled(server, created["id"], 2), what="the defaults copied and made at Mux")
    assert sorted(copied) == ["Church YouTube", "Facebook"]         # not the paused one
    # Mux's own state: both targets, with the platforms' ingest URLs and the defaults' keys; passthrough
    # names our copy.
    at_mux = {t["passthrough"]: t for t in standin.streams[remote].simulcast_targets.values()}
    assert sorted(at_mux) == sorted(t["id"] for t in copied.values())
    youtube, facebook = at_mux[copied["Church YouTube"]["id"]], at_mux[copied["Facebook"]["id"]]
    assert (youtube["url"], youtube["stream_key"]) == ("rtmp://a.rtmp.youtube.com/live2", YOUTUBE_KEY)
    assert (facebook["url"], facebook["stream_key"]) == ("rtmps://live-api-s.facebook.com:443/rtmp", FACEBOOK_KEY)
    # Shown as Mux's targets: pending until Mux reports; Mux pushes the source, said where a rung was asked.
    for target in copied.values():
        assert target["status"] == "PENDING" and target["error"] is None and target["rendition"] == "source"
    assert copied["Church YouTube"]["detail"] is None
    assert "360p" in copied["Facebook"]["detail"] and "mux" in copied["Facebook"]["detail"]
    assert YOUTUBE_KEY not in json.dumps(copied) and FACEBOOK_KEY not in json.dumps(copied)
    # Mux's status notifications find the copies (the platform id was kept): deleting one removes it at Mux.
    status, _ = server.api("DELETE", f"/api/streams/{created['id']}/simulcast-targets/{copied['Facebook']['id']}")
    assert status == 204
    assert [t["passthrough"] for t in standin.streams[remote].simulcast_targets.values()] == \
        [copied["Church YouTube"]["id"]]
    stored = b"".join(p.read_bytes() for p in env.data_dir.glob("mediaserver.db*"))
    assert YOUTUBE_KEY.encode() not in stored


def test_a_new_ivs_stream_shows_why_the_defaults_never_push(env: Env) -> None:
    server = env.server
    status, created = server.api("POST", "/api/streams", {"title": "Sunday on IVS", "backend": "ivs"})
    assert status == 201, created
    copied = until(settled(server, created["id"], 2), what="the defaults copied to the IVS stream")
    assert sorted(copied) == ["Church YouTube", "Facebook"]
    for target in copied.values():
        assert target["status"] == "FAILED" and "IVS can't simulcast" in (target["error"] or ""), target
    # Resuming asks IVS again: refused with the same reason, nothing pretends to push.
    path = f"/api/streams/{created['id']}/simulcast-targets/{copied['Church YouTube']['id']}"
    assert server.api("PATCH", path, {"enabled": False})[0] == 200
    status, answer = server.api("PATCH", path, {"enabled": True})
    assert status == 409 and "IVS can't simulcast" in answer["error"], answer
    # The console and webhooks heard of the failure as of any push's: simulcast.status FAILED on the bus.
    events = [e for e in server.server.manager.bus.history
              if e.name == "simulcast.status" and e.stream_id == created["id"]]
    assert sorted(e.data["target_id"] for e in events) == sorted(t["id"] for t in copied.values())
    assert all(e.data["status"] == "FAILED" for e in events)


def test_a_new_builtin_stream_still_gets_the_defaults_as_before(env: Env) -> None:
    server, standin = env.server, env.standin
    calls = len(standin.calls)
    created = server.create_stream("Sunday here")
    copied = until(lambda: targets(server, created["id"]), what="the defaults copied")
    assert sorted(copied) == ["Church YouTube", "Facebook"]
    assert copied["Facebook"]["rendition"] == "360p"                  # this server pushes the rung asked for
    assert copied["Church YouTube"]["url"] == "rtmp://a.rtmp.youtube.com/live2"
    assert all(t["status"] == "PENDING" and t["error"] is None for t in copied.values())
    assert [r[0] for r in stored_remotes(server, created["id"])] == [None, None]                                      # this server's own pushes
    assert len(standin.calls) == calls                                  # nothing asked of Mux


def _series(server: ServerHandle, title: str, backend: str) -> dict[str, Any]:
    from datetime import datetime, timedelta, timezone
    first = datetime.now(timezone.utc) + timedelta(minutes=5)
    status, created = server.api("POST", "/api/series", {
        "title": title, "rrule": "FREQ=DAILY;COUNT=3", "start_time": first.strftime("%H:%M"), "duration": 60,
        "timezone": "UTC", "dtstart": first.date().isoformat(), "backend": backend})
    assert status == 201, created
    return created


def _services(server: ServerHandle, series_id: str) -> list[str]:
    status, listed = server.api("GET", "/api/streams?state=all&limit=100")
    assert status == 200
    return [s["id"] for s in sorted((s for s in listed["streams"] if s.get("series_id") == series_id),
                                    key=lambda s: s["scheduled_start"])]


def test_a_mux_series_gets_the_defaults_once_on_its_shared_live_stream(env: Env) -> None:
    """The services of a Mux series share one live stream at Mux: the defaults are made there once (listed on the
    first service to get them), never once per service, which would push to YouTube three times."""
    server, standin = env.server, env.standin
    created = _series(server, "Daily prayer", "mux")
    [remote] = [sid for sid, s in standin.streams.items() if s.data.get("passthrough") == created["id"]]
    services = _services(server, created["id"])
    assert len(services) == 3
    until(lambda: len(standin.streams[remote].simulcast_targets) >= 2, what="the defaults made at Mux")
    time.sleep(1.0)  # every service's stream.created has been handled by now; none may add more
    at_mux = list(standin.streams[remote].simulcast_targets.values())
    assert sorted(t["url"] for t in at_mux) == ["rtmp://a.rtmp.youtube.com/live2",
                                                "rtmps://live-api-s.facebook.com:443/rtmp"]
    listed = [targets(server, s) for s in services]
    assert sum(len(t) for t in listed) == 2 and sorted(next(t for t in listed if t)) == ["Church YouTube", "Facebook"]


def test_a_builtin_series_services_get_the_defaults(env: Env) -> None:
    """Services made when the series is created are announced (stream.created) and get the defaults, as the ones
    the scheduler makes later do."""
    server = env.server
    created = _series(server, "Daily prayer here", "builtin")
    for service in _services(server, created["id"]):
        copied = until(lambda: targets(server, service), what="the defaults copied")
        assert sorted(copied) == ["Church YouTube", "Facebook"]


def test_a_stream_moved_to_mux_takes_its_targets_and_back_again(env: Env) -> None:
    """A built-in stream's own targets follow it onto Mux (made there, as source) and back (pushed by us again);
    onto IVS they show why they can't push."""
    server, standin = env.server, env.standin
    status, created = server.api("POST", "/api/streams", {"title": "Moving house"})
    assert status == 201 and created["backend"] == "builtin"
    here = until(lambda: targets(server, created["id"]), what="the defaults copied")
    assert here["Facebook"]["rendition"] == "360p"
    status, moved = server.api("PATCH", f"/api/streams/{created['id']}", {"backend": "mux"})
    assert status == 200, moved
    [remote] = [sid for sid, s in standin.streams.items() if s.data.get("passthrough") == created["id"]]
    until(lambda: len(standin.streams[remote].simulcast_targets) == 2, what="the targets made at Mux")
    at_mux = {t["passthrough"]: t for t in standin.streams[remote].simulcast_targets.values()}
    assert (at_mux[here["Church YouTube"]["id"]]["url"], at_mux[here["Church YouTube"]["id"]]["stream_key"]) == \
        ("rtmp://a.rtmp.youtube.com/live2", YOUTUBE_KEY)
    assert at_mux[here["Facebook"]["id"]]["stream_key"] == FACEBOOK_KEY
    on_mux = targets(server, created["id"])
    assert on_mux["Facebook"]["rendition"] == "source" and "360p" in on_mux["Facebook"]["detail"]
    assert {t["status"] for t in on_mux.values()} == {"PENDING"}
    # Back to this server: Mux's live stream (and its targets) is gone; ours push again at the next broadcast.
    status, _ = server.api("PATCH", f"/api/streams/{created['id']}", {"backend": "builtin"})
    assert status == 200 and remote not in standin.streams
    until(lambda: all(json.loads(r[0] or "null") is None for r in stored_remotes(server, created["id"])),
          what="the platform side dropped")
    # Onto IVS: kept, and FAILED with IVS's reason.
    status, _ = server.api("PATCH", f"/api/streams/{created['id']}", {"backend": "ivs"})
    assert status == 200
    def failed() -> dict[str, dict[str, Any]]:
        found = {n: t for n, t in targets(server, created["id"]).items() if t["status"] == "FAILED"}
        return found if len(found) == 2 else {}
    on_ivs = until(failed, what="the targets FAILED on IVS")
    assert all("IVS" in t["error"] for t in on_ivs.values())
