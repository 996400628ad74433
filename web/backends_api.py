"""Streams on a cloud back-end (Mux, IVS): the platform side of create/delete/end/rotate-key for web/api.py, the
platform's ingest and playback in a stream's view, and the platform webhooks in (POST /hooks/mux).

A platform's stream key is sealed (mediaserver/secret_box.py) in the stream's backend_ref and shown in clear only
in the answers to create and rotate-key, as our own keys are.
"""
from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from dataclasses import asdict
from datetime import date
from typing import Any, Awaitable, Callable
from urllib.parse import quote

from aiohttp import web

from mediaserver.backends.base import (BackendError, Ingest, NotificationRejected, RemoteStream, StaleNotification,
                                       StreamSpec, Unsupported)
from mediaserver.backends.lifecycle import apply_events, end_stream
from mediaserver.backends.registry import BackendRegistry
from mediaserver.db import STREAM_COLUMNS, Database
from mediaserver.secret_box import SecretBox
from mediaserver.retention import plays_as_mp4
from web.auth import error
from web.keys import CONFIG, DB, MANAGER, SIGNER

log = logging.getLogger(__name__)

BACKENDS = web.AppKey("stream_backends", BackendRegistry)
BOX = web.AppKey("backend_secret_box", SecretBox)
PLAYBACK_TTL = 6 * 3600
BACKEND_CHANGED = "stream.backend_changed"  # internal (not a webhook out): the stream's simulcast targets follow
MAX_NOTIFICATION = 256 * 1024


def install(app: web.Application, registry: BackendRegistry) -> None:
    app[BACKENDS] = registry
    app[BOX] = SecretBox.from_data_dir(app[CONFIG].data_path)
    app.router.add_post("/hooks/mux", hook_for("mux"))
    app.router.add_post("/hooks/ivs", hook_for("ivs"))  # EventBridge API destination


