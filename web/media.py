"""Serves HLS: live or recorded playlists under a stream's playback URL, and segments from the store.

Playlists are short-cached, segments immutable; CORS is open so any player or CDN can fetch them.
"""
from __future__ import annotations

import asyncio
import re

from aiohttp import web

from typing import Any
from urllib.parse import quote

from mediaserver.access import Caller
from storage.store import InvalidKeyError
from web.guard import ACCESS, stream_row, watch_access
from web.keys import CONFIG, DB, MANAGER, STORE
from web.viewer_counting import WATCHER, counted
from web.remote_media import remote_redirect

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SEGMENT_RE = re.compile(r"^seg-(\d{1,12})\.m4s$")
PART_RE = re.compile(r"^part-(\d{1,12})\.(\d{1,4})\.m4s$")  # LL-HLS part: part-SEQUENCE.INDEX.m4s
INIT_RE = re.compile(r"^init-\d{1,6}(-\d{1,3})?\.mp4$")  # init-PERIOD[-REOPEN].mp4

LIVE_PLAYLIST_CACHE = "public, max-age=1"
VOD_PLAYLIST_CACHE = "public, max-age=60"
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"
# A blocking reload's answer (_HLS_msn/_HLS_part) has a URL unique to one moment of the playlist, and every
# later answer to it would hold at least what was asked for: a CDN may keep it for a while (Apple's LL-HLS
# CDN guidance), so the crowd asking for the same next part costs the origin one request.
BLOCKING_RELOAD_TARGETS = 6


def blocking_playlist_cache(target_duration: float) -> str:
    return f"public, max-age={max(1, round(BLOCKING_RELOAD_TARGETS * target_duration))}"


def for_whom(cache: str, shared: bool) -> str:
    """A CDN may keep one copy for everyone only of what anyone may fetch: media of a private or
    members-only stream, of a held preview, or any answer carrying a viewer's token stays per browser
    (a proxy keys on the URL, not on the cookie or Authorization header that opened it)."""
    return cache if shared else cache.replace("public", "private")


def cors(response: web.StreamResponse) -> web.StreamResponse:
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Expose-Headers"] = "Content-Length, Content-Range"
    return response


def playlist_response(text: str, cache: str, token: str | None = None, shared: bool = True) -> web.Response:
    response = web.Response(text=text, content_type=PLAYLIST_TYPE, charset=None)
    # A playlist carrying a viewer's token must not be shared by a CDN.
    response.headers["Cache-Control"] = for_whom(cache, shared and not token)
    cors(response)
    return response


def not_found(what: str) -> web.Response:
    response = web.Response(status=404, text=f"{what} not found\n")
    response.headers["Cache-Control"] = "no-cache"
    cors(response)
    return response


def denied(status: int, message: str) -> web.Response:
    response = web.Response(status=status, text=message + "\n")
    response.headers["Cache-Control"] = "no-store"
    cors(response)
    return response


async def access(request: web.Request, stream_id: str) -> tuple[dict[str, Any], Caller] | web.Response:
    """The stream and its caller, or the refusal to send (the one policy in mediaserver/access.py decides)."""
    stream = await stream_row(request, stream_id)
    if stream is None:
        return not_found("stream")
    caller, decision = await watch_access(request, stream)
    if not decision.allowed:
        return denied(decision.status, decision.reason)
    request[WATCHER] = caller  # viewer analytics count what is then served (web/viewer_counting.py)
    return stream, caller


URI_ATTRIBUTE = re.compile(r'URI="([^"]*)"')


def with_token(text: str, token: str | None) -> str:
    """Carry the viewer's token on every URI a playlist points at (segments, maps, parts, preload hints,
    rendition reports), so everything it leads to is checked too."""
    if not token:
        return text
    # Tokens are checked to be canonical base64url before they get here; quoting anyway means no byte a
    # client sent can ever start a playlist line or end a quoted attribute.
    quoted = quote(token, safe="")

    def tokened(uri: str) -> str:
        return f"{uri}{'&' if '?' in uri else '?'}token={quoted}"

    out = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            line = tokened(line)
        elif 'URI="' in line:
            line = URI_ATTRIBUTE.sub(lambda m: f'URI="{tokened(m.group(1))}"', line)
        out.append(line)
    return "\n".join(out) + "\n"


