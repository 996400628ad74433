"""Webhook subscriptions under /api/webhooks and their delivery logs."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from mediaserver.db import DEFAULT_ORG
from mediaserver.webhooks import WebhookError, WebhookStore
from web.api import read_json
from web.auth import SCOPE, error

WEBHOOKS = web.AppKey("webhook_store", WebhookStore)


def org_of(request: web.Request) -> str:
    return request[SCOPE] or DEFAULT_ORG


async def create(request: web.Request) -> web.Response:
    body = await read_json(request, "WebhookCreate")
    try:
        # In a thread: besides checking the fields, subscribe resolves the URL's host to refuse non-public ones.
        row = await asyncio.to_thread(request.app[WEBHOOKS].subscribe, org_of(request), body["url"], body["secret"], body["events"])
    except WebhookError as exc:
        field = str(exc).split(":", 1)[0].strip()
        return error(400, "invalid fields", {field if field in ("url", "secret", "events") else "body": str(exc)})
    return web.json_response(row, status=201)


async def listing(request: web.Request) -> web.Response:
    rows = await asyncio.to_thread(request.app[WEBHOOKS].subscriptions, org_of(request))
    return web.json_response({"webhooks": rows})


async def find(request: web.Request) -> dict[str, Any]:
    row = await asyncio.to_thread(request.app[WEBHOOKS].subscription, org_of(request), request.match_info["webhook_id"])
    if row is None:
        raise web.HTTPNotFound(text=json.dumps({"error": "webhook not found", "details": None}), content_type="application/json")
    return row


async def get(request: web.Request) -> web.Response:
    return web.json_response(await find(request))


async def delete(request: web.Request) -> web.Response:
    await find(request)
    await asyncio.to_thread(request.app[WEBHOOKS].delete, org_of(request), request.match_info["webhook_id"])
    return web.Response(status=204)


async def deliveries(request: web.Request) -> web.Response:
    await find(request)
    rows = await asyncio.to_thread(request.app[WEBHOOKS].deliveries, org_of(request), request.match_info["webhook_id"])
    return web.json_response({"deliveries": rows})


async def send_test(request: web.Request) -> web.Response:
    """Queues a signed webhook.test to this one subscription; the sender delivers it within its poll interval."""
    await find(request)
    delivery_id = await asyncio.to_thread(request.app[WEBHOOKS].enqueue_test, org_of(request),
                                          request.match_info["webhook_id"])
    if delivery_id is None:  # deleted meanwhile
        return error(404, "webhook not found")
    return web.json_response({"delivery_id": delivery_id, "status": "PENDING"}, status=202)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/webhooks", create)
    app.router.add_get("/api/webhooks", listing)
    app.router.add_get("/api/webhooks/{webhook_id}", get)
    app.router.add_delete("/api/webhooks/{webhook_id}", delete)
    app.router.add_get("/api/webhooks/{webhook_id}/deliveries", deliveries)
    app.router.add_post("/api/webhooks/{webhook_id}/test", send_test)