def hook_for(name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return await notification(request, name)
    return handler


def backend_name(row: dict[str, Any]) -> str:
    return str(row.get("backend") or "builtin")


def is_cloud(row: dict[str, Any]) -> bool:
    return backend_name(row) != "builtin"


def remote_of(row: dict[str, Any]) -> RemoteStream:
    data = json.loads(row["backend_ref"] or "{}")
    return RemoteStream(backend=data.get("backend", backend_name(row)), remote_id=data.get("remote_id", ""),
                        playback_id=data.get("playback_id"), extra=data.get("extra") or {})


def is_private(row: dict[str, Any]) -> bool:
    return (row.get("visibility") or "PUBLIC") != "PUBLIC" or bool(row.get("password_hash"))


def latency_of(fields: dict[str, Any], row: dict[str, Any] | None = None) -> str:
    if "latency" in fields:
        return str(fields["latency"])
    low = fields.get("low_latency", row["low_latency"] if row is not None else 1)
    return "low" if low else "standard"


def capability_problems(request: web.Request, backend: str, fields: dict[str, Any],
                        row: dict[str, Any] | None = None) -> dict[str, str]:
    """What the chosen back-end can't do of what was asked, by field (a 400's details). Sets defaults it must:
    a platform without a DVR window gets dvr_enabled false unless the caller asked for it explicitly."""
    try:
        caps = request.app[BACKENDS].get(backend).capabilities
    except Unsupported as exc:
        return {"backend": str(exc)}
    problems: dict[str, str] = {}
    reair = fields["simulated_recording_id"] if "simulated_recording_id" in fields else \
        (row or {}).get("simulated_recording_id")
    if backend != "builtin" and reair is not None:
        problems["backend" if "backend" in fields and "simulated_recording_id" not in fields
                 else "simulated_recording_id"] = (f"a re-air is played by this server's own engine; a {backend} "
                                                   "stream airs what the encoder sends to the platform")
    latency = latency_of(fields, row)
    if latency not in caps.latency_modes:
        problems["latency"] = (f"{backend} has no {latency} latency mode; it offers {' or '.join(caps.latency_modes)}"
                               + (" (Mux has no real-time mode)" if backend == "mux" else ""))
    if "latency" in fields and latency in ("low", "standard"):
        fields["low_latency"] = int(latency == "low")
    fields.pop("latency", None)
    if not caps.dvr_window:
        if fields.get("dvr_enabled"):
            problems["dvr_enabled"] = f"{backend} has no DVR window (viewers can't rewind a live stream there)"
        elif row is None or backend != backend_name(row):
            fields["dvr_enabled"] = 0
    return problems


def spec_for(request: web.Request, row: dict[str, Any]) -> StreamSpec:
    dvr = request.app[CONFIG].hls.dvr_window if row["dvr_enabled"] else 0.0
    return StreamSpec(stream_id=row["id"], title=row["title"], latency="low" if row["low_latency"] else "standard",
                      private=is_private(row), record=bool(row["recording_enabled"]), dvr_window=float(dvr))


async def create_remote(request: web.Request, row: dict[str, Any]) -> dict[str, Any]:
    """Make the platform's live stream for a stream row; stores it (key sealed) and returns the answer's extras
    (stream_key and the ingest URLs carrying it). BackendError/Unsupported pass up."""
    backend = request.app[BACKENDS].get(backend_name(row))
    remote, ingest = await backend.create(spec_for(request, row))
    keep_ingest(request, remote, ingest)
    await asyncio.to_thread(request.app[DB].update_stream, row["id"], backend_ref=json.dumps(asdict(remote)),
                            updated_at=time.time())
    return ingest_extras(ingest)


def keep_ingest(request: web.Request, remote: RemoteStream, ingest: Ingest) -> None:
    """Where the encoder sends, kept on the remote: URLs without the key, the key itself sealed."""
    remote.extra["ingest"] = {"rtmp_url": ingest.rtmp_url, "rtmps_url": ingest.rtmps_url,
                              "srt_url": ingest.srt_url.split("?", 1)[0] if ingest.srt_url else None}
    if ingest.stream_key:
        remote.extra["sealed_key"] = request.app[BOX].seal(ingest.stream_key)


def ingest_extras(ingest: Ingest) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    if ingest.stream_key:
        extras["stream_key"] = ingest.stream_key
    if ingest.srt_url:
        extras["srt_url"] = ingest.srt_url
    return extras


async def delete_remote(request: web.Request, row: dict[str, Any]) -> None:
    """Remove the platform's live stream of a stream (or series) row, unless something else still needs it: a
    cloud series' occurrences share one."""
    if not row.get("backend_ref"):
        return
    if await asyncio.to_thread(remote_in_use, request.app[DB], row):
        log.info("%s %s: its %s live stream stays, the series still uses it", "stream" if "status" in row else
                 "series", row["id"], backend_name(row))
        return
    await request.app[BACKENDS].get(backend_name(row)).delete(remote_of(row))


async def rotate_remote_key(request: web.Request, row: dict[str, Any]) -> dict[str, Any]:
    remote = remote_of(row)
    ingest = await request.app[BACKENDS].get(backend_name(row)).rotate_key(remote)
    keep_ingest(request, remote, ingest)
    await asyncio.to_thread(share_remote, request.app[DB], backend_name(row), remote)
    return ingest_extras(ingest)


# -- a cloud series: one platform live stream that all its occurrences share ----------------------------------
def series_stream_row(series_id: str, title: str, template: dict[str, Any]) -> dict[str, Any]:
    """What a series' occurrences will be, as a stream row, for the platform's live stream they share."""
    return {**{name: default for name, (_kind, default) in STREAM_COLUMNS.items()}, **template,
            "id": series_id, "title": title, "password_hash": None}


async def create_series_remote(request: web.Request, backend: str, series_id: str, title: str,
                               template: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The platform's live stream for a new cloud series: (its backend_ref, the answer's key extras)."""
    remote, ingest = await request.app[BACKENDS].get(backend).create(
        spec_for(request, series_stream_row(series_id, title, template)))
    keep_ingest(request, remote, ingest)
    return json.dumps(asdict(remote)), ingest_extras(ingest)


def share_remote(db: Database, backend: str, remote: RemoteStream) -> None:
    """A live stream's new state (its new key) on every row that uses it: a series and its occurrences."""
    ref, now = json.dumps(asdict(remote)), time.time()
    for row in db.streams_by_remote(backend, remote.remote_id):
        db.update_stream(row["id"], backend_ref=ref, updated_at=now)
    for series in db.series_by_remote(backend, remote.remote_id):
        db.update_series(series["id"], backend_ref=ref)


def remote_in_use(db: Database, row: dict[str, Any]) -> bool:
    """Does anything but this row still need its platform live stream: another occurrence to come or on air, or
    a series still scheduling occurrences on it? Blocking (SQLite)."""
    backend, remote_id = backend_name(row), remote_of(row).remote_id
    if any(other["id"] != row["id"] and other["status"] in ("SCHEDULED", "STARTING", "LIVE", "ENDING")
           for other in db.streams_by_remote(backend, remote_id)):
        return True
    today = date.today().isoformat()
    return any(series["id"] != row["id"] and (series["until_date"] is None or series["until_date"] > today)
               for series in db.series_by_remote(backend, remote_id))


def shares_remote(db: Database, row: dict[str, Any]) -> bool:
    """Is this stream an occurrence of a cloud series (its live stream at the platform shared)?"""
    return bool(row.get("series_id")) and bool(db.series_by_remote(backend_name(row), remote_of(row).remote_id))


async def follow_privacy(request: web.Request, row: dict[str, Any], fields: dict[str, Any]) -> None:
    """A cloud stream turned private (or public) by this update: the platform's playback ids follow first, so a
    public URL handed out before stops playing. Adds the new backend_ref to fields; Unsupported when the platform
    can't (the caller refuses the change)."""
    visibility = fields.get("visibility", row.get("visibility")) or "PUBLIC"
    has_password = bool(fields["password"]) if "password" in fields else bool(row.get("password_hash"))
    private = visibility != "PUBLIC" or has_password
    if not row.get("backend_ref") or private == is_private(row):
        return
    if await asyncio.to_thread(shares_remote, request.app[DB], row):
        raise Unsupported(f"this service shares its series' {backend_name(row)} live stream with the series' other "
                          "services, so it can't turn private or public alone: create the series with the "
                          "visibility wanted")
    backend = request.app[BACKENDS].get(backend_name(row))
    set_private = getattr(backend, "set_private", None)
    set_asset_private = getattr(backend, "set_asset_private", None)
    if set_private is None or set_asset_private is None:
        raise Unsupported(f"{backend.name} can't turn a stream {'private' if private else 'public'} after it is "
                          "made: create a new stream with the visibility wanted")
    remote = await set_private(remote_of(row), private)
    db = request.app[DB]
    for recording in await asyncio.to_thread(db.recordings_where, "stream_id = ? and remote_asset is not null",
                                             [row["id"]]):
        asset = await set_asset_private(json.loads(recording["remote_asset"]), private)
        await asyncio.to_thread(db.update_recording, recording["id"], remote_asset=json.dumps(asset))
    fields["backend_ref"] = json.dumps(asdict(remote))


async def end_remote(request: web.Request, row: dict[str, Any]) -> bool:
    """Tell the platform the broadcast is over and end ours now (its own notification then changes nothing)."""
    await request.app[BACKENDS].get(backend_name(row)).end(remote_of(row))
    published: list[tuple[str, str, dict[str, Any]]] = []
    ended = await asyncio.to_thread(end_stream, request.app[DB], row["id"], "ENDED", time.time(), None,
                                    lambda *event: published.append(event))
    for name, stream_id, data in published:
        request.app[MANAGER].bus_publish(name, stream_id, data)
    return ended


def playback(request: web.Request, row: dict[str, Any], ttl: int) -> str:
    return request.app[BACKENDS].get(backend_name(row)).playback_url(remote_of(row), private=is_private(row),
                                                                     ttl_seconds=ttl)


async def page_playback(request: web.Request, row: dict[str, Any]) -> str:
    """What a cloud stream's watch or embed page plays: the platform's live playback, or once the service
    ended its recording's asset, signed for private streams; "" when there is nothing to play yet."""
    if not row.get("backend_ref"):
        return ""
    remote = remote_of(row)
    try:
        backend = request.app[BACKENDS].get(backend_name(row))
        if row["status"] in ("ENDED", "FAILED"):
            recording = await asyncio.to_thread(request.app[DB].latest_recording, row["id"])
            if recording is not None and recording.get("remote_asset"):
                try:
                    return backend.recording_playback_url(remote, json.loads(recording["remote_asset"]),
                                                          private=is_private(row), ttl_seconds=PLAYBACK_TTL)
                except (BackendError, Unsupported):
                    if not recording.get("playlist_key"):
                        raise
                    # The platform can't play it (e.g. a private IVS recording): our own copy can
                    # (mediaserver/cloud_recordings.py), under our access rules; the page was allowed, so a
                    # private stream's viewer gets one of our short-lived playback tokens, as ours do.
                    return local_copy_url(request, row, recording)
        return backend.playback_url(remote, private=is_private(row), ttl_seconds=PLAYBACK_TTL)
    except (BackendError, Unsupported) as exc:
        log.warning("stream %s: no playback from %s: %s", row["id"], backend_name(row), exc)
        return ""


def local_copy_url(request: web.Request, row: dict[str, Any], recording: dict[str, Any]) -> str:
    """Where a watch page plays the local copy of a cloud recording (web/media.py serves it)."""
    name = "recording.mp4" if plays_as_mp4(recording) else "master.m3u8"
    url = f"/hls/{row['id']}/{recording['broadcast_id']}/{name}"
    if is_private(row):
        token, _expires = request.app[SIGNER].issue(row["id"], PLAYBACK_TTL)
        url += f"?token={quote(token, safe='')}"
    return url


def cloud_view(request: web.Request, row: dict[str, Any], view: dict[str, Any],
               recording: dict[str, Any] | None) -> None:
    """A cloud stream's view: the platform's ingest and playback in place of this server's."""
    view["backend"] = backend_name(row)
    view["renditions"], view["ingest"] = [], None
    if not row.get("backend_ref"):
        return
    remote = remote_of(row)
    try:
        backend = request.app[BACKENDS].get(backend_name(row))
    except Unsupported as exc:
        view["error"] = str(exc)
        return
    ingest = remote.extra.get("ingest") or {}
    view["rtmp_url"] = ingest.get("rtmp_url") or ingest.get("rtmps_url") or ""
    view["rtmps_url"] = ingest.get("rtmps_url")
    view["srt_url"] = ingest.get("srt_url")  # without the key; complete in the answers to create and rotate-key
    view["has_srt_passphrase"] = False
    try:  # private: signed with the platform's scheme (POST .../playback-tokens gives fresh ones)
        view["playback_url"] = backend.playback_url(remote, private=is_private(row), ttl_seconds=PLAYBACK_TTL)
    except (BackendError, Unsupported) as exc:
        view["error"] = str(exc)
    if recording is not None and recording.get("remote_asset"):
        asset = json.loads(recording["remote_asset"])
        copied = bool(recording.get("playlist_key")) and view.get("recording") is not None
        try:
            url = backend.recording_playback_url(remote, asset, private=is_private(row), ttl_seconds=PLAYBACK_TTL)
        except (BackendError, Unsupported) as exc:
            if not copied:
                url, recording = "", {**recording, "error": str(exc)}
            else:
                url = ""  # the platform can't play it: our copy's URLs (built as for ours) stay
        if copied:
            # The local copy (mediaserver/cloud_recordings.py): its MP4, pictures and chat replay as ours; the
            # platform plays the HLS where it can (its CDN).
            if url:
                view["recording"].update(playback_url=url, playback_type="hls")
            return
        view["recording"] = {"id": recording["id"], "status": recording["status"], "playback_url": url,
                             "playback_type": "hls", "mp4_url": None, "duration": recording["duration"],
                             "size": 0, "hls_size": 0, "error": recording["error"], "segments_deleted_at": None}


def platform_error(exc: Exception) -> web.Response:
    if isinstance(exc, Unsupported):
        return error(400, "the stream's back-end can't do that", {"backend": str(exc)})
    return error(502, "the video platform refused or failed", {"backend": str(exc)})


_documents: dict[tuple[str, ...], dict[str, Any]] = {}


def served_document(request: web.Request, document: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document as this server can honour it: `backend` lists only the back-ends configured here,
    `latency` only the modes one of them offers (others are refused with their reason, 400)."""
    registry = request.app[BACKENDS]
    names = tuple(registry.names())
    if names not in _documents:
        served = copy.deepcopy(document)
        modes = sorted({m for name in names for m in registry.get(name).capabilities.latency_modes})
        schemas = served["components"]["schemas"]
        for schema in ("StreamCreate", "StreamUpdate", "SeriesCreate"):
            schemas[schema]["properties"]["backend"]["enum"] = list(names)
            if "latency" in schemas[schema]["properties"]:
                schemas[schema]["properties"]["latency"]["enum"] = modes
        schemas["OrgSettings"]["properties"]["backend"]["enum"] = list(names)
        _documents[names] = served
    return _documents[names]


# -- webhooks in ------------------------------------------------------------------------------------
async def notification(request: web.Request, name: str) -> web.Response:
    """POST /hooks/{platform}: verify, translate and apply a platform's notification (each handled once)."""
    try:
        backend = request.app[BACKENDS].get(name)
    except Unsupported as exc:
        return error(404, str(exc), None)
    body = await request.content.read(MAX_NOTIFICATION + 1)
    if len(body) > MAX_NOTIFICATION:
        return error(413, "notification too large", None)
    try:
        events = backend.parse_notification(request.headers, body, time.time())
    except StaleNotification as exc:
        log.warning("%s notification refused: %s", name, exc)
        return error(400, str(exc), None)
    except NotificationRejected as exc:
        log.warning("%s notification refused: %s", name, exc)
        return error(401, str(exc), None)
    published: list[tuple[str, str, dict[str, Any]]] = []
    outcomes = await asyncio.to_thread(apply_events, request.app[DB], name, events,
                                       lambda *event: published.append(event))
    for event_name, stream_id, data in published:  # on the loop: the bus is not thread-safe
        request.app[MANAGER].bus_publish(event_name, stream_id, data)
    return web.json_response({"handled": [{"event_id": o.event_id, "stream_id": o.stream_id, "result": o.result}
                                          for o in outcomes]})
