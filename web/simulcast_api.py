"""Simulcast targets of a stream under /api/streams/{id}/simulcast-targets (list, add, enable/disable, delete),
an organization's defaults under /api/orgs/{org}/simulcast-targets (copied into each stream it creates from
then on, as the stream.created event arrives), and the wiring of the pushes (mediaserver/simulcast_push.py) to the session's media tap and the event bus.

A target's stream key is taken once, sealed (mediaserver/secret_box.py) and never returned."""
from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from mediaserver.events import Event
from mediaserver.secret_box import SecretBox, SecretUnreadable
from mediaserver.sessions import ladder_for
from mediaserver.simulcast import SOURCE, PushState, SimulcastStore, TargetError, check_rendition, push_url, target_url
from mediaserver.simulcast_push import PushTarget, SimulcastHub
from web.api import find_stream, iso, read_json
from web.backends_api import is_cloud
from web.orgs_api import find_org
from web.auth import error
from web.keys import CONFIG, DB, MANAGER

SIMULCAST_STORE = web.AppKey("simulcast_store", SimulcastStore)
SIMULCAST_HUB = web.AppKey("simulcast_hub", SimulcastHub)
SECRET_BOX = web.AppKey("secret_box", SecretBox)
MAX_TARGETS = 10  # per stream
_END_EVENTS = ("stream.ended", "stream.failed", "stream.cancelled")


def target_view(row: dict[str, Any], state: PushState | None) -> dict[str, Any]:
    """A target as the API shows it: never its key. An organization's default has no push of its own."""
    view = {
        "id": row["id"], "name": row["name"], "kind": row["kind"],
        "url": row["url"], "enabled": bool(row["enabled"]), "tls_verify": bool(row["tls_verify"]),
        "rendition": row.get("rendition") or SOURCE, "created_at": iso(row["created_at"]),
    }
    if row["stream_id"] is None:
        return {"org_id": row["org_id"], **view}
    return {"stream_id": row["stream_id"], **view, "status": state.status if state else "PENDING",
            "error": state.error if state else None, "status_since": iso(state.since) if state else None,
            "detail": state.detail if state else None}


def _push_target(box: SecretBox, row: dict[str, Any]) -> PushTarget | None:
    if row["stream_id"] is None:
        return None
    try:
        key = box.open(row["key_sealed"])
    except SecretUnreadable:
        return None
    return PushTarget(row["id"], row["stream_id"], row["name"], push_url(row["url"], key), bool(row["tls_verify"]),
                      row.get("rendition") or SOURCE)


async def _owner(request: web.Request) -> tuple[str, str]:
    """("stream", id) or ("org", id) from the path, if the caller manages it; else an HTTP 404."""
    if "stream_id" in request.match_info:
        return "stream", str((await find_stream(request))["id"])
    return "org", str((await find_org(request))["id"])


async def _ladder(request: web.Request, owner: tuple[str, str]) -> list[str]:
    """The rung names a target of this stream (or of this organization's streams) may ask for."""
    db = request.app[DB]
    org_id = owner[1] if owner[0] == "org" else str((await asyncio.to_thread(db.stream, owner[1]) or {}).get("org_id"))
    org = await asyncio.to_thread(db.org, org_id)
    return [rung.name for rung in ladder_for(request.app[CONFIG], org)]


def _rendition(body: dict[str, Any], ladder: list[str]) -> str:
    return check_rendition(str(body.get("rendition", SOURCE)), ladder)


async def list_targets(request: web.Request) -> web.Response:
    owner = await _owner(request)
    rows = await asyncio.to_thread(request.app[SIMULCAST_STORE].targets, owner)
    states = request.app[SIMULCAST_HUB].states
    return web.json_response({f"{owner[0]}_id": owner[1], "targets": [target_view(r, states.get(r["id"])) for r in rows]})


async def add_target(request: web.Request) -> web.Response:
    owner = await _owner(request)
    body = await read_json(request, "SimulcastTargetCreate")
    if owner[0] == "stream":
        row = await asyncio.to_thread(request.app[DB].stream, owner[1])
        if row is not None and is_cloud(row):
            # The video goes to Mux or IVS, never through this server: there is nothing here to push.
            return error(409, f"this stream runs on {row.get('backend')}: simulcast from this server needs the "
                              "built-in engine (set the targets in the platform's own dashboard)", None)
    store = request.app[SIMULCAST_STORE]
    try:
        url = target_url(body["kind"], body.get("url"))
        rendition = _rendition(body, await _ladder(request, owner))
    except TargetError as exc:
        field, _, message = str(exc).partition(": ")
        return error(400, "invalid fields", {field: message})
    rows = await asyncio.to_thread(store.targets, owner)
    if len(rows) >= MAX_TARGETS:
        return error(409, f"at most {MAX_TARGETS} simulcast targets", None)
    box = request.app[SECRET_BOX]
    name = body.get("name") or body["kind"]
    row = await asyncio.to_thread(store.add, owner, name, body["kind"], url, box.seal(body["key"]),
                                  bool(body.get("tls_verify", True)), rendition)
    hub = request.app[SIMULCAST_HUB]
    target = _push_target(box, row)
    if target is not None:
        hub.start_target(target)  # the stream may be live already
    return web.json_response(target_view(row, hub.states.get(row["id"])), status=201)


