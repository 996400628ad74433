"""Applies a cloud platform's lifecycle events to our stream rows, the way the built-in engine does: the same
states (STARTING, LIVE, ENDING, ENDED, FAILED), start/end times, broadcast and recording rows, and the same bus
events (stream.connected, stream.live, stream.disconnected, stream.ended, stream.failed, recording.ready), so
webhooks out, chat's stream:live/stream:ended and the console follow a Mux or IVS stream as they follow ours.

Each platform notification is handled once (by its id), however often the platform delivers it.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable

from mediaserver.backends.base import LifecycleEvent
from mediaserver.db import Database

log = logging.getLogger(__name__)

Publish = Callable[[str, str, dict[str, Any]], None]
# A cloud recording waits for its local copy (mediaserver/cloud_recordings.py), which announces recording.ready.
COPY_EVENT = "recording.copy"


@dataclass(frozen=True)
class Outcome:
    event_id: str
    stream_id: str | None
    result: str  # "applied", "repeat", "no change", "unknown stream"


def apply_events(db: Database, backend: str, events: list[LifecycleEvent], publish: Publish) -> list[Outcome]:
    """Blocking (SQLite): run it in a thread. publish(name, stream_id, data) must be thread-safe or called back
    on the loop by the caller; see web/backends_api.py."""
    outcomes = []
    for event in events:
        if not db.first_notification(backend, event.event_id):
            outcomes.append(Outcome(event.event_id, None, "repeat"))
            continue
        try:
            outcomes.append(_apply(db, backend, event, publish))
        except Exception:
            db.forget_notification(backend, event.event_id)  # the platform's retry gets another go
            raise
    return outcomes


def _apply(db: Database, backend: str, event: LifecycleEvent, publish: Publish) -> Outcome:
    if event.kind == "simulcast" and event.target is not None:
        return _simulcast(db, backend, event, event.target, publish)
    stream = db.stream_by_remote(backend, event.remote_id, event.kind, event.at)
    if stream is None:
        log.info("%s notification %s for %s: no stream of ours", backend, event.kind, event.remote_id)
        return Outcome(event.event_id, None, "unknown stream")
    stream_id = stream["id"]
    changed = False
    if event.kind == "connected":
        changed = db.transition(stream_id, ("SCHEDULED", "ENDED", "FAILED"), "STARTING", error=None)
        if changed:
            publish("stream.connected", stream_id, {"broadcast": None, "peer": backend, "protocol": backend})
    elif event.kind == "live":
        fields: dict[str, Any] = {"error": None}
        if stream["status"] != "ENDING":  # back inside the reconnect window: the same broadcast goes on
            fields.update(actual_start=event.at, actual_end=None)
        changed = db.transition(stream_id, ("SCHEDULED", "STARTING", "ENDING", "ENDED", "FAILED"), "LIVE", **fields)
        if changed:
            broadcast = db.latest_broadcast(stream_id)
            if stream["status"] != "ENDING" or broadcast is None or broadcast["ended_at"] is not None:
                broadcast = db.create_broadcast(stream_id, f"{backend}:")
            db.update_broadcast(broadcast["id"], status="LIVE")
            publish("stream.live", stream_id, {"broadcast": broadcast["id"]})
    elif event.kind == "disconnected":
        changed = db.transition(stream_id, ("LIVE",), "ENDING")
        if changed:
            publish("stream.disconnected", stream_id, {"reason": event.detail or f"the encoder left {backend}"})
    elif event.kind in ("ended", "failed"):
        status = "ENDED" if event.kind == "ended" else "FAILED"
        changed = end_stream(db, stream_id, status, event.at, event.detail or None, publish)
    elif event.kind == "recording_ready" and event.asset is not None:
        changed = _recording_ready(db, stream_id, event.asset, publish)
    return Outcome(event.event_id, stream_id, "applied" if changed else "no change")


def end_stream(db: Database, stream_id: str, status: str, at: float, error: str | None, publish: Publish) -> bool:
    """The broadcast ends (a platform's notification, or an admin's end): once, whoever says it first."""
    if not db.transition(stream_id, ("STARTING", "LIVE", "ENDING"), status, actual_end=at, error=error):
        return False
    broadcast = db.latest_broadcast(stream_id)
    if broadcast is not None and broadcast["ended_at"] is None:
        db.update_broadcast(broadcast["id"], status=status, ended_at=at)
    publish(f"stream.{status.lower()}", stream_id, {"broadcast": broadcast["id"] if broadcast else None})
    return True


def _recording_ready(db: Database, stream_id: str, asset: dict[str, Any], publish: Publish) -> bool:
    """The platform's asset of a broadcast, as the broadcast's recording (one row per asset). It is PROCESSING
    until the copier has made its local copy (or given up); the copier then announces recording.ready."""
    asset_id = str(asset.get("id") or "")
    for row in db.recordings_where("stream_id = ?", [stream_id]):
        if row.get("remote_asset") and json.loads(row["remote_asset"]).get("id") == asset_id:
            return False  # the same asset told twice (asset.ready and live_stream_completed)
    broadcast = db.latest_broadcast(stream_id)
    recording = db.add_recording(
        stream_id=stream_id, broadcast_id=broadcast["id"] if broadcast else None,
        duration=float(asset.get("duration") or 0.0), size=0, mp4_size=None, playlist_key=None, mp4_key=None,
        status="PROCESSING", error=None, remote_asset=json.dumps(asset))
    publish(COPY_EVENT, stream_id, {"recording": recording["id"],
                                    "broadcast": broadcast["id"] if broadcast else None})
    return True


def _simulcast(db: Database, backend: str, event: LifecycleEvent, target: dict[str, Any],
               publish: Publish) -> Outcome:
    """A platform's simulcast target changed: our target row (found by the platform's target id) shows it, and
    simulcast.status is announced as the built-in pusher announces it (mediaserver/simulcast_push.py)."""
    with db._lock:  # the table belongs to mediaserver/simulcast.py SimulcastStore; same lock as it takes
        table = db.db.table("simulcast_targets")
        rows = list(table.rows_where("json_extract(remote, '$.backend') = ? and json_extract(remote, '$.id') = ?",
                                     [backend, str(target["id"])])) if "remote" in table.columns_dict else []
        if not rows:
            log.info("%s simulcast target %s: not one of ours", backend, target["id"])
            return Outcome(event.event_id, None, "unknown stream")
        row = rows[0]
        remote = json.loads(row["remote"])
        status, error = event.detail, target.get("error")
        if status == "DELETED":  # removed in the platform's dashboard while our row stays: nothing pushes there
            status, error = "FAILED", "the target was deleted at the platform"
        # Notifications may arrive out of order: an older one than the last applied changes nothing.
        stale = event.at < float(remote.get("event_at") or 0)
        if stale or (remote.get("status"), remote.get("error")) == (status, error):
            return Outcome(event.event_id, row["stream_id"], "no change")
        remote.update(status=status, error=error, since=event.at, event_at=event.at)
        table.update(row["id"], {"remote": json.dumps(remote)})
    publish("simulcast.status", row["stream_id"], {"target_id": row["id"], "name": row["name"], "status": status,
                                                  "error": error, "detail": None})
    return Outcome(event.event_id, row["stream_id"], "applied")
