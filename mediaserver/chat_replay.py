"""Chat replay: a broadcast's chat on the recording's own timeline, and the moderators' "hide from the replay" flag.

A message's media time is its wall time mapped through the segments' EXT-X-PROGRAM-DATE-TIME (each segment: the
wall clock when its first frame was captured, and where it sits in the VOD timeline), not the seconds since the
broadcast began: an encoder that drops and reconnects leaves a gap in wall time that the recording does not have.
"""
from __future__ import annotations

import bisect
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packager.playlist import SegmentEntry, complete_rungs
from packager.recording import load_index
from mediaserver.db import open_sqlite
from storage.local import LocalStore

SHOWN_TYPES = ("MESSAGE", "PRAYER_REQUEST", "QUESTION", "ANNOUNCEMENT", "SYSTEM")
SLACK = 5.0  # seconds of chat kept before the first and after the last frame (a "good morning" before the picture)
MAX_ITEMS = 20000


@dataclass(frozen=True)
class Timeline:
    """Per segment: media start (VOD seconds from 0), wall-clock start (PDT) and duration."""
    media: list[float]
    wall: list[float]
    durations: list[float]

    @classmethod
    def of(cls, entries: list[SegmentEntry]) -> "Timeline":
        media, at = [], 0.0
        for entry in entries:
            media.append(at)
            at += entry.duration
        return cls(media, [e.program_date_time for e in entries], [e.duration for e in entries])

    @property
    def duration(self) -> float:
        return self.media[-1] + self.durations[-1] if self.media else 0.0

    def media_time(self, wall: float) -> float:
        """Where wall time `wall` is in the recording; a moment in a gap (encoder away) goes to where the
        recording resumes; before the start, 0; after the end, the end."""
        if not self.wall:
            return 0.0
        i = bisect.bisect_right(self.wall, wall) - 1
        if i < 0:
            return 0.0
        offset = wall - self.wall[i]
        if offset <= self.durations[i]:
            return self.media[i] + offset
        return self.media[i + 1] if i + 1 < len(self.media) else self.duration

    def covers(self, wall: float) -> bool:
        return bool(self.wall) and self.wall[0] - SLACK <= wall <= self.wall[-1] + self.durations[-1] + SLACK


def load_timeline(store: LocalStore, key_prefix: str) -> Timeline:
    """The recording's timeline from the rung its master playlist plays first (all complete rungs share it)."""
    rungs = [t for t in complete_rungs(load_index(store, key_prefix)) if t.entries]
    return Timeline.of(rungs[0].entries) if rungs else Timeline([], [], [])


def _card(raw: Any) -> dict[str, str] | None:
    """An announcement's stored card ({title, text, url} strings), or None (none, or not one we wrote)."""
    if not raw:
        return None
    try:
        card = json.loads(raw)
    except (TypeError, ValueError):
        return None
    if not isinstance(card, dict):
        return None
    kept = {k: card[k] for k in ("title", "text", "url") if isinstance(card.get(k), str) and card[k]}
    return kept or None


def _kind(mtype: str, card: dict[str, str] | None) -> str:
    """A giving moment is an announcement sent with a card (the moderation page's "Send giving moment")."""
    if mtype != "ANNOUNCEMENT":
        return "message"
    return "giving" if card is not None else "announcement"