async def _latest_recording_prefix(request: web.Request, stream_id: str) -> tuple[str, str] | None:
    """(broadcast id, key prefix) of the stream's latest recording."""
    recording = await asyncio.to_thread(request.app[DB].latest_recording, stream_id)
    if recording is None:
        return None
    prefix = recording["playlist_key"].rsplit("/", 1)[0]
    return recording["broadcast_id"], prefix


def _prefixed(text: str, prefix: str) -> str:
    """Rewrite the URIs of a stored VOD playlist so they resolve from the stream's top folder."""
    out = []
    for line in text.splitlines():
        if line and not line.startswith("#"):
            line = prefix + line
        elif line.startswith('#EXT-X-MAP:URI="'):
            line = '#EXT-X-MAP:URI="' + prefix + line[len('#EXT-X-MAP:URI="'):]
        out.append(line)
    return "\n".join(out) + "\n"


async def master_playlist(request: web.Request) -> web.Response:
    stream_id = request.match_info["stream_id"]
    if not NAME_RE.match(stream_id):
        return not_found("stream")
    granted = await access(request, stream_id)
    if isinstance(granted, web.Response):
        return granted
    token = granted[1].playback_token
    shared = request.app[ACCESS].listed(granted[0])
    live = request.app[MANAGER].live_master(stream_id)
    if live is not None:
        return playlist_response(with_token(live, token), LIVE_PLAYLIST_CACHE, token, shared)
    return await _recorded_playlist(request, stream_id, "master.m3u8", token, shared)


async def media_playlist(request: web.Request) -> web.Response:
    stream_id = request.match_info["stream_id"]
    rendition = request.match_info["rendition"]
    if not NAME_RE.match(stream_id) or not NAME_RE.match(rendition):
        return not_found("playlist")
    granted = await access(request, stream_id)
    if isinstance(granted, web.Response):
        return granted
    token = granted[1].playback_token
    shared = request.app[ACCESS].listed(granted[0])
    held = await _hold_for_reload(request, stream_id, rendition)
    if isinstance(held, web.Response):
        return held
    skip = request.query.get("_HLS_skip") in ("YES", "v2")
    live = request.app[MANAGER].live_media(stream_id, rendition, skip=skip)
    if live is not None:
        cache = LIVE_PLAYLIST_CACHE if held is None else blocking_playlist_cache(held)
        return playlist_response(with_token(live, token), cache, token, shared)
    return await _recorded_playlist(request, stream_id, f"{rendition}.m3u8", token, shared)


