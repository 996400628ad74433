"""A local stand-in for Mux Video, for tests (no network reaches Mux from here).

It serves the endpoints mux-python calls for live streams (create, list, get, delete, reset-stream-key, complete),
checks HTTP Basic auth with its token, and answers with bodies shaped as in Mux's published API reference
(https://docs.mux.com/api-reference#video/operation/create-live-stream and friends). It keeps every call it
got, and sends webhooks signed the way Mux documents (Mux-Signature: t=UNIX,v1=HMAC-SHA256(secret, "t.body")),
including forged, stale and repeated ones. It runs in its own thread and event loop, so the server under test
(which calls it from its own threads) and the test never wait on each other.
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from aiohttp import web

# The example body of "Create a live stream" in Mux's API reference (201), values replaced per stream.
RECORDED_CREATE = {
    "data": {
        "stream_key": "abcdefgh-0000-0000-0000-abcdefghijkl",
        "status": "idle",
        "reconnect_window": 60,
        "playback_ids": [{"policy": "public", "id": "HNRZIIbWn8XPwXqDi5JiBE1U8UlUCPDg"}],
        "new_asset_settings": {"playback_policies": ["public"]},
        "id": "ZEBrNTpHC02iUah025KM3te6ylM7W4S4silsrFtUkn3Ag",
        "created_at": "1609937654",
        "latency_mode": "standard",
        "max_continuous_duration": 43200,
        "srt_passphrase": "GHI56789abcde",
    }
}
# The example body of "Create a live stream simulcast target" in Mux's API reference (201).
RECORDED_SIMULCAST_TARGET = {
    "data": {"url": "rtmp://live.example.com/app", "stream_key": "abcdefgh", "status": "idle",
             "passthrough": "Example", "id": "vuOfW021mz5QA500wYEQ9SeUYvuYnpFz011mqSvski5T8WUzzkl2F39Uw"}
}
UNAUTHORIZED = {"error": {"type": "unauthorized", "messages": ["Unauthorized request"]}}


def _mux_id(n: int = 32) -> str:
    return secrets.token_urlsafe(n)[:n].replace("-", "a").replace("_", "b")


@dataclass
class Call:
    method: str
    path: str
    body: Any


@dataclass
class LiveStream:
    data: dict[str, Any]
    asset: dict[str, Any] | None = None
    keys: list[str] = field(default_factory=list)  # every key it ever had, oldest first
    simulcast_targets: dict[str, dict[str, Any]] = field(default_factory=dict)


class MuxStandIn:
    def __init__(self, token_id: str, token_secret: str, webhook_secret: str,
                 extra_routes: Callable[[web.Application], None] | None = None) -> None:
        """extra_routes(app) adds more of Mux's endpoints (e.g. a test's Mux Data or stream.mux.com routes)."""
        self.token_id, self.token_secret, self.webhook_secret = token_id, token_secret, webhook_secret
        self.extra_routes = extra_routes
        self.calls: list[Call] = []
        self.streams: dict[str, LiveStream] = {}
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/video/v1/live-streams", self._create)
        app.router.add_get("/video/v1/live-streams", self._list)
        app.router.add_get("/video/v1/live-streams/{id}", self._get)
        app.router.add_delete("/video/v1/live-streams/{id}", self._delete)
        app.router.add_post("/video/v1/live-streams/{id}/reset-stream-key", self._reset)
        app.router.add_put("/video/v1/live-streams/{id}/complete", self._complete)
        app.router.add_patch("/video/v1/live-streams/{id}", self._update)
        app.router.add_post("/video/v1/live-streams/{id}/playback-ids", self._add_playback_id)
        app.router.add_delete("/video/v1/live-streams/{id}/playback-ids/{pid}", self._remove_playback_id)
        app.router.add_post("/video/v1/assets/{id}/playback-ids", self._add_playback_id)
        app.router.add_delete("/video/v1/assets/{id}/playback-ids/{pid}", self._remove_playback_id)
        targets = "/video/v1/live-streams/{id}/simulcast-targets"
        app.router.add_post(targets, self._add_simulcast_target)
        app.router.add_get(targets + "/{tid}", self._get_simulcast_target)
        app.router.add_delete(targets + "/{tid}", self._delete_simulcast_target)
        if self.extra_routes is not None:
            self.extra_routes(app)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def start(self) -> "MuxStandIn":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the API ----------------------------------------------------------------------------------
    def _authorized(self, request: web.Request) -> bool:
        expected = "Basic " + base64.b64encode(f"{self.token_id}:{self.token_secret}".encode()).decode()
        return hmac.compare_digest(request.headers.get("Authorization", ""), expected)

    async def _record(self, request: web.Request) -> web.Response | None:
        raw = await request.read()
        self.calls.append(Call(request.method, request.path, json.loads(raw) if raw else None))
        if not self._authorized(request):
            return web.json_response(UNAUTHORIZED, status=401)
        return None

    def _found(self, request: web.Request) -> LiveStream | None:
        return self.streams.get(request.match_info["id"])

    @staticmethod
    def _not_found() -> web.Response:
        return web.json_response({"error": {"type": "not_found", "messages": ["Live stream not found"]}}, status=404)

    async def _create(self, request: web.Request) -> web.Response:
        refused = await self._record(request)
        if refused:
            return refused
        body = self.calls[-1].body or {}
        policies = body.get("playback_policy") or body.get("playback_policies") or ["public"]
        data = json.loads(json.dumps(RECORDED_CREATE["data"]))
        data.update(id=_mux_id(44), stream_key=str(uuid.uuid4()), created_at=str(int(time.time())),
                    playback_ids=[{"policy": policies[0], "id": _mux_id(32)}],
                    reconnect_window=body.get("reconnect_window", 60), latency_mode=body.get("latency_mode", "standard"),
                    passthrough=body.get("passthrough"), srt_passphrase=_mux_id(16))
        if body.get("new_asset_settings"):
            data["new_asset_settings"] = {"playback_policies": body["new_asset_settings"].get("playback_policy")
                                          or ["public"]}
        else:
            data.pop("new_asset_settings")
        self.streams[data["id"]] = LiveStream(data, keys=[data["stream_key"]])
        return web.json_response({"data": data}, status=201)

    async def _list(self, request: web.Request) -> web.Response:
        refused = await self._record(request)
        return refused or web.json_response({"data": [s.data for s in self.streams.values()]})

    async def _get(self, request: web.Request) -> web.Response:
        refused = await self._record(request)
        stream = self._found(request)
        return refused or (web.json_response({"data": stream.data}) if stream else self._not_found())

    async def _delete(self, request: web.Request) -> web.Response:
        refused = await self._record(request)
        if refused:
            return refused
        if self.streams.pop(request.match_info["id"], None) is None:
            return self._not_found()
        return web.Response(status=204)

    async def _reset(self, request: web.Request) -> web.Response:
        refused = await self._record(request)
        stream = self._found(request)
        if refused or stream is None:
            return refused or self._not_found()
        stream.data["stream_key"] = str(uuid.uuid4())
        stream.keys.append(stream.data["stream_key"])
        return web.json_response({"data": stream.data}, status=201)

    async def _complete(self, request: web.Request) -> web.Response:
        refused = await self._record(request)
        stream = self._found(request)
        if refused or stream is None:
            return refused or self._not_found()
        return web.json_response({"data": {}})

    async def _update(self, request: web.Request) -> web.Response:
        refused = await self._record(request)
        stream = self._found(request)
        if refused or stream is None:
            return refused or self._not_found()
        body = self.calls[-1].body or {}
        if body.get("new_asset_settings"):
            stream.data["new_asset_settings"] = {"playback_policies": body["new_asset_settings"]["playback_policy"]}
        stream.data["reconnect_window"] = body.get("reconnect_window", stream.data["reconnect_window"])
        return web.json_response({"data": stream.data})

    async def _add_simulcast_target(self, request: web.Request) -> web.Response:
        refused = await self._record(request)
        stream = self._found(request)
        if refused or stream is None:
            return refused or self._not_found()
        if stream.data["status"] != "idle":  # "can only be created when the parent live stream is in idle state"
            return web.json_response({"error": {"type": "invalid_parameters", "messages": [
                "Simulcast targets can only be created when the live stream is idle"]}}, status=400)
        body = self.calls[-1].body or {}
        if not body.get("url"):
            return web.json_response({"error": {"type": "invalid_parameters", "messages": ["url is required"]}},
                                     status=400)
        data = dict(RECORDED_SIMULCAST_TARGET["data"], id=_mux_id(56), url=body["url"],
                    stream_key=body.get("stream_key"), passthrough=body.get("passthrough"), status="idle")
        stream.simulcast_targets[data["id"]] = data
        return web.json_response({"data": data}, status=201)

    async def _get_simulcast_target(self, request: web.Request) -> web.Response:
        refused = await self._record(request)
        stream = self._found(request)
        target = stream.simulcast_targets.get(request.match_info["tid"]) if stream else None
        return refused or (web.json_response({"data": target}) if target else self._not_found())

    async def _delete_simulcast_target(self, request: web.Request) -> web.Response:
        refused = await self._record(request)
        stream = self._found(request)
        if refused or stream is None or stream.simulcast_targets.pop(request.match_info["tid"], None) is None:
            return refused or self._not_found()
        return web.Response(status=204)

    def _owner(self, request: web.Request) -> dict[str, Any] | None:
        """The live stream's or asset's data whose playback ids the path names."""
        wanted = request.match_info["id"]
        if "/assets/" in request.path:
            return next((s.asset for s in self.streams.values() if s.asset and s.asset["id"] == wanted), None)
        stream = self.streams.get(wanted)
        return stream.data if stream else None

    async def _add_playback_id(self, request: web.Request) -> web.Response:
        refused = await self._record(request)
        owner = self._owner(request)
        if refused or owner is None:
            return refused or self._not_found()
        playback = {"policy": (self.calls[-1].body or {}).get("policy", "public"), "id": _mux_id(32)}
        owner["playback_ids"].append(playback)
        return web.json_response({"data": playback}, status=201)

    async def _remove_playback_id(self, request: web.Request) -> web.Response:
        refused = await self._record(request)
        owner = self._owner(request)
        if refused or owner is None:
            return refused or self._not_found()
        kept = [p for p in owner["playback_ids"] if p["id"] != request.match_info["pid"]]
        if len(kept) == len(owner["playback_ids"]):
            return self._not_found()
        owner["playback_ids"] = kept
        return web.Response(status=204)

    # -- what Mux does when an encoder comes and goes ----------------------------------------------
    def encoder_connects(self, live_stream_id: str) -> None:
        """An encoder publishes: the live stream turns active and its asset is being recorded."""
        stream = self.streams[live_stream_id]
        stream.data["status"] = "active"
        if "new_asset_settings" in stream.data:
            policy = stream.data["new_asset_settings"]["playback_policies"][0]
            stream.asset = {"id": _mux_id(44), "status": "preparing", "is_live": True,
                            "playback_ids": [{"policy": policy, "id": _mux_id(32)}], "live_stream_id": live_stream_id,
                            "duration": 0.0, "created_at": str(int(time.time())), "passthrough": None}
            stream.data["active_asset_id"] = stream.asset["id"]

    def asset_completed(self, live_stream_id: str, duration: float) -> dict[str, Any]:
        stream = self.streams[live_stream_id]
        assert stream.asset is not None
        stream.data["status"] = "idle"
        stream.asset.update(status="ready", is_live=False, duration=duration)
        stream.data.setdefault("recent_asset_ids", []).append(stream.asset["id"])
        return stream.asset

    def simulcast_status(self, live_stream_id: str, target_id: str, status: str,
                         error_severity: str | None = None) -> dict[str, Any]:
        """Mux's pusher changed a target's status (idle, starting, broadcasting, errored): the webhook's data."""
        target = self.streams[live_stream_id].simulcast_targets[target_id]
        target["status"] = status
        if error_severity:
            target["error_severity"] = error_severity
        return dict(target)

    # -- webhooks out, signed as Mux signs them ------------------------------------------------------
    def event(self, kind: str, data: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
        """A webhook body as Mux sends it (https://docs.mux.com/webhook-reference)."""
        obj = "asset" if kind.startswith("video.asset.") else "live_stream"
        if kind.startswith("video.live_stream.simulcast_target."):
            obj = "simulcast_target"
        return {"type": kind, "object": {"type": obj, "id": data.get("id")}, "id": event_id or str(uuid.uuid4()),
                "environment": {"name": "Production", "id": "standin"}, "data": data,
                "created_at": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"),
                "accessor_source": None, "accessor": None, "request_id": None}

    def signature(self, body: bytes, timestamp: int, secret: str | None = None) -> str:
        key = (secret if secret is not None else self.webhook_secret).encode()
        return f"t={timestamp},v1={hmac.new(key, str(timestamp).encode() + b'.' + body, hashlib.sha256).hexdigest()}"

    def send(self, target: str, payload: dict[str, Any], *, timestamp: int | None = None, secret: str | None = None,
             signed: bool = True, tamper: bool = False) -> tuple[int, Any]:
        """POST a webhook to target. secret: sign with another secret (forged); tamper: change the body after
        signing; timestamp: sign as of then (stale); signed False: no Mux-Signature at all."""
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if signed:
            headers["Mux-Signature"] = self.signature(body, int(time.time()) if timestamp is None else timestamp,
                                                      secret)
        if tamper:
            body = body.replace(b'"type": "video', b'"type":  "video')
        request = urllib.request.Request(target, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")
