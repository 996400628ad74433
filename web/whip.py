"""WHIP routes (RFC 9725): POST /whip/{stream_id} with the stream key as Bearer and an SDP offer; DELETE on
the returned Location ends the broadcast; PATCH (trickle ICE, ICE restart) is refused with 405.

Statuses: 201 answer; 400 offer we can't answer; 401 missing or wrong key (WWW-Authenticate: Bearer);
403 stream disabled or cancelled; 409 the stream already has an encoder; 415 not application/sdp;
503 whip.max_sessions reached. No CORS: the Go-live page is same-origin.
"""
from __future__ import annotations

import asyncio
import hmac
import logging

from aiohttp import web

from ingest.media import PublishRefused, StreamBusy, UnknownKey
from ingest.whip import OfferError, TooManySessions, WhipLimits, WhipSession, WhipSessions, check_offer
from web.auth import THROTTLE
from web.guard import bearer_token, client_address
from web.keys import CONFIG, DB, MANAGER

log = logging.getLogger(__name__)

WHIP = web.AppKey("whip_sessions", WhipSessions)
# A session whose media stopped this long ago is presumed dead (a phone lost its network: aiortc notices
# only after ~30 s) and a new publish with the same key replaces it instead of getting 409.
STALE_AFTER = 3.0


def _plain(status: int, message: str, **headers: str) -> web.Response:
    return web.Response(status=status, text=message + "\n", headers=headers)


def _unauthorized(message: str) -> web.Response:
    return _plain(401, message, **{"WWW-Authenticate": 'Bearer realm="whip"'})


def _refused(exc: PublishRefused) -> web.Response:
    if isinstance(exc, UnknownKey):
        return _unauthorized(str(exc))
    if isinstance(exc, StreamBusy):
        return _plain(409, str(exc))
    return _plain(403, str(exc))


async def _bad_key(request: web.Request, stream_id: str, reason: str) -> web.Response:
    """Wrong keys count against the address, as the API's bad tokens do."""
    throttle, address = request.app[THROTTLE], client_address(request)
    if throttle.blocked(address):
        return _plain(429, "too many bad keys from this address; try again later")
    delay = throttle.failed(address)
    if delay:
        await asyncio.sleep(delay)
    log.warning("WHIP publish to %s from %s refused: %s", stream_id, address, reason)
    return _unauthorized(reason)


async def publish(request: web.Request) -> web.Response:
    stream_id = request.match_info["stream_id"]
    peer = client_address(request)
    key = bearer_token(request)
    if not key:
        return _unauthorized("send the stream key as Authorization: Bearer <key>")
    if request.content_type != "application/sdp":
        return _plain(415, f"send the SDP offer as application/sdp, not {request.content_type}")
    offer = await request.text()
    try:
        check_offer(offer)
    except OfferError as exc:
        log.warning("WHIP publish to %s from %s: bad offer: %s", stream_id, peer, exc)
        return _plain(400, str(exc))
    stream = await asyncio.to_thread(request.app[DB].stream_by_key, key)
    if stream is None or stream["id"] != stream_id:
        return await _bad_key(request, stream_id, "unknown stream key for this stream")
    sessions = request.app[WHIP]
    for other in list(sessions.sessions.values()):
        if other.stream_id == stream_id and other.idle_for() > STALE_AFTER:
            await other.close(f"replaced by a new WHIP publish from {peer}")
    try:
        session = sessions.open(stream_id, key, peer)
    except TooManySessions as exc:
        log.warning("WHIP publish to %s from %s refused: %s", stream_id, peer, exc)
        return _plain(503, str(exc), **{"Retry-After": "10"})
    try:
        answer = await session.negotiate(offer)
        publisher = await request.app[MANAGER].authorize_publish(key, peer, "whip")
    except OfferError as exc:
        await session.close(str(exc))
        log.warning("WHIP publish to %s from %s: %s", stream_id, peer, exc)
        return _plain(400, str(exc))
    except PublishRefused as exc:
        await session.close(str(exc))
        log.warning("WHIP publish to %s from %s refused: %s", stream_id, peer, exc)
        return _refused(exc)
    except BaseException:
        await session.close("the publish failed")
        raise
    session.start(publisher)
    log.info("stream %s: WHIP publish from %s (session %s)", stream_id, peer, session.id)
    location = f"/whip/{stream_id}/{session.id}"
    return web.Response(status=201, text=answer, content_type="application/sdp",
                        headers={"Location": location, "Cache-Control": "no-store"})


def _session(request: web.Request) -> WhipSession | web.Response:
    session = request.app[WHIP].sessions.get(request.match_info["session_id"])
    if session is None or session.stream_id != request.match_info["stream_id"]:
        return _plain(404, "no such WHIP session (it has ended)")
    key = bearer_token(request)
    if not key or not hmac.compare_digest(key.encode(), session.key.encode()):
        return _unauthorized("send the stream key as Authorization: Bearer <key>")
    return session


async def stop(request: web.Request) -> web.Response:
    """The publisher pressed Stop: the connection closes and the broadcast ends now (no reconnect window)."""
    session = _session(request)
    if isinstance(session, web.Response):
        return session
    await session.close("stopped by the publisher")
    await request.app[MANAGER].end(session.stream_id, "ended from the browser")
    log.info("stream %s: WHIP session %s deleted by %s", session.stream_id, session.id, client_address(request))
    return _plain(200, "broadcast ended")


async def patch(request: web.Request) -> web.Response:
    session = _session(request)
    if isinstance(session, web.Response):
        return session
    log.info("stream %s: WHIP PATCH refused (no trickle ICE)", session.stream_id)
    return _plain(405, "trickle ICE and ICE restarts are not supported: the answer carries every candidate; "
                       "to reconnect, DELETE this session (or let it drop) and POST a new offer", Allow="DELETE")


def add_routes(app: web.Application) -> None:
    whip = app[CONFIG].whip
    if not whip.enabled:
        return
    app[WHIP] = WhipSessions(whip.max_sessions, WhipLimits(keyframe_interval=whip.keyframe_interval,
                                                           stun_server=whip.stun_server))

    async def close_sessions(app: web.Application) -> None:
        await app[WHIP].close_all()

    app.on_shutdown.append(close_sessions)
    app.router.add_post("/whip/{stream_id}", publish)
    app.router.add_delete("/whip/{stream_id}/{session_id}", stop)
    app.router.add_patch("/whip/{stream_id}/{session_id}", patch)
