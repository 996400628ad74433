"""The sermon library's admin API under /api/library: publish a recording (POST), edit (PATCH), unpublish
(DELETE), list and read. Also installs the library store and the auto-publisher (on recording.ready)."""
from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, Callable

from aiohttp import web

from mediaserver.db import Database
from mediaserver.library import TEXT_FIELDS, AutoPublisher, LibraryStore, NotPublishable, publish_recording
from mediaserver.podcast import AUDIO_NAME, remux_audio
from storage.local import LocalStore
from web.api import iso, parse_date, public_base, read_json
from web.auth import SCOPE, error, manages
from web.keys import CONFIG, DB, MANAGER, STORE

log = logging.getLogger(__name__)

LIBRARY = web.AppKey("library", LibraryStore)
AUTO_PUBLISHER = web.AppKey("library_auto_publisher", AutoPublisher)


def audio_maker(db: Database, store: LocalStore, library: LibraryStore) -> Callable[[dict[str, Any]], None]:
    """The podcast audio for an item (blocking): its recording's AAC, remuxed next to the recording's MP4."""
    def make(item: dict[str, Any]) -> None:
        recording = db.recording(item["stream_id"], item["recording_id"])
        mp4 = store.local_path(recording["mp4_key"]) if recording and recording.get("mp4_key") else None
        if mp4 is None or not mp4.exists():
            log.info("library item %s: no MP4 to take the podcast audio from", item["id"])
            return
        key = f"{recording['mp4_key'].rsplit('/', 1)[0]}/{AUDIO_NAME}" if recording else AUDIO_NAME
        target = store.local_path(key)
        assert target is not None
        duration = remux_audio(mp4, target)
        library.update(item["id"], audio_key=key, audio_size=target.stat().st_size, audio_duration=duration)
    return make


def audio_path(store: LocalStore, item: dict[str, Any]) -> Path | None:
    path = store.local_path(item["audio_key"]) if item.get("audio_key") else None
    return path if path is not None and path.exists() else None


def item_urls(base: str, org_slug: str, item: dict[str, Any]) -> dict[str, Any]:
    return {
        "page_url": f"{base}/library/{org_slug}?item={item['id']}",
        "watch_url": f"{base}/watch/{item['stream_id']}",
        "audio_url": f"{base}/library/{org_slug}/{item['id']}/audio.m4a" if item.get("audio_size") else None,
    }


def item_view(base: str, org_slug: str, item: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": item["id"], "org_id": item["org_id"], "stream_id": item["stream_id"],
        "recording_id": item["recording_id"], **{k: item.get(k) or "" for k in TEXT_FIELDS},
        "date": item["date"], "published_at": iso(item["published_at"]),
        "audio_size": item.get("audio_size"), "audio_duration": item.get("audio_duration"),
        **item_urls(base, org_slug, item),
    }


def _not_found(what: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=json.dumps({"error": f"{what} not found", "details": None}),
                            content_type="application/json")


def _fields(body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    fields = {k: (body[k].strip() if isinstance(body[k], str) else "") for k in TEXT_FIELDS if k in body}
    problems: dict[str, str] = {}
    if "date" in body:
        try:
            fields["date"] = parse_date(body["date"]).isoformat()
        except ValueError as exc:
            problems["date"] = str(exc)
    return fields, problems


async def _org_slug(request: web.Request, org_id: str) -> str:
    org = await asyncio.to_thread(request.app[DB].org, org_id)
    return str(org["slug"]) if org else org_id


async def _find_item(request: web.Request) -> dict[str, Any]:
    item = await asyncio.to_thread(request.app[LIBRARY].get, request.match_info["item_id"])
    if item is None or not manages(request, item["org_id"]):
        raise _not_found("library item")
    return item


async def _respond(request: web.Request, item: dict[str, Any], status: int = 200) -> web.Response:
    slug = await _org_slug(request, item["org_id"])
    return web.json_response(item_view(public_base(request), slug, item), status=status)


async def list_items(request: web.Request) -> web.Response:
    org_id: str | None = request[SCOPE]
    wanted = request.query.get("org")
    for name in set(request.query) - {"org"}:
        return error(400, "invalid query", {name: "unknown parameter"})
    if wanted is not None:
        row = await asyncio.to_thread(request.app[DB].org, wanted)
        if row is None or not manages(request, row["id"]):
            return error(404, "organization not found", None)
        org_id = str(row["id"])
    items = await asyncio.to_thread(request.app[LIBRARY].of_org, org_id)
    orgs = {o["id"]: o["slug"] for o in await asyncio.to_thread(request.app[DB].orgs)}
    base = public_base(request)
    return web.json_response({"items": [item_view(base, orgs.get(i["org_id"], i["org_id"]), i) for i in items]})


async def publish(request: web.Request) -> web.Response:
    body = await read_json(request, "LibraryPublish")
    db = request.app[DB]
    stream = await asyncio.to_thread(db.stream, body["stream_id"])
    if stream is None or not manages(request, stream["org_id"]):
        return error(404, "stream not found", None)
    fields, problems = _fields(body)
    if problems:
        return error(400, "invalid fields", problems)
    make_audio = audio_maker(db, request.app[STORE], request.app[LIBRARY])
    try:
        item = await asyncio.to_thread(publish_recording, db, request.app[LIBRARY], make_audio, stream["id"],
                                       body["recording_id"], **fields)
    except KeyError:
        return error(404, "recording not found", None)
    except NotPublishable as exc:
        return error(409, str(exc), None)
    return await _respond(request, item, 201)


async def get_item(request: web.Request) -> web.Response:
    return await _respond(request, await _find_item(request))


async def edit_item(request: web.Request) -> web.Response:
    item = await _find_item(request)
    body = await read_json(request, "LibraryUpdate")
    fields, problems = _fields(body)
    if problems:
        return error(400, "invalid fields", problems)
    if "title" in fields and not fields["title"]:
        return error(400, "invalid fields", {"title": "must not be blank"})
    if fields:
        await asyncio.to_thread(request.app[LIBRARY].update, item["id"], **fields)
    return await _respond(request, await _find_item(request))


async def unpublish(request: web.Request) -> web.Response:
    item = await _find_item(request)
    await asyncio.to_thread(request.app[LIBRARY].delete, item["id"])
    if item.get("audio_key"):
        # Local disk or, once the recording moved there, the S3 bucket: the store deletes wherever it is.
        await asyncio.to_thread(request.app[STORE].delete, str(item["audio_key"]))
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app[LIBRARY] = LibraryStore(app[CONFIG].data_path / "mediaserver.db")

    # Subscribing needs no running loop; recording.ready events from here on publish when the stream asks.
    app[AUTO_PUBLISHER] = AutoPublisher(app[DB], app[LIBRARY], audio_maker(app[DB], app[STORE], app[LIBRARY]),
                                        app[MANAGER].bus)

    async def stop_auto_publisher(app: web.Application) -> None:
        app[AUTO_PUBLISHER].stop()

    app.on_cleanup.append(stop_auto_publisher)
    app.router.add_get("/api/library", list_items)
    app.router.add_post("/api/library", publish)
    app.router.add_get("/api/library/{item_id}", get_item)
    app.router.add_patch("/api/library/{item_id}", edit_item)
    app.router.add_delete("/api/library/{item_id}", unpublish)
