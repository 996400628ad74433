"""Simulcast targets of a stream under /api/streams/{id}/simulcast-targets (list, add, enable/disable, delete),
an organization's defaults under /api/orgs/{org}/simulcast-targets (copied into each stream it creates from
then on, as the stream.created event arrives), and the wiring of the pushes (mediaserver/simulcast_push.py) to the session's media tap and the event bus.

A target's stream key is taken once, sealed (mediaserver/secret_box.py) and never returned.

A stream on a cloud back-end (Mux) never passes its video through this server: its targets are the platform's
own (made and removed through the back-end, the platform's target id and last status in the row's `remote`
JSON, updated from the platform's notifications by mediaserver/backends/lifecycle.py); no pusher here starts.
An organization's defaults reach such a stream the same way (made at the platform; FAILED with the platform's
reason where it can't push, as on IVS)."""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from mediaserver.backends.base import BackendError, StreamBackend, Unsupported
from mediaserver.events import Event
from mediaserver.secret_box import SecretBox, SecretUnreadable
from mediaserver.sessions import ladder_for
from mediaserver.simulcast import SOURCE, PushState, SimulcastStore, TargetError, check_rendition, push_url, target_url
from mediaserver.simulcast_push import PushTarget, SimulcastHub
from web.api import find_stream, iso, read_json
from web.backends_api import BACKEND_CHANGED, BACKENDS, backend_name, is_cloud, platform_error, remote_of, shares_remote
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


def _state(row: dict[str, Any], hub: SimulcastHub) -> PushState | None:
    """A platform's target: its status as the platform last told it; else this server's push state."""
    if not row.get("remote"):
        return hub.states.get(row["id"])
    remote = json.loads(row["remote"])
    return PushState(status=remote.get("status") or "PENDING", error=remote.get("error"),
                     since=float(remote.get("since") or row["created_at"]), detail=remote.get("detail"))


async def _cloud(request: web.Request, row: dict[str, Any] | None) -> StreamBackend | None:
    """The back-end of a target's stream when it is a cloud one (its targets are the platform's)."""
    if row is None or row.get("stream_id") is None:
        return None
    stream = await asyncio.to_thread(request.app[DB].stream, row["stream_id"])
    if stream is None or not is_cloud(stream):
        return None
    return request.app[BACKENDS].get(backend_name(stream))


async def _remote_add(app: web.Application, backend: StreamBackend, row: dict[str, Any]) -> str:
    """Create row's target at the platform; the row keeps the platform's id (status PENDING until told)."""
    stream = await asyncio.to_thread(app[DB].stream, row["stream_id"])
    assert stream is not None
    key = app[SECRET_BOX].open(row["key_sealed"])
    target_id = await backend.add_simulcast_target(remote_of(stream), row["url"], key, row["id"])
    return json.dumps({"backend": backend.name, "id": target_id, "status": "PENDING", "error": None,
                       "since": row["created_at"]})


async def _remote_remove(request: web.Request, backend: StreamBackend, row: dict[str, Any]) -> str:
    stream = await asyncio.to_thread(request.app[DB].stream, row["stream_id"])
    remote = json.loads(row.get("remote") or "{}")
    if stream is not None and remote.get("id"):
        await backend.remove_simulcast_target(remote_of(stream), str(remote["id"]))
    return json.dumps({"backend": backend.name, "id": None, "status": "PENDING", "error": None,
                       "since": row["created_at"]})


def _source_only(backend: StreamBackend) -> web.Response:
    return error(400, "invalid fields", {"rendition": f"{backend.name} pushes the stream as it receives it: only "
                                                      f"{SOURCE!r}"})


def _push_target(box: SecretBox, row: dict[str, Any]) -> PushTarget | None:
    if row["stream_id"] is None or row.get("remote"):
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
    hub = request.app[SIMULCAST_HUB]
    return web.json_response({f"{owner[0]}_id": owner[1], "targets": [target_view(r, _state(r, hub)) for r in rows]})


