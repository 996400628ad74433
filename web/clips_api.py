"""Clips under /api/streams/{id}/clips: make one from the live DVR window or a recording (start/end as seconds of
the broadcast or RFC 3339 wall-clock times), list, show and delete them. The media is served under /hls/... with
the stream's own access decision (web/media.py)."""
from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from mediaserver.clips import MAX_CLIP_SECONDS, ClipMaker, source_track, timeline_seconds
from packager.clip import ClipError, covering
from packager.playlist import RenditionTrack
from packager.recording import load_index
from web.api import find_stream, iso, parse_time, public_base, read_json
from web.auth import error
from web.keys import CONFIG, DB, MANAGER, STORE

CLIPS = web.AppKey("clip_maker", ClipMaker)


def clip_view(base: str, clip: dict[str, Any]) -> dict[str, Any]:
    prefix = f"{base}/hls/{clip['stream_id']}/{clip['broadcast_id']}/{clip['id']}"
    ready = clip["status"] == "READY"
    return {
        "id": clip["id"], "stream_id": clip["stream_id"], "broadcast_id": clip["broadcast_id"],
        "recording_id": clip["recording_id"], "title": clip["title"], "start": clip["start"], "end": clip["end"],
        "duration": round(clip["end"] - clip["start"], 6), "status": clip["status"], "error": clip["error"],
        "frames": clip["frames"], "mp4_size": clip["mp4_size"], "created_at": iso(clip["created_at"]),
        "playlist_url": f"{prefix}.m3u8" if ready else None,
        "mp4_url": f"{prefix}.mp4" if ready else None,
        "download_url": f"{prefix}.mp4?download=1" if ready else None,
    }


async def _source(request: web.Request, stream: dict[str, Any], recording_id: str | None
                  ) -> tuple[str, str | None, str, list[RenditionTrack]] | web.Response:
    """(broadcast id, recording id, key prefix, tracks) of what to clip: the recording asked for, else the live
    broadcast, else the latest recording."""
    db, store = request.app[DB], request.app[STORE]
    recording = None
    if recording_id is not None:
        recording = await asyncio.to_thread(db.recording, stream["id"], recording_id)
        if recording is None:
            return error(404, "recording not found", None)
    else:
        broadcast = request.app[MANAGER].live_broadcast(stream["id"])
        if broadcast is not None and broadcast.published_tracks():
            return broadcast.id, None, broadcast.key_prefix, broadcast.published_tracks()
        recording = await asyncio.to_thread(db.latest_recording, stream["id"])
        if recording is None:
            return error(409, "nothing to clip: the stream is not live and has no recording", None)
    prefix = f"media/{stream['id']}/{recording['broadcast_id']}"
    tracks = await asyncio.to_thread(load_index, store, prefix)
    return str(recording["broadcast_id"]), str(recording["id"]), prefix, tracks


def _seconds(value: Any, track: RenditionTrack, name: str, problems: dict[str, str]) -> float:
    if isinstance(value, str):
        try:
            return timeline_seconds(track, parse_time(value))
        except ValueError as exc:
            problems[name] = str(exc)
            return 0.0
    return float(value)


async def create_clip(request: web.Request) -> web.Response:
    stream = await find_stream(request)
    body = await read_json(request, "ClipCreate")
    source = await _source(request, stream, body.get("recording_id"))
    if isinstance(source, web.Response):
        return source
    broadcast_id, recording_id, prefix, tracks = source
    try:
        track = source_track(tracks)
    except ClipError as exc:
        return error(409, str(exc), None)
    problems: dict[str, str] = {}
    start = _seconds(body["start"], track, "start", problems)
    end = _seconds(body["end"], track, "end", problems)
    media_end = track.entries[-1].start + track.entries[-1].duration
    if not problems:
        if end <= start:
            problems["end"] = f"{end:.3f} s is not after start {start:.3f} s"
        elif end - start > MAX_CLIP_SECONDS:
            problems["end"] = f"a clip is at most {MAX_CLIP_SECONDS:.0f} s"
        elif start < track.entries[0].start:
            problems["start"] = f"{start:.3f} s is before the media, which starts at {track.entries[0].start:.3f} s"
        elif end > media_end + 1e-6:
            problems["end"] = f"{end:.3f} s is after the media, which ends at {media_end:.3f} s"
        else:
            try:
                covering(track.entries, start, end)
            except ClipError as exc:
                problems["start"] = str(exc)
    if problems:
        return error(400, "invalid clip", problems)
    maker = request.app[CLIPS]
    clip = maker.new(stream["id"], broadcast_id, recording_id, body["title"].strip(), start, end)
    await maker.submit(clip, prefix, tracks)
    return web.json_response(clip_view(public_base(request), clip), status=202)


async def list_clips(request: web.Request) -> web.Response:
    stream = await find_stream(request)
    clips = await asyncio.to_thread(request.app[CLIPS].records.list, stream["id"])
    base = public_base(request)
    return web.json_response({"clips": [clip_view(base, c) for c in clips]})


async def _find_clip(request: web.Request) -> dict[str, Any] | web.Response:
    stream = await find_stream(request)
    clip = await asyncio.to_thread(request.app[CLIPS].records.get, stream["id"], request.match_info["clip_id"])
    return clip if clip is not None else error(404, "clip not found", None)


async def get_clip(request: web.Request) -> web.Response:
    clip = await _find_clip(request)
    if isinstance(clip, web.Response):
        return clip
    return web.json_response(clip_view(public_base(request), clip))


async def delete_clip(request: web.Request) -> web.Response:
    clip = await _find_clip(request)
    if isinstance(clip, web.Response):
        return clip
    await asyncio.to_thread(request.app[CLIPS].records.delete, clip)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    async def start(app: web.Application) -> None:
        app[CLIPS] = ClipMaker(app[STORE], app[MANAGER].bus, app[CONFIG].hls.segment_duration)

    async def stop(app: web.Application) -> None:
        await app[CLIPS].stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/api/streams/{stream_id}/clips", create_clip)
    app.router.add_get("/api/streams/{stream_id}/clips", list_clips)
    app.router.add_get(r"/api/streams/{stream_id}/clips/{clip_id}", get_clip)
    app.router.add_delete(r"/api/streams/{stream_id}/clips/{clip_id}", delete_clip)
