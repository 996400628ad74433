"""One stream's live room: chat, reactions and presence, fanned out to every viewer.

Each event is serialized once per broadcast, not once per viewer; every viewer has a bounded send
queue and a viewer who can't keep up is dropped rather than slowing the room. No sockets here.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from mediaserver.chat_store import ChatStore
from mediaserver.moderation import ModerationPolicy, RateLimit

log = logging.getLogger(__name__)

MESSAGE_TYPES = ("MESSAGE", "PRAYER_REQUEST", "QUESTION", "ANNOUNCEMENT")
REACTIONS = ("LIKE", "LOVE", "PRAY", "AMEN", "CLAP", "RAISED_HANDS")
STAFF = ("moderator", "admin")
MAX_FRAME = 4096
HISTORY = 50


def device_and_browser(user_agent: str) -> tuple[str, str]:
    """A coarse reading of the User-Agent, enough for "how many watched on phones"."""
    ua = user_agent.lower()
    device = "tablet" if ("ipad" in ua or "tablet" in ua) else "mobile" if ("mobi" in ua or "iphone" in ua or "android" in ua) \
        else "tv" if ("smart-tv" in ua or "tizen" in ua or "roku" in ua) else "desktop" if ua else "unknown"
    for name, token in (("Edge", "edg/"), ("Opera", "opr/"), ("Chrome", "chrome/"), ("Firefox", "firefox/"),
                        ("Safari", "safari/")):
        if token in ua:
            return device, name
    return device, "other" if ua else "unknown"


def frame(event: str, data: dict[str, Any]) -> bytes:
    """The UTF-8 payload of one text frame, ready for every socket."""
    return json.dumps({"event": event, "data": data}, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(eq=False)
class Viewer:
    name: str
    role: str                      # guest, member, moderator, admin
    address: str
    user_agent: str = ""
    queue_size: int = 256
    id: str = field(default_factory=lambda: secrets.token_hex(6))
    queue: asyncio.Queue[bytes | None] = field(init=False)
    messages: RateLimit = field(default_factory=lambda: RateLimit(5, 10.0))
    reactions: RateLimit = field(default_factory=lambda: RateLimit(10, 5.0))
    last_sent: float | None = None
    dropped: bool = False
    joined_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.queue_size)

    @property
    def staff(self) -> bool:
        return self.role in STAFF

    def offer(self, text: bytes) -> bool:
        """Queue a frame; a full queue means a viewer too slow for the room: drop them."""
        if self.dropped:
            return False
        try:
            self.queue.put_nowait(text)
            return True
        except asyncio.QueueFull:
            self.dropped = True
            # Make room for the close signal so the sender task ends.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)
            return False


class Room:
    def __init__(self, stream_id: str, store: ChatStore, policy: ModerationPolicy,
                 clock: Callable[[], float] = time.time) -> None:
        self.stream_id = stream_id
        self.store = store
        self.policy = policy
        self.clock = clock
        self.viewers: dict[str, Viewer] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY)
        self.held: dict[str, dict[str, Any]] = {}
        self.pinned: dict[str, Any] | None = None
        self.banned: set[str] = set()
        self.timeouts: dict[str, float] = {}
        self.peak_viewers = 0
        self._reaction_counts: dict[str, int] = {}
        self.reaction_totals: dict[str, int] = {}
        self.address_limits: dict[str, RateLimit] = {}
        self._count_pending = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.history.extend(await asyncio.to_thread(self.store.history, self.stream_id, HISTORY))
        self.reaction_totals = await asyncio.to_thread(self.store.reaction_totals, self.stream_id)
        self._tasks.append(asyncio.get_running_loop().create_task(self._flush_reactions()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- fan-out -----------------------------------------------------------------------------------
    def broadcast(self, event: str, data: dict[str, Any], *, staff_only: bool = False) -> int:
        text = frame(event, data)  # once per event, whatever the room's size
        delivered = 0
        for viewer in list(self.viewers.values()):
            if staff_only and not viewer.staff:
                continue
            if viewer.offer(text):
                delivered += 1
        return delivered

    def send(self, viewer: Viewer, event: str, data: dict[str, Any]) -> None:
        viewer.offer(frame(event, data))

    def error(self, viewer: Viewer, code: str, message: str) -> None:
        self.send(viewer, "chat:error", {"code": code, "message": message})

    # -- presence ----------------------------------------------------------------------------------
    def join(self, viewer: Viewer) -> None:
        if viewer.role == "guest" and any(
            v.name.casefold() == viewer.name.casefold() for v in self.viewers.values() if v.role != "guest"
        ):
            viewer.name = f"Guest {viewer.id[:4]}"  # a guest can't take a member's or moderator's name
        self.viewers[viewer.id] = viewer
        if len(self.viewers) > self.peak_viewers:
            self.peak_viewers = len(self.viewers)
            self.store.peak_viewers(self.stream_id, self.peak_viewers)
        visible = [m for m in self.history if not m.get("prayer_team_only") or viewer.staff]
        self.send(viewer, "stream:join", {"viewer_id": viewer.id, "name": viewer.name, "role": viewer.role})
        self.send(viewer, "chat:history", {"messages": visible, "pinned": self.pinned})
        self.send(viewer, "stream:reactions", {"counts": {}, "totals": self.reaction_totals})
        if viewer.staff and self.held:
            self.send(viewer, "chat:moderated", {"held": list(self.held.values())})
        self._schedule_count()

    def leave(self, viewer: Viewer) -> None:
        if self.viewers.pop(viewer.id, None) is not None:
            self._schedule_count()
            # Individual comings and goings interest moderators only; everyone else gets the count.
            self.broadcast("stream:leave", {"viewer_id": viewer.id, "name": viewer.name}, staff_only=True)
            left = time.time()
            device, browser = device_and_browser(viewer.user_agent)
            self.store.viewer_session({
                "id": viewer.id, "stream_id": self.stream_id, "role": viewer.role, "joined_at": viewer.joined_at,
                "left_at": left, "watch_seconds": round(left - viewer.joined_at, 3), "device": device, "browser": browser,
            })

    def _schedule_count(self) -> None:
        # Debounced: a burst of joins costs one broadcast.
        if self._count_pending:
            return
        self._count_pending = True

        def fire() -> None:
            self._count_pending = False
            self.broadcast("stream:viewers", {"count": len(self.viewers), "peak": self.peak_viewers})

        asyncio.get_running_loop().call_later(0.5, fire)

    # -- reactions ---------------------------------------------------------------------------------
    async def _flush_reactions(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self._reaction_counts:
                counts, self._reaction_counts = self._reaction_counts, {}
                for rtype, count in counts.items():
                    self.reaction_totals[rtype] = self.reaction_totals.get(rtype, 0) + count
                self.store.add_reactions(self.stream_id, counts)
                self.broadcast("stream:reactions", {"counts": counts, "totals": self.reaction_totals})

    # -- incoming frames ---------------------------------------------------------------------------
    def handle(self, viewer: Viewer, raw: str) -> None:
        if len(raw) > MAX_FRAME:
            return self.error(viewer, "too_large", f"frames are limited to {MAX_FRAME} bytes")
        try:
            message = json.loads(raw)
            event, data = message["event"], message.get("data") or {}
            if not isinstance(event, str) or not isinstance(data, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return self.error(viewer, "bad_frame", 'send JSON like {"event": "chat:message", "data": {...}}')
        handler = HANDLERS.get(event)
        if handler is None:
            return self.error(viewer, "unknown_event", f"unknown event {event[:40]!r}")
        if handler.staff_only and not viewer.staff:
            return self.error(viewer, "forbidden", f"{event} is for moderators")
        handler.fn(self, viewer, data)

    def _muted(self, viewer: Viewer) -> str | None:
        if viewer.name.casefold() in self.banned or viewer.address in self.banned:
            return "you are banned from this chat"
        until = self.timeouts.get(viewer.name.casefold())
        if until and until > self.clock():
            return f"you are timed out for {until - self.clock():.0f} s"
        return None

    def on_message(self, viewer: Viewer, data: dict[str, Any]) -> None:
        text, mtype = data.get("text"), data.get("type", "MESSAGE")
        if not isinstance(text, str):
            return self.error(viewer, "bad_message", "text must be a string")
        if mtype not in MESSAGE_TYPES or (mtype == "ANNOUNCEMENT" and not viewer.staff):
            return self.error(viewer, "bad_message", f"type must be one of {', '.join(MESSAGE_TYPES[:3])}")
        muted = self._muted(viewer)
        if muted:
            return self.error(viewer, "muted", muted)
        address_limit = self.address_limits.setdefault(viewer.address, RateLimit(20, 10.0))
        if not viewer.staff and (not viewer.messages.allow() or not address_limit.allow()):
            return self.error(viewer, "rate_limited", "you are sending messages too fast")
        now = self.clock()
        verdict = self.policy.judge(text, privileged=viewer.staff, last_sent=viewer.last_sent, now=now,
                                    trusted=viewer.role == "member")
        if verdict.action == "reject":
            return self.error(viewer, "rejected", verdict.reason)
        viewer.last_sent = now
        message = {
            "id": secrets.token_hex(8), "stream_id": self.stream_id, "type": mtype, "text": text.strip(),
            "author": viewer.name, "role": viewer.role, "created_at": now, "pinned": 0,
            "prayer_team_only": int(bool(data.get("prayer_team_only")) and mtype == "PRAYER_REQUEST"),
            "status": "APPROVED" if verdict.action == "allow" else "HELD",
        }
        self.store.save_message(message)
        if verdict.action == "hold":
            self.held[message["id"]] = message
            self.send(viewer, "chat:moderated", {"id": message["id"], "status": "HELD", "reason": verdict.reason})
            self.broadcast("chat:moderated", {"held": [message]}, staff_only=True)
            return
        self._publish(message)

    def system_message(self, text: str) -> None:
        """A SYSTEM line from the server itself (the service started, ended)."""
        message = {"id": secrets.token_hex(8), "stream_id": self.stream_id, "type": "SYSTEM", "text": text,
                   "author": "System", "role": "system", "created_at": self.clock(), "pinned": 0,
                   "prayer_team_only": 0, "status": "APPROVED"}
        self.store.save_message(message)
        self._publish(message)

    def _publish(self, message: dict[str, Any]) -> None:
        self.history.append(message)
        self.broadcast("chat:message", message, staff_only=bool(message["prayer_team_only"]))

    def on_typing(self, viewer: Viewer, data: dict[str, Any]) -> None:
        if not self._muted(viewer):
            self.broadcast("chat:typing", {"name": viewer.name})

    def on_reaction(self, viewer: Viewer, data: dict[str, Any]) -> None:
        rtype = data.get("type")
        if rtype not in REACTIONS:
            return self.error(viewer, "bad_reaction", f"type must be one of {', '.join(REACTIONS)}")
        if not viewer.reactions.allow():
            return self.error(viewer, "rate_limited", "at most 10 reactions every 5 seconds")
        self._reaction_counts[rtype] = self._reaction_counts.get(rtype, 0) + 1

    # -- moderation --------------------------------------------------------------------------------
    def _audit(self, viewer: Viewer, action: str, target: str, detail: Any = None) -> None:
        self.store.audit(self.stream_id, self.clock(), viewer.name, action, target, detail)

    def on_review(self, viewer: Viewer, data: dict[str, Any]) -> None:
        message = self.held.pop(str(data.get("id")), None)
        if message is None:
            return self.error(viewer, "not_found", "no such held message")
        approve = bool(data.get("approve"))
        message["status"] = "APPROVED" if approve else "REJECTED"
        self.store.update_message(message["id"], status=message["status"])
        self._audit(viewer, "approve" if approve else "reject", message["id"])
        if approve:
            self._publish(message)
        self.broadcast("chat:moderated", {"id": message["id"], "status": message["status"]}, staff_only=True)

    def on_remove(self, viewer: Viewer, data: dict[str, Any]) -> None:
        message_id = str(data.get("id"))
        for message in self.history:
            if message["id"] == message_id:
                self.history.remove(message)
                break
        else:
            return self.error(viewer, "not_found", "no such message")
        self.store.update_message(message_id, status="REMOVED")
        if self.pinned and self.pinned["id"] == message_id:
            self.pinned = None
        self._audit(viewer, "remove", message_id)
        self.broadcast("chat:removed", {"id": message_id})

    def on_pin(self, viewer: Viewer, data: dict[str, Any]) -> None:
        message_id = data.get("id")
        if message_id is None:
            self.pinned = None
        else:
            found = next((m for m in self.history if m["id"] == message_id), None)
            if found is None:
                return self.error(viewer, "not_found", "no such message")
            self.pinned = found
            self.store.update_message(found["id"], pinned=1)
        self._audit(viewer, "pin", str(message_id))
        self.broadcast("chat:pinned", {"message": self.pinned})

    def on_announce(self, viewer: Viewer, data: dict[str, Any]) -> None:
        self.on_message(viewer, {"text": data.get("text"), "type": "ANNOUNCEMENT"})
        self.broadcast("stream:announcement", {"text": data.get("text"), "card": data.get("card")})
        self._audit(viewer, "announce", "", data.get("text"))

    def on_highlight(self, viewer: Viewer, data: dict[str, Any]) -> None:
        message_id = str(data.get("id"))
        found = next((m for m in self.history if m["id"] == message_id), None)
        if found is None:
            return self.error(viewer, "not_found", "no such message")
        found["highlighted"] = True
        self._audit(viewer, "highlight", message_id)
        self.broadcast("chat:highlighted", {"id": message_id})

    def on_timeout(self, viewer: Viewer, data: dict[str, Any]) -> None:
        name, seconds = str(data.get("name", "")), data.get("seconds", 300)
        if not name or not isinstance(seconds, (int, float)) or not 1 <= seconds <= 86400:
            return self.error(viewer, "bad_request", "send a name and 1..86400 seconds")
        self.timeouts[name.casefold()] = self.clock() + seconds
        self._audit(viewer, "timeout", name, seconds)

    def on_ban(self, viewer: Viewer, data: dict[str, Any]) -> None:
        name = str(data.get("name", ""))
        if not name:
            return self.error(viewer, "bad_request", "send a name")
        self.banned.add(name.casefold())
        for other in self.viewers.values():
            if other.name.casefold() == name.casefold():
                self.banned.add(other.address)
        self._audit(viewer, "ban", name)


@dataclass(frozen=True)
class _Handler:
    fn: Callable[[Room, Viewer, dict[str, Any]], None]
    staff_only: bool = False


HANDLERS: dict[str, _Handler] = {
    "chat:message": _Handler(Room.on_message),
    "chat:typing": _Handler(Room.on_typing),
    "stream:reaction": _Handler(Room.on_reaction),
    "chat:review": _Handler(Room.on_review, True),
    "chat:remove": _Handler(Room.on_remove, True),
    "chat:pin": _Handler(Room.on_pin, True),
    "chat:highlight": _Handler(Room.on_highlight, True),
    "stream:announcement": _Handler(Room.on_announce, True),
    "chat:timeout": _Handler(Room.on_timeout, True),
    "chat:ban": _Handler(Room.on_ban, True),
}