def replay_items(timeline: Timeline, messages: list[dict[str, Any]], reactions: list[dict[str, Any]],
                 hidden: set[str], staff: bool) -> list[dict[str, Any]]:
    """What the replay shows, in media-time order. Viewers: approved messages not hidden and not for the prayer
    team; staff: hidden ones too, flagged. Announcements sent with a card are giving moments (kind "giving",
    with the card). Reactions are kept per minute, so they come at their minute's time."""
    items: list[dict[str, Any]] = []
    for m in messages:
        wall = float(m.get("published_at") or m["created_at"])
        if m["status"] != "APPROVED" or m["type"] not in SHOWN_TYPES or not timeline.covers(wall):
            continue
        is_hidden = m["id"] in hidden
        if not staff and (is_hidden or m.get("prayer_team_only")):
            continue
        card = _card(m.get("card"))
        item = {"kind": _kind(m["type"], card), "id": m["id"],
                "type": m["type"], "text": m["text"] or "", "author": m["author"] or "",
                "role": m["role"] or "viewer", "media_time": round(timeline.media_time(wall), 3),
                "at": wall, "hidden": is_hidden}
        if card is not None:
            item["card"] = card
        items.append(item)
    for r in reactions:
        wall = float(r["minute"])
        if timeline.covers(wall) or timeline.covers(wall + 59):
            items.append({"kind": "reaction", "id": f"reaction-{int(wall)}-{r['type']}", "type": r["type"],
                          "count": int(r["count"]), "media_time": round(timeline.media_time(wall), 3), "at": wall})
    items.sort(key=lambda item: (item["media_time"], item["at"]))
    return items[:MAX_ITEMS]


class ReplayStore:
    """The hide flags (one row per hidden message) and the reads a replay needs, on a connection of its own."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self.db = open_sqlite(path)
        if "chat_replay_hidden" not in self.db.table_names():
            self.db.table("chat_replay_hidden").create(
                {"message_id": str, "stream_id": str, "hidden_at": float, "moderator": str}, pk="message_id")
            self.db.table("chat_replay_hidden").create_index(["stream_id"])

    def hidden(self, stream_id: str) -> set[str]:
        with self._lock:
            return {r["message_id"] for r in self.db.table("chat_replay_hidden").rows_where("stream_id = ?", [stream_id])}

    def set_hidden(self, stream_id: str, message_id: str, hide: bool, moderator: str) -> None:
        with self._lock:
            if hide:
                self.db.table("chat_replay_hidden").insert(
                    {"message_id": message_id, "stream_id": stream_id, "hidden_at": time.time(), "moderator": moderator},
                    replace=True)
            else:
                self.db.execute("DELETE FROM chat_replay_hidden WHERE message_id = ?", [message_id])

    def message(self, stream_id: str, message_id: str) -> dict[str, Any] | None:
        with self._lock:
            rows = list(self.db.table("chat_messages").rows_where("stream_id = ? and id = ?", [stream_id, message_id]))
        return rows[0] if rows else None

    def messages_between(self, stream_id: str, start: float, end: float) -> list[dict[str, Any]]:
        with self._lock:
            try:
                return list(self.db.table("chat_messages").rows_where(
                    "stream_id = ? and coalesce(published_at, created_at) between ? and ?", [stream_id, start, end],
                    order_by="coalesce(published_at, created_at), rowid", limit=MAX_ITEMS))
            except sqlite3.OperationalError:  # no chat yet on this server
                return []

    def reactions_between(self, stream_id: str, start: float, end: float) -> list[dict[str, Any]]:
        with self._lock:
            try:
                return list(self.db.table("reaction_events").rows_where(
                    "stream_id = ? and minute between ? and ?", [stream_id, start - 60, end], order_by="minute"))
            except sqlite3.OperationalError:
                return []


def read_replay(replay: ReplayStore, store: LocalStore, stream_id: str, key_prefix: str,
                staff: bool) -> tuple[Timeline, list[dict[str, Any]]]:
    """Blocking (disk and SQLite): run off the event loop."""
    timeline = load_timeline(store, key_prefix)
    if not timeline.wall:
        return timeline, []
    start, end = timeline.wall[0] - SLACK, timeline.wall[-1] + timeline.durations[-1] + SLACK
    messages = replay.messages_between(stream_id, start, end)
    reactions = replay.reactions_between(stream_id, start, end)
    return timeline, replay_items(timeline, messages, reactions, replay.hidden(stream_id), staff)
