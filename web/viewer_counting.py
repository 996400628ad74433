"""Counts HLS viewers as web/media.py serves them: each playlist, segment or part that passed the access
check is handed to the HlsViewerTracker (mediaserver/hls_viewers.py). On the hot path: no thread hop and
no database write per request, and a browser's signed viewer cookie is checked once, then remembered."""
from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web

from mediaserver.access import VIEWER_COOKIE, Caller, Role
from mediaserver.hls_viewers import HlsViewerTracker, viewer_key
from web.guard import ACCESS, client_address

HLS_VIEWERS = web.AppKey("hls_viewers", HlsViewerTracker)
# Set by web/media.py's access check: who was let in (the stream id is in the path).
WATCHER: web.RequestKey[Caller] = web.RequestKey("hls_watcher", Caller)


class ViewerIds:
    """Signed viewer cookie -> viewer id (None: forged or expired), remembered for up to `size` cookies so a
    segment request costs a dict lookup, not a signature check."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._known: dict[str, str | None] = {}

    def get(self, cookie: str, check: Callable[[str], str | None]) -> str | None:
        if cookie in self._known:
            return self._known[cookie]
        if len(self._known) >= self.size:
            self._known.clear()  # a flood of made-up cookies costs a re-check of the real ones, nothing more
        viewer_id = self._known[cookie] = check(cookie)
        return viewer_id


VIEWER_IDS = web.AppKey("viewer_ids", ViewerIds)


def note(request: web.Request, caller: Caller, response: web.StreamResponse) -> None:
    tracker = request.app.get(HLS_VIEWERS)
    if tracker is None or caller.staff or response.status >= 400:
        return  # the church's staff (console preview) are not viewers
    member = f"member:{caller.org_id}:{caller.name or 'Member'}" if caller.role is Role.MEMBER else None
    viewer_id = None
    cookie = request.cookies.get(VIEWER_COOKIE)
    if member is None and cookie:
        viewer_id = request.app[VIEWER_IDS].get(cookie, request.app[ACCESS].viewer_id)
    user_agent = request.headers.get("User-Agent", "")
    key = viewer_key(viewer_id=viewer_id, member=member, address=client_address(request), user_agent=user_agent,
                     token=caller.playback_token)
    body = getattr(response, "body", None)
    nbytes = len(body) if isinstance(body, (bytes, bytearray)) else (response.content_length or 0)
    tracker.seen(request.match_info["stream_id"], key, user_agent, nbytes)


def counted(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
            ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """The handler, with its answers counted for the viewer the access check let in."""
    async def counting(request: web.Request) -> web.StreamResponse:
        response = await handler(request)
        caller = request.get(WATCHER)
        if caller is not None:
            note(request, caller, response)
        return response
    return counting


def install(app: web.Application, tracker: HlsViewerTracker) -> None:
    app[HLS_VIEWERS] = tracker
    app[VIEWER_IDS] = ViewerIds()