async def add_target(request: web.Request) -> web.Response:
    owner = await _owner(request)
    body = await read_json(request, "SimulcastTargetCreate")
    # The video of a cloud stream never passes through this server: the platform pushes, if it can.
    backend = await _cloud(request, {"stream_id": owner[1] if owner[0] == "stream" else None})
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
    if backend is not None and backend.capabilities.simulcast and rendition != SOURCE:
        return _source_only(backend)
    box = request.app[SECRET_BOX]
    name = body.get("name") or body["kind"]
    row = await asyncio.to_thread(store.add, owner, name, body["kind"], url, box.seal(body["key"]),
                                  bool(body.get("tls_verify", True)), rendition)
    hub = request.app[SIMULCAST_HUB]
    if backend is not None:
        try:
            row["remote"] = await _remote_add(request.app, backend, row)
        except BackendError as exc:  # refused there (Unsupported too): not kept here either
            await asyncio.to_thread(store.delete, row["id"])
            return error(409, str(exc), None) if isinstance(exc, Unsupported) else platform_error(exc)
        await asyncio.to_thread(store.update, row["id"], remote=row["remote"])
        return web.json_response(target_view(row, _state(row, hub)), status=201)
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
    backend = await _cloud(request, row)
    if backend is not None:
        return await _update_remote(request, backend, row, fields)
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


async def _update_remote(request: web.Request, backend: StreamBackend, row: dict[str, Any],
                         fields: dict[str, Any]) -> web.Response:
    """A platform's target: disabling removes it there, enabling makes it there again (the platform has no
    switch of its own); the rendition is always the source."""
    if fields.get("rendition", SOURCE) != SOURCE:
        return _source_only(backend)
    try:
        if "enabled" in fields and fields["enabled"] != row["enabled"]:
            fields["remote"] = await (_remote_add(request.app, backend, row) if fields["enabled"]
                                      else _remote_remove(request, backend, row))
    except BackendError as exc:
        return error(409, str(exc), None) if isinstance(exc, Unsupported) else platform_error(exc)
    if fields:
        await asyncio.to_thread(request.app[SIMULCAST_STORE].update, row["id"], **fields)
        row = {**row, **fields}
    return web.json_response(target_view(row, _state(row, request.app[SIMULCAST_HUB])))


async def delete_target(request: web.Request) -> web.Response:
    row = await _find_target(request)
    hub = request.app[SIMULCAST_HUB]
    backend = await _cloud(request, row)
    if backend is not None and row.get("remote"):
        try:
            await _remote_remove(request, backend, row)
        except BackendError as exc:  # kept here: deleting again retries at the platform
            return platform_error(exc)
    if row["stream_id"] is not None:
        await hub.stop_target(row["stream_id"], row["id"])
    await asyncio.to_thread(request.app[SIMULCAST_STORE].delete, row["id"])
    hub.forget(row["id"])
    return web.Response(status=204)


async def copy_defaults(app: web.Application, stream_id: str) -> None:
    """A new stream gets its organization's default targets. On a cloud back-end each copy is made at the
    platform, the way a target added by hand is (the platform's live stream exists by now: web/api.py makes it
    before stream.created); a copy the platform can't make (IVS has no simulcast) stays FAILED with the
    platform's reason, so the console shows why instead of a target that silently never pushes."""
    stream = await asyncio.to_thread(app[DB].stream, stream_id)
    if stream is None:
        return
    store = app[SIMULCAST_STORE]
    if not is_cloud(stream):
        await asyncio.to_thread(store.copy_defaults, stream["org_id"], stream_id)
        return
    name = backend_name(stream)
    async with app[_CLOUD_COPY_LOCK]:  # the services of a series come together; they share one live stream
        if await asyncio.to_thread(_series_live_stream_has_targets, app[DB], store, stream):
            return  # made once at the platform, for the series' live stream: its first service lists them
        copied = await asyncio.to_thread(store.copy_defaults, stream["org_id"], stream_id, source_only=True)
        await _make_copies_at_platform(app, stream, name, copied)


