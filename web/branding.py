"""Branding images over HTTP: staff upload or remove an organization's logo and poster
(PUT/DELETE /api/orgs/{org}/branding/{kind}); anyone may fetch them (GET /brand/{org}/{kind}): a logo isn't secret."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from mediaserver.branding import IMAGE_KINDS, MAX_IMAGE_BYTES, ImageInfo, ImageRejected, check_image, stored_image
from storage.store import StorageError
from web.auth import error
from web.keys import DB, STORE
from web.orgs_api import find_org, org_view

# The app refuses bodies over 64 KiB (web/app.py); these routes read theirs from the stream with this limit.
READ_CHUNK = 64 * 1024


def image_key(org_id: str, kind: str, sha256: str) -> str:
    """Content-addressed, so a replaced image never overwrites the file a reader is sending."""
    return f"branding/{org_id}/{kind}-{sha256[:32]}"


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The request body, or ImageRejected(413) as soon as it passes `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise ImageRejected(413, f"the image is {request.content_length} bytes; at most {limit} are taken")
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise ImageRejected(413, f"the image is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _kind(request: web.Request) -> str:
    kind = request.match_info["kind"]
    if kind not in IMAGE_KINDS:
        raise web.HTTPNotFound(text=json.dumps({"error": "not found", "details": {"path": request.path}}),
                               content_type="application/json")
    return kind


def _branding(org: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    settings = json.loads(org["settings"] or "{}")
    branding = settings.get("branding") if isinstance(settings.get("branding"), dict) else {}
    return settings, dict(branding)


def _replace_image(db: Any, store: Any, org_id: str, kind: str, info: ImageInfo | None, data: bytes) -> None:
    """Store the new image (if any), point the settings at it, then delete the old file (blocking)."""
    org = db.org(org_id)
    settings, branding = _branding(org)
    old = stored_image(branding, kind)
    if info is not None:
        store.write(image_key(org_id, kind, info.sha256), data)
        branding[kind] = info.meta()
    else:
        branding.pop(kind, None)
    db.update_org(org_id, settings=json.dumps({**settings, "branding": branding}))
    if old is not None and (info is None or old["sha256"] != info.sha256):
        store.delete(image_key(org_id, kind, old["sha256"]))


async def upload_image(request: web.Request) -> web.Response:
    kind = _kind(request)
    org = await find_org(request)
    try:
        data = await read_limited(request, MAX_IMAGE_BYTES)
        if not data:
            return error(400, "invalid fields", {"body": "send the image as the request body"})
        info = await asyncio.to_thread(check_image, data, request.headers.get("Content-Type", ""))
    except ImageRejected as exc:
        return error(exc.status, "image refused", {"body": str(exc)})
    try:
        await asyncio.to_thread(_replace_image, request.app[DB], request.app[STORE], org["id"], kind, info, data)
    except StorageError as exc:
        return error(507, "cannot store the image", {"body": str(exc)})
    updated = await asyncio.to_thread(request.app[DB].org, org["id"])
    assert updated is not None
    return web.json_response(org_view(request, updated))


async def delete_image(request: web.Request) -> web.Response:
    kind = _kind(request)
    org = await find_org(request)
    await asyncio.to_thread(_replace_image, request.app[DB], request.app[STORE], org["id"], kind, None, b"")
    updated = await asyncio.to_thread(request.app[DB].org, org["id"])
    assert updated is not None
    return web.json_response(org_view(request, updated))


async def serve_image(request: web.Request) -> web.StreamResponse:
    """The current image. Addressed with its hash (?v=, as the pages link it) it is immutable; otherwise it is
    revalidated by ETag, so a new upload shows at once either way."""
    kind = request.match_info["kind"]
    org = await asyncio.to_thread(request.app[DB].org, request.match_info["org"]) if kind in IMAGE_KINDS else None
    meta = stored_image(_branding(org)[1], kind) if org is not None else None
    if org is None or meta is None:
        raise web.HTTPNotFound(text="No such image.\n")
    etag = f'"{meta["sha256"][:32]}"'
    version = request.query.get("v")
    headers = {"ETag": etag, "X-Content-Type-Options": "nosniff",
               "Cache-Control": "public, max-age=31536000, immutable" if version == meta["sha256"][:16]
               else "public, no-cache"}
    if etag in {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}:
        return web.Response(status=304, headers=headers)
    try:
        data = await asyncio.to_thread(request.app[STORE].read, image_key(org["id"], kind, meta["sha256"]))
    except OSError:
        raise web.HTTPNotFound(text="No such image.\n") from None
    return web.Response(body=data, content_type=meta["content_type"], headers=headers)


def add_routes(app: web.Application) -> None:
    app.router.add_put("/api/orgs/{org}/branding/{kind}", upload_image)
    app.router.add_delete("/api/orgs/{org}/branding/{kind}", delete_image)
    app.router.add_get("/brand/{org}/{kind}", serve_image)