def _query_number(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None:
        return None
    if not value.isdigit() or len(value) > 12:
        raise ValueError(f"{name} must be a non-negative integer")
    return int(value)


async def _hold_for_reload(request: web.Request, stream_id: str, rendition: str) -> web.Response | float | None:
    """Blocking playlist reload (RFC 8216bis 6.2.5.2): hold the request until the playlist has segment
    _HLS_msn (part _HLS_part), at most three target durations. None: answer now, a plain reload; the
    target duration: answer now, a blocking reload that was satisfied; else the refusal."""
    try:
        sequence = _query_number(request, "_HLS_msn")
        index = _query_number(request, "_HLS_part")
    except ValueError as exc:
        return denied(400, str(exc))
    if sequence is None:
        if index is not None:
            return denied(400, "_HLS_part needs _HLS_msn")
        return None
    target = request.app[MANAGER].blocking_target(stream_id, rendition)
    if target is None:
        return None  # no LL-HLS here (or ended): the playlist as it is
    edge, last_complete, longest_wait = target
    if sequence > last_complete + 2:
        return denied(400, f"_HLS_msn {sequence} is too far ahead of the playlist (last segment {last_complete})")
    if not await edge.wait_for(rendition, sequence, index, longest_wait) and not edge.ended:
        return denied(503, "the requested segment or part did not arrive in time")
    return None if edge.ended else longest_wait / 3


async def _recorded_playlist(request: web.Request, stream_id: str, name: str, token: str | None,
                             shared: bool) -> web.Response:
    found = await _latest_recording_prefix(request, stream_id)
    if found is None:
        return not_found("stream is offline; playlist")
    broadcast_id, prefix = found
    try:
        text = await asyncio.to_thread(request.app[STORE].read, f"{prefix}/{name}")
    except (FileNotFoundError, InvalidKeyError):
        return not_found("playlist")
    return playlist_response(with_token(_prefixed(text.decode(), f"{broadcast_id}/"), token), VOD_PLAYLIST_CACHE, token,
                             shared)


RECORDING_PICTURES = {"poster.jpg": "image/jpeg", "sprite.jpg": "image/jpeg", "storyboard.vtt": "text/vtt"}


async def broadcast_file(request: web.Request) -> web.StreamResponse:
    """Anything inside one broadcast's folder: VOD playlists, init and media segments, the MP4."""
    stream_id = request.match_info["stream_id"]
    broadcast_id = request.match_info["broadcast_id"]
    tail = request.match_info["tail"]
    parts = tail.split("/")
    if not NAME_RE.match(stream_id) or not NAME_RE.match(broadcast_id):
        return not_found("file")
    granted = await access(request, stream_id)
    if isinstance(granted, web.Response):
        return granted
    stream, caller = granted
    token = caller.playback_token
    # A broadcast held as a preview (auto_publish off) is hidden, playlists and segments alike, until go-live.
    previewing = request.app[MANAGER].previewing(stream_id, broadcast_id)
    if previewing and not request.app[ACCESS].may_see_preview(caller, stream):
        return not_found("file")
    shared = request.app[ACCESS].listed(stream) and not previewing and not token
    content_type: str
    cache = IMMUTABLE_CACHE
    if len(parts) == 1 and parts[0].endswith(".m3u8") and NAME_RE.match(parts[0][:-5]):
        content_type, cache = PLAYLIST_TYPE, VOD_PLAYLIST_CACHE
    elif len(parts) == 1 and parts[0] == "recording.mp4":
        content_type = "video/mp4"
    elif len(parts) == 1 and parts[0].startswith("clip_") and parts[0].endswith(".mp4") and NAME_RE.match(parts[0][:-4]):
        content_type = "video/mp4"  # a clip's exact-frame cut (mediaserver/clips.py)
    elif len(parts) == 1 and parts[0] in RECORDING_PICTURES:  # packager/thumbnails.py
        content_type = RECORDING_PICTURES[parts[0]]
    elif len(parts) == 2 and NAME_RE.match(parts[0]) and INIT_RE.match(parts[1]):
        content_type = "video/mp4"
    elif len(parts) == 2 and NAME_RE.match(parts[0]) and (m := SEGMENT_RE.match(parts[1])):
        content_type = "video/iso.segment"
        first = request.app[MANAGER].live_window_start(stream_id, broadcast_id, parts[0])
        if first is not None and int(m.group(1)) < first:
            return not_found("segment outside the live window;")
    elif len(parts) == 2 and NAME_RE.match(parts[0]) and (m := PART_RE.match(parts[1])):
        return await _live_part(request, stream_id, broadcast_id, parts[0], int(m.group(1)), int(m.group(2)), shared)
    else:
        return not_found("file")
    cache = for_whom(cache, shared)
    if len(parts) == 2:
        # The live edge from memory: every viewer asks for the same few files.
        data = request.app[MANAGER].live_file(stream_id, broadcast_id, parts[0], parts[1])
        if data is not None and "Range" not in request.headers:
            return cors(web.Response(body=data, headers={"Content-Type": content_type, "Cache-Control": cache}))
    # A re-air (mediaserver/simulated_live.py) may serve another stream's recording under this stream's URLs.
    live = request.app[MANAGER].broadcasts.get(stream_id)
    key = f"{live.key_prefix}/{tail}" if live is not None and live.id == broadcast_id else f"media/{stream_id}/{broadcast_id}/{tail}"
    try:
        path = request.app[STORE].local_path(key)
    except InvalidKeyError:
        return not_found("file")
    if path is None:
        return not_found("file")
    if len(parts) == 2 and "Range" not in request.headers:
        # A DVR segment or init (~0.5 MB) in one thread hop: under uvloop FileResponse has no sendfile and
        # would stat, open, read 256 KB at a time and close, each in the executor.
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            moved = await remote_redirect(request.app[STORE], key, request.app[CONFIG].storage.s3_url_seconds)
            return moved if moved is not None else not_found("file")  # in S3 (storage.backend "s3")?
        return cors(web.Response(body=data, headers={"Content-Type": content_type, "Cache-Control": cache}))
    if not await asyncio.to_thread(path.is_file):
        if content_type == PLAYLIST_TYPE:  # a recording's playlist moved to S3 is read here: the token goes on
            try:
                text = (await asyncio.to_thread(request.app[STORE].read, key)).decode()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return not_found("file")
            return playlist_response(with_token(text, token), cache, token, shared)
        download = f"{stream_id}-{broadcast_id}.mp4" if parts[0].endswith(".mp4") and "download" in request.query else None
        moved = await remote_redirect(request.app[STORE], key, request.app[CONFIG].storage.s3_url_seconds,
                                      download_name=download)
        return moved if moved is not None else not_found("file")
    if content_type == PLAYLIST_TYPE:
        text = await asyncio.to_thread(path.read_text)
        return playlist_response(with_token(text, token), cache, token, shared)
    response = web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": cache})
    if len(parts) == 1 and parts[0].endswith(".mp4") and "download" in request.query:
        response.headers["Content-Disposition"] = f'attachment; filename="{stream_id}-{broadcast_id}.mp4"'
    cors(response)
    return response


async def _live_part(request: web.Request, stream_id: str, broadcast_id: str, rendition: str, sequence: int,
                     index: int, shared: bool) -> web.StreamResponse:
    """An LL-HLS part, from memory. The part a preload hint announced may be asked for before it exists:
    the request is held until the part is complete and then sent whole. RFC 8216bis 6.2.6: no byte of a
    part goes out before all of it can go at the full speed of the link, so players measure bandwidth right."""
    edge = request.app[MANAGER].live_edge(stream_id, broadcast_id)
    if edge is None or rendition not in edge.renditions:
        return not_found("part")
    held = edge.renditions[rendition]
    part = held.part(sequence, index)
    if part is None:
        # Only a part just ahead of the newest (the hinted one, give or take a segment end) is waited for.
        newest = held.newest_part() or (held.last_complete, -1)
        ahead = newest < (sequence, index) and sequence <= max(newest[0], held.last_complete) + 1 and index < 64
        if not ahead or edge.ended:
            return not_found("part")
        # Held until it exists, or is passed over (a segment that ended before this part: 404).
        await edge.wait_until(rendition, lambda: held.part(sequence, index) is not None or held.last_complete >= sequence
                              or (held.newest_part() or (-1, -1)) > (sequence, index),
                              3 * request.app[CONFIG].hls.segment_duration)
        part = held.part(sequence, index)
        if part is None:
            return not_found("part")
    cache = for_whom(IMMUTABLE_CACHE, shared)
    return cors(web.Response(body=part.data, headers={"Content-Type": "video/iso.segment", "Cache-Control": cache}))


async def options(request: web.Request) -> web.Response:
    response = web.Response(status=204)
    response.headers["Access-Control-Allow-Methods"] = "GET, HEAD, OPTIONS"
    response.headers["Access-Control-Allow-Headers"] = "Range, Origin, Accept"
    response.headers["Access-Control-Max-Age"] = "86400"
    cors(response)
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/hls/{stream_id}/master.m3u8", counted(master_playlist))
    app.router.add_get("/hls/{stream_id}/{rendition}.m3u8", counted(media_playlist))
    app.router.add_get("/hls/{stream_id}/{broadcast_id}/{tail:.+}", counted(broadcast_file))
    app.router.add_route("OPTIONS", "/hls/{tail:.*}", options)