async def follow_backend(app: web.Application, stream_id: str) -> None:
    """A stream moved to another platform: its own targets follow. Onto Mux each enabled one is made there (as
    source: the platform pushes what it receives); onto IVS they show FAILED with IVS's reason; back onto this
    server they lose their platform side (the old live stream, and its targets, are gone) and our pusher takes
    them at the next broadcast. Disabled ones are made at the platform when enabled, as ever."""
    stream = await asyncio.to_thread(app[DB].stream, stream_id)
    if stream is None:
        return
    store = app[SIMULCAST_STORE]
    rows = await asyncio.to_thread(store.targets, ("stream", stream_id))
    for row in rows:
        if row.get("remote"):
            await asyncio.to_thread(store.update, row["id"], remote=None)
    if not is_cloud(stream):
        return
    moved = []
    for row in rows:
        if row["enabled"]:
            if (row.get("rendition") or SOURCE) != SOURCE:
                await asyncio.to_thread(store.update, row["id"], rendition=SOURCE)
            moved.append((row, {**row, "rendition": SOURCE, "remote": None}))
    await _make_copies_at_platform(app, stream, backend_name(stream), moved)


def _series_live_stream_has_targets(db: Any, store: SimulcastStore, stream: dict[str, Any]) -> bool:
    """A service of a Mux/IVS series whose shared live stream got the defaults already (through another service):
    copying them again would have the platform push to YouTube twice."""
    if not shares_remote(db, stream):
        return False
    return any(store.targets(("stream", other["id"]))
               for other in db.streams_by_remote(backend_name(stream), remote_of(stream).remote_id)
               if other["id"] != stream["id"])


async def _make_copies_at_platform(app: web.Application, stream: dict[str, Any], name: str,
                                   copied: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    stream_id = stream["id"]
    store = app[SIMULCAST_STORE]
    for default, row in copied:
        detail = None
        if (default.get("rendition") or SOURCE) != SOURCE:
            detail = f"{name} pushes the stream as it receives it, not the {default['rendition']} asked for"
        try:
            backend = app[BACKENDS].get(name)
            if not stream.get("backend_ref"):
                raise BackendError(f"the stream had no live stream at {name} yet: pause and resume this target "
                                   "to make it there")
            remote = json.loads(await _remote_add(app, backend, row))
        except BackendError as exc:  # Unsupported too: kept, FAILED with the reason
            remote = {"backend": name, "id": None, "status": "FAILED", "error": str(exc), "since": time.time()}
        remote["detail"] = detail
        await asyncio.to_thread(store.update, row["id"], remote=json.dumps(remote))
        if remote["status"] == "FAILED":  # announced as a push's failure is (console, simulcast.status webhook)
            app[MANAGER].bus.publish(Event("simulcast.status", stream_id, {
                "target_id": row["id"], "name": row["name"], "status": "FAILED", "error": remote["error"],
                "detail": detail}))


def add_routes(app: web.Application) -> None:
    store = SimulcastStore(app[DB])
    box = SecretBox.from_data_dir(app[CONFIG].data_path)
    manager = app[MANAGER]

    async def load_targets(stream_id: str) -> list[PushTarget]:
        stream = await asyncio.to_thread(app[DB].stream, stream_id)
        if stream is None or is_cloud(stream):
            return []  # a cloud stream's video never reaches this server: its platform pushes, not us
        rows = await asyncio.to_thread(store.targets, ("stream", stream_id))
        targets = [_push_target(box, r) for r in rows if r["enabled"]]
        return [t for t in targets if t is not None]

    def emit(stream_id: str, data: dict[str, Any]) -> None:
        manager.bus.publish(Event("simulcast.status", stream_id, data))

    hub = SimulcastHub(load_targets, emit,
                       allow_private_networks=app[CONFIG].simulcast.allow_private_networks)
    app[SIMULCAST_STORE], app[SECRET_BOX], app[SIMULCAST_HUB] = store, box, hub
    app[_CLOUD_COPY_LOCK] = asyncio.Lock()

    async def on_event(event: Event) -> None:
        if event.name == "stream.created":
            await copy_defaults(app, event.stream_id)
        elif event.name == BACKEND_CHANGED:
            await follow_backend(app, event.stream_id)
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
_CLOUD_COPY_LOCK = web.AppKey("simulcast_cloud_copy_lock", asyncio.Lock)
