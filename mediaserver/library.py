"""The sermon library: published recordings with their title, speaker, series, scripture reference, date and
poster, kept in SQLite; and the auto-publisher that publishes a stream's recording when it is ready, if the
stream asks (its `library_auto_publish` flag).

Only a PUBLIC stream (no password) can be published; the public pages re-check that when they read, so a stream
made private later drops out of the library at once.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from mediaserver.db import Database, new_id, open_sqlite
from mediaserver.events import Event, LocalEventBus

log = logging.getLogger(__name__)

# Fields an editor sets; the rest (ids, audio) the server keeps.
TEXT_FIELDS = ("title", "speaker", "series", "scripture", "description", "poster_url")


class NotPublishable(Exception):
    """The recording can't go into the public library; str() says why."""


def publishable(stream: dict[str, Any]) -> bool:
    """Whether anyone may see this stream's recordings: public and without a password."""
    return (stream.get("visibility") or "PUBLIC") == "PUBLIC" and not stream.get("password_hash")


@dataclass(frozen=True)
class LibraryFilter:
    """What a visitor asks of the public library: free text and exact speaker / series."""
    text: str = ""
    speaker: str = ""
    series: str = ""

    def matches(self, item: dict[str, Any]) -> bool:
        if self.speaker and (item.get("speaker") or "") != self.speaker:
            return False
        if self.series and (item.get("series") or "") != self.series:
            return False
        if self.text:
            haystack = " ".join(str(item.get(k) or "") for k in ("title", "speaker", "series", "scripture",
                                                                    "description")).casefold()
            return all(word in haystack for word in self.text.casefold().split())
        return True


class LibraryStore:
    """The `library_items` table: one row per published recording (a recording is published at most once)."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.RLock()
        self.db = open_sqlite(path)
        if "library_items" not in self.db.table_names():
            self.db.table("library_items").create(
                {"id": str, "org_id": str, "stream_id": str, "recording_id": str, "title": str, "speaker": str,
                 "series": str, "scripture": str, "description": str, "poster_url": str, "date": str,
                 "published_at": float, "audio_key": str, "audio_size": int, "audio_duration": float},
                pk="id")
            self.db.table("library_items").create_index(["recording_id"], unique=True)
            self.db.table("library_items").create_index(["org_id", "date"])

    def add(self, **fields: Any) -> dict[str, Any]:
        row = {"id": new_id(), "published_at": time.time(), "audio_key": None, "audio_size": None,
               "audio_duration": None, **{k: fields.get(k) or "" for k in TEXT_FIELDS}, **fields}
        with self._lock:
            self.db.table("library_items").insert(row)
        return row

    def get(self, item_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db.table("library_items").rows_where("id = ?", [item_id]))
        return rows[0] if rows else None

    def for_recording(self, recording_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db.table("library_items").rows_where("recording_id = ?", [recording_id]))
        return rows[0] if rows else None

    def update(self, item_id: str, **fields: Any) -> None:
        with self._lock:
            self.db.table("library_items").update(item_id, fields)

    def delete(self, item_id: str) -> None:
        with self._lock:
            self.db.table("library_items").delete(item_id)

    def of_org(self, org_id: str | None) -> list[dict[str, Any]]:
        """Newest sermon first; org_id None: every organization (the server admin)."""
        where, params = ("1 = 1", []) if org_id is None else ("org_id = ?", [org_id])
        with self._lock:
            return list(self.db.table("library_items").rows_where(where, params,
                                                                   order_by="date desc, published_at desc"))


def service_date(stream: dict[str, Any], recording: dict[str, Any]) -> str:
    """The day the sermon was preached (UTC date of the broadcast's start), as YYYY-MM-DD."""
    ts = stream.get("actual_start") or recording.get("created_at") or time.time()
    return datetime.fromtimestamp(float(ts), tz=timezone.utc).strftime("%Y-%m-%d")


def publish_recording(db: Database, library: LibraryStore, make_audio: Callable[[dict[str, Any]], None],
                      stream_id: str, recording_id: str, **fields: Any) -> dict[str, Any]:
    """Publish one recording (blocking: call it in a thread). Raises NotPublishable, or KeyError when the
    stream or recording is gone. make_audio(item) builds the podcast audio; its failure leaves the item
    published without audio (logged), it never undoes the publish."""
    stream = db.stream(stream_id)
    recording = db.recording(stream_id, recording_id) if stream else None
    if stream is None or recording is None:
        raise KeyError(recording_id)
    if not publishable(stream):
        raise NotPublishable("only a public stream's recordings can be published (this one is "
                             f"{'password-protected' if stream.get('password_hash') else stream.get('visibility')})")
    if recording.get("status") != "READY":
        raise NotPublishable("the recording is still being processed")
    if library.for_recording(recording_id) is not None:
        raise NotPublishable("this recording is already in the library")
    defaults = {"title": recording.get("title") or stream["title"], "date": service_date(stream, recording),
                "description": stream.get("description") or "", "poster_url": stream.get("thumbnail_url") or ""}
    given = {k: v for k, v in fields.items() if v is not None}
    item = library.add(org_id=stream["org_id"], stream_id=stream_id, recording_id=recording_id,
                       **{**defaults, **given})
    try:
        make_audio(item)
    except Exception:
        log.exception("library item %s: podcast audio not made", item["id"])
    return library.get(item["id"]) or item


class AutoPublisher:
    """Publishes a recording to the library when it is ready, if its stream has library_auto_publish on."""

    def __init__(self, db: Database, library: LibraryStore, make_audio: Callable[[dict[str, Any]], None],
                 bus: LocalEventBus) -> None:
        self.db, self.library, self.make_audio = db, library, make_audio
        self._unsubscribe = bus.subscribe(self._on_event)

    def stop(self) -> None:
        self._unsubscribe()

    async def _on_event(self, event: Event) -> None:
        if event.name != "recording.ready":
            return
        stream = await asyncio.to_thread(self.db.stream, event.stream_id)
        if stream is None or not stream.get("library_auto_publish"):
            return
        if not publishable(stream):
            log.info("stream %s: not auto-published to the library: the stream isn't public", event.stream_id)
            return
        try:
            item = await asyncio.to_thread(publish_recording, self.db, self.library, self.make_audio,
                                           event.stream_id, str(event.data["recording"]))
        except (NotPublishable, KeyError) as exc:
            log.info("stream %s: recording not auto-published: %s", event.stream_id, exc)
            return
        log.info("stream %s: recording %s published to the library as %s", event.stream_id,
                 event.data["recording"], item["id"])