async def _find_target(request: web.Request) -> dict[str, Any]:
    owner = await _owner(request)
    row = await asyncio.to_thread(request.app[SIMULCAST_STORE].target, owner, request.match_info["target_id"])
    if row is None:
        raise web.HTTPNotFound(text='{"error": "simulcast target not found", "details": null}',
                               content_type="application/json")
    return row


async def update_target(request: web.Request) -> web.Response:
    row = await _find_target(request)
    body = await read_json(request, "SimulcastTargetUpdate")
    fields: dict[str, Any] = {}
    if "enabled" in body:
        fields["enabled"] = int(body["enabled"])
    if "name" in body:
        fields["name"] = body["name"]
    if "rendition" in body:
        owner = ("stream", row["stream_id"]) if row["stream_id"] is not None else ("org", row["org_id"])
        try:
            fields["rendition"] = _rendition(body, await _ladder(request, owner))
        except TargetError as exc:
            field, _, message = str(exc).partition(": ")
            return error(400, "invalid fields", {field: message})
    hub = request.app[SIMULCAST_HUB]
    if row["stream_id"] is not None and fields.get("rendition", row.get("rendition")) != row.get("rendition"):
        await hub.stop_target(row["stream_id"], row["id"])  # started again below with the rung asked for
    if fields:
        await asyncio.to_thread(request.app[SIMULCAST_STORE].update, row["id"], **fields)
        row = {**row, **fields}
    if row["stream_id"] is not None and row["enabled"]:
        target = _push_target(request.app[SECRET_BOX], row)
        if target is not None:
            hub.start_target(target)
    elif row["stream_id"] is not None:
        await hub.stop_target(row["stream_id"], row["id"])
    return web.json_response(target_view(row, hub.states.get(row["id"])))


async def delete_target(request: web.Request) -> web.Response:
    row = await _find_target(request)
    hub = request.app[SIMULCAST_HUB]
    if row["stream_id"] is not None:
        await hub.stop_target(row["stream_id"], row["id"])
    await asyncio.to_thread(request.app[SIMULCAST_STORE].delete, row["id"])
    hub.forget(row["id"])
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    store = SimulcastStore(app[DB])
    box = SecretBox.from_data_dir(app[CONFIG].data_path)
    manager = app[MANAGER]

    async def load_targets(stream_id: str) -> list[PushTarget]:
        rows = await asyncio.to_thread(store.targets, ("stream", stream_id))
        targets = [_push_target(box, r) for r in rows if r["enabled"]]
        return [t for t in targets if t is not None]

    def emit(stream_id: str, data: dict[str, Any]) -> None:
        manager.bus.publish(Event("simulcast.status", stream_id, data))

    hub = SimulcastHub(load_targets, emit,
                       allow_private_networks=app[CONFIG].simulcast.allow_private_networks)
    app[SIMULCAST_STORE], app[SECRET_BOX], app[SIMULCAST_HUB] = store, box, hub

    async def on_event(event: Event) -> None:
        if event.name == "stream.created":
            row = await asyncio.to_thread(app[DB].stream, event.stream_id)
            if row is not None:
                await asyncio.to_thread(store.copy_defaults, row["org_id"], event.stream_id)
        elif event.name == "stream.live":
            await hub.stream_live(event.stream_id)
        elif event.name in _END_EVENTS:
            await hub.stream_ended(event.stream_id)

    async def start(app: web.Application) -> None:
        manager.media_taps.append(hub.feed)
        manager.rendition_taps.append(hub.feed_rendition)
        app[_UNSUBSCRIBE] = manager.bus.subscribe(on_event)

    async def stop(app: web.Application) -> None:
        app[_UNSUBSCRIBE]()
        if hub.feed in manager.media_taps:
            manager.media_taps.remove(hub.feed)
        if hub.feed_rendition in manager.rendition_taps:
            manager.rendition_taps.remove(hub.feed_rendition)
        await hub.shutdown()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    for base in ("/api/streams/{stream_id}/simulcast-targets", "/api/orgs/{org}/simulcast-targets"):
        app.router.add_get(base, list_targets)
        app.router.add_post(base, add_target)
        app.router.add_patch(base + "/{target_id}", update_target)
        app.router.add_delete(base + "/{target_id}", delete_target)


_UNSUBSCRIBE: web.AppKey[Any] = web.AppKey("simulcast_unsubscribe")
