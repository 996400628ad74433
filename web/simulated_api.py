"""Simulated live API: schedule a stream's recording to re-air as a live service (mediaserver/simulated_live.py).

POST /api/streams/{id}/simulated-live {"recording_id", "air_at"} schedules it; DELETE cancels one not yet on air.
"""
from __future__ import annotations

import asyncio

from aiohttp import web

from mediaserver.simulated_live import ReairRefused, SimulatedLive
from web.api import find_stream, parse_time, read_json, respond_stream
from web.auth import error
from web.keys import DB, MANAGER

SIMULATED = web.AppKey("simulated_live", SimulatedLive)


async def schedule_reair(request: web.Request) -> web.Response:
    row = await find_stream(request)
    body = await read_json(request, "SimulatedLive")
    try:
        air_at = parse_time(body["air_at"])
    except ValueError as exc:
        return error(400, "invalid fields", {"air_at": str(exc)})
    if row["status"] == "CANCELLED":
        return error(409, "cannot re-air on a CANCELLED stream", {"status": row["status"]})
    try:
        await request.app[SIMULATED].schedule(row["id"], body["recording_id"], air_at)
    except ReairRefused as exc:
        status = 404 if "not found" in str(exc) else 409
        return error(status, str(exc), {"recording_id": body["recording_id"]})
    if row["status"] in ("ENDED", "FAILED"):  # a past service airs again: it is upcoming until the air time
        await asyncio.to_thread(request.app[DB].transition, row["id"], ("ENDED", "FAILED"), "SCHEDULED")
    return await respond_stream(request, row["id"])


async def cancel_reair(request: web.Request) -> web.Response:
    row = await find_stream(request)
    if not await request.app[SIMULATED].cancel(row["id"]):
        return error(409, "no re-air is waiting on this stream", None)
    return await respond_stream(request, row["id"])


def add_routes(app: web.Application) -> None:
    app[SIMULATED] = SimulatedLive(app[MANAGER])

    async def close(app: web.Application) -> None:
        await app[SIMULATED].close()

    app.on_shutdown.append(close)
    app.router.add_post("/api/streams/{stream_id}/simulated-live", schedule_reair)
    app.router.add_delete("/api/streams/{stream_id}/simulated-live", cancel_reair)
