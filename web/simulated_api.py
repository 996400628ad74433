"""Simulated live API: schedule a stream's recording to re-air as a live service (mediaserver/simulated_live.py).

POST /api/streams/{id}/simulated-live {"recording_id", "air_at"} schedules it (a READY recording of any stream of
the same organization); DELETE cancels one not yet on air. PATCH /api/streams/{id} with simulated_recording_id +
scheduled_start, or a series template's simulated_recording_id, sets one too (stored on the row; see sync).
A recording of another organization, or deleted, is 404; one not READY or whose media is missing on disk, 409.
"""
from __future__ import annotations

from aiohttp import web

from mediaserver.simulated_live import ReairRefused, SimulatedLive
from web.api import find_stream, parse_time, read_json, respond_stream
from web.auth import error
from web.keys import MANAGER

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
    return await respond_stream(request, row["id"])


async def cancel_reair(request: web.Request) -> web.Response:
    row = await find_stream(request)
    if not await request.app[SIMULATED].cancel(row["id"]):
        return error(409, "no re-air is waiting on this stream", None)
    return await respond_stream(request, row["id"])


def add_routes(app: web.Application) -> None:
    app[SIMULATED] = SimulatedLive(app[MANAGER])

    async def start(app: web.Application) -> None:
        await app[SIMULATED].start()

    async def close(app: web.Application) -> None:
        await app[SIMULATED].close()

    app.on_startup.append(start)
    app.on_shutdown.append(close)
    app.router.add_post("/api/streams/{stream_id}/simulated-live", schedule_reair)
    app.router.add_delete("/api/streams/{stream_id}/simulated-live", cancel_reair)
