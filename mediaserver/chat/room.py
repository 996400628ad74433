"""One stream's live room: chat, reactions and presence, fanned out to every viewer.

Each event is serialized once per broadcast, not once per viewer; every viewer has a bounded send
queue and a viewer who can't keep up is dropped rather than slowing the room. Viewers are known by
identity (a per-browser id, a member or staff token), never by address alone. No sockets here.
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

from mediaserver.access import AccessPolicy, Caller
from mediaserver.chat.protocol import (CLOSE_FORBIDDEN, CLOSE_TOO_LARGE, HISTORY, MAX_FRAME, MESSAGE_TYPES, PRIVATE_FIELDS,
                                       REACTIONS, STAFF, ChatLimits, FrameError, device_and_browser, frame,
                                       parse_frame, public)
from mediaserver.chat.names import MAX_NAME, choose_guest_name, clean_name, name_key
from mediaserver.chat.sanctions import Authors, Sanction, Sanctions
from mediaserver.chat.store import ChatStore
from mediaserver.chat.moderation import ModerationPolicy, RateLimit

log = logging.getLogger(__name__)

__all__ = ["CLOSE_TOO_LARGE", "HISTORY", "MAX_FRAME", "MESSAGE_TYPES", "PRIVATE_FIELDS", "REACTIONS", "STAFF",
           "ChatLimits", "FrameError", "Room", "Viewer", "device_and_browser", "frame", "parse_frame", "public"]

@dataclass(eq=False)
class Viewer:
    name: str                      # asked for; the room settles it on join
    role: str                      # guest, member, moderator, admin (listener: SSE)
    address: str
    user_agent: str = ""
    queue_size: int = 256
    identity: str = ""             # guest:<viewer id>, member:<org>:<name>, staff:<org>:<name>, admin:<name>
    viewer_token: str | None = None  # the signed token behind a guest's identity, returned in stream:join
    id: str = field(default_factory=lambda: secrets.token_hex(6))
    queue: asyncio.Queue[bytes | None] = field(init=False)
    typing: RateLimit = field(default_factory=lambda: RateLimit(*ChatLimits.typing_per_viewer))
    dropped: bool = False
    close_code: int = 1000
    close_reason: str = ""
    joined_at: float = field(default_factory=time.time)
    key: str = ""                  # name_key(name), set on join
    asked: str = ""                # the name asked for (`name` is the one the room settled on)
    caller: Caller | None = None   # what admitted them; asked again if the stream's visibility changes
    # Where frames go instead of the queue (a WebSocket's direct writer, web/ws_batch.py), which calls
    # drop_too_slow() when the socket can't keep up. The queue then carries only the close signal.
    sink: Callable[[bytes], None] | None = None

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.queue_size)
        self.identity = self.identity or f"conn:{self.id}"
        self.asked = self.asked or self.name

    @property
    def staff(self) -> bool:
        return self.role in STAFF

    @property
    def closing(self) -> bool:
        return self.dropped or self.close_code != 1000

    def offer(self, text: bytes) -> bool:
        """Queue a frame; a full queue means a viewer too slow for the room: drop them."""
        if self.dropped:
            return False
        if self.sink is not None:
            self.sink(text)
            return True
        try:
            self.queue.put_nowait(text)
            return True
        except asyncio.QueueFull:
            self.drop_too_slow()
            return False

    def drop_too_slow(self) -> None:
        """The viewer can't keep up with the room: close at once, dropping what is still queued for them."""
        if self.dropped:
            return
        self.dropped = True
        self.close_code, self.close_reason = 1008, "too slow"
        self._end()

    def close(self, code: int, reason: str) -> None:
        """Ask the socket to close after what is queued (a full queue: at once)."""
        self.close_code, self.close_reason = code, reason
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            self._end()

    def _end(self) -> None:
        # Make room for the close signal so the sender task ends.
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class Room:
    def __init__(self, stream_id: str, store: ChatStore, policy: ModerationPolicy,
                 clock: Callable[[], float] = time.time, limits: ChatLimits | None = None,
                 org_id: str | None = None, fanout: Callable[[bytes, bool], int] | None = None) -> None:
        self.stream_id = stream_id
        # Across processes (mediaserver/cluster/) a broadcast goes out once to every process, which offers it
        # to its own sockets; None: offer it to this room's viewers here.
        self.fanout = fanout
        self.org_id = org_id
        self.store = store
        self.policy = policy
        self.clock = clock
        self.limits = limits or ChatLimits()
        self.viewers: dict[str, Viewer] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=self.limits.history)
        self.held: dict[str, dict[str, Any]] = {}
        self.pinned: dict[str, Any] | None = None
        self.sanctions = Sanctions()
        self.authors = Authors()
        self.peak_viewers = 0
        self._reaction_counts: dict[str, int] = {}
        self.reaction_totals: dict[str, int] = {}
        # Limits by identity (all of one browser's tabs together) and by address (a whole network).
        self.identity_limits: dict[str, RateLimit] = {}
        self.address_limits: dict[str, RateLimit] = {}
        self.reaction_limits: dict[str, RateLimit] = {}
        self.last_sent: dict[str, float] = {}
        self._typing: dict[str, str] = {}
        self._typing_handle: asyncio.TimerHandle | None = None
        self._typing_last = 0.0
        self._count_pending = False
        self._tasks: list[asyncio.Task[None]] = []
        # The stream's own switches (chat_enabled, reactions_enabled); staff may still post when chat is off.
        self.chat_enabled = True
        self.reactions_enabled = True
        self.visibility = "PUBLIC"

    async def start(self) -> None:
        """Load what the room had before a restart: history, pinned message, review queue, sanctions."""
        def load() -> tuple[Any, ...]:
            return (self.store.history(self.stream_id, self.limits.history), self.store.pinned(self.stream_id),
                    self.store.held(self.stream_id, self.limits.held_queue), self.store.reaction_totals(self.stream_id),
                    self.store.sanctions(self.stream_id, self.clock()), self.store.recent_authors(self.stream_id))

        history, pinned, held, totals, sanctions, authors = await asyncio.to_thread(load)
        self.history.extend(history)
        self.pinned = pinned
        self.held = {m["id"]: m for m in held}
        self.reaction_totals = totals
        self.sanctions = Sanctions(Sanction.from_row(row) for row in sanctions)
        for row in authors:
            self.authors.heard(row["author"], row["author_viewer"], row["author_address"], row["role"])
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._flush_reactions()))
        self._tasks.append(loop.create_task(self._housekeeping()))

    async def stop(self) -> None:
        if self._typing_handle is not None:
            self._typing_handle.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._reaction_counts:  # reactions of the last half second still count
            self.store.add_reactions(self.stream_id, self._reaction_counts, self.clock())
            self._reaction_counts = {}

    def apply_policy(self, policy: ModerationPolicy) -> None:
        """New moderation settings, in force from the next message."""
        self.policy = policy

    # -- fan-out -----------------------------------------------------------------------------------
    def broadcast(self, event: str, data: dict[str, Any], *, staff_only: bool = False) -> int:
        text = frame(event, data)  # once per event, whatever the room's size
        if self.fanout is not None:
            return self.fanout(text, staff_only)
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
    def _settle_name(self, viewer: Viewer) -> None:
        if viewer.role == "guest":
            protected = self.authors.protected_keys | {
                v.key for v in self.viewers.values() if v.role not in ("guest", "listener") and v is not viewer}
            viewer.name = choose_guest_name(viewer.asked, viewer.identity, protected)
        else:
            viewer.name = clean_name(viewer.asked) or viewer.role.capitalize()
        viewer.name = viewer.name[:MAX_NAME]
        viewer.key = name_key(viewer.name)

    def _welcome(self, viewer: Viewer, *, history: bool = True) -> None:
        me: dict[str, Any] = {"viewer_id": viewer.id, "name": viewer.name, "role": viewer.role}
        if viewer.viewer_token:
            me["viewer_token"] = viewer.viewer_token
        self.send(viewer, "stream:join", me)
        if history:
            visible = [public(m) for m in self.history if not m.get("prayer_team_only") or viewer.staff]
            self.send(viewer, "chat:history", {"messages": visible, "pinned": self.pinned and public(self.pinned)})
        if viewer.staff and self.held:
            self.send(viewer, "chat:moderated", {"held": [public(m) for m in self.held.values()]})

    def join(self, viewer: Viewer) -> None:
        viewer.typing = RateLimit(*self.limits.typing_per_viewer)
        self._settle_name(viewer)
        self.viewers[viewer.id] = viewer
        if len(self.viewers) > self.peak_viewers:
            self.peak_viewers = len(self.viewers)
            self.store.peak_viewers(self.stream_id, self.peak_viewers)
        self._welcome(viewer)
        self.send(viewer, "stream:reactions", {"counts": {}, "totals": self.reaction_totals})
        self._schedule_count()

    def reidentify(self, viewer: Viewer, *, role: str, name: str, identity: str, viewer_token: str | None) -> None:
        """A viewer already in the room showed a token (the auth frame): new role, name or identity.
        stream:join is sent again; history and, for staff, the review queue when the role changed."""
        if (role, identity) == (viewer.role, viewer.identity) and (not name or name == viewer.asked):
            return
        role_changed = role != viewer.role
        viewer.role, viewer.identity, viewer.viewer_token = role, identity, viewer_token
        viewer.asked = name or viewer.asked
        self._settle_name(viewer)
        self._welcome(viewer, history=role_changed)

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
                "viewer": viewer.identity,
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

    # -- background --------------------------------------------------------------------------------
    async def _flush_reactions(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            if self._reaction_counts:
                counts, self._reaction_counts = self._reaction_counts, {}
                for rtype, count in counts.items():
                    self.reaction_totals[rtype] = self.reaction_totals.get(rtype, 0) + count
                self.store.add_reactions(self.stream_id, counts, self.clock())
                self.broadcast("stream:reactions", {"counts": counts, "totals": self.reaction_totals})

    async def _housekeeping(self, every: float = 30.0) -> None:
        """Forget limiters with nothing in their window, so a long service doesn't keep every visitor."""
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for limits in (self.identity_limits, self.address_limits, self.reaction_limits):
                for key in [k for k, limit in limits.items() if limit.idle(now)]:
                    del limits[key]
            horizon = self.clock() - max(self.policy.slow_mode_seconds, 1.0)
            for key in [k for k, at in self.last_sent.items() if at < horizon]:
                del self.last_sent[key]

    # -- incoming frames ---------------------------------------------------------------------------
    def handle(self, viewer: Viewer, raw: str) -> dict[str, Any] | None:
        """Act on one frame. Returns the data of an auth frame, which the caller (who can check tokens)
        settles; anything refused is answered with chat:error, and oversized frames close the socket."""
        try:
            event, data = parse_frame(raw, self.limits)
        except FrameError as exc:
            self.error(viewer, exc.code, str(exc))
            if exc.close:
                viewer.close(exc.close, "frame too large")
            return None
        if event == "auth":
            return data
        self.dispatch(viewer, event, data)
        return None

    def dispatch(self, viewer: Viewer, event: str, data: dict[str, Any]) -> None:
        handler = HANDLERS.get(event)
        if handler is None:
            return self.error(viewer, "unknown_event", f"unknown event {event[:40]!r}")
        if handler.staff_only and not viewer.staff:
            return self.error(viewer, "forbidden", f"{event} is for moderators")
        handler.fn(self, viewer, data)

    def _muted(self, viewer: Viewer) -> str | None:
        if viewer.staff:
            return None
        now = self.clock()
        sanction = self.sanctions.muting(identity=viewer.identity, name=viewer.name, address=viewer.address,
                                         guest=viewer.role == "guest", now=now)
        if sanction is None:
            return None
        if sanction.kind == "ban":
            return "you are banned from this chat"
        return f"you are timed out for {(sanction.until or now) - now:.0f} s"

    def _limit(self, table: dict[str, RateLimit], key: str, window: tuple[int, float]) -> RateLimit:
        limit = table.get(key)
        if limit is None:
            limit = table[key] = RateLimit(*window)
        return limit

    def apply_stream(self, stream: dict[str, Any]) -> None:
        """The stream as it is now: its chat_enabled / reactions_enabled switches, and its visibility — made
        private during a service, everyone whose credentials no longer reach it leaves the room at once."""
        self.chat_enabled = bool(stream.get("chat_enabled", 1))
        self.reactions_enabled = bool(stream.get("reactions_enabled", 1))
        visibility = stream.get("visibility") or "PUBLIC"
        if visibility == self.visibility:
            return
        self.visibility = visibility
        for viewer in list(self.viewers.values()):
            if viewer.caller is not None and not AccessPolicy.may_watch(viewer.caller, stream).allowed:
                self.error(viewer, "forbidden", "this stream is now private")
                viewer.close(CLOSE_FORBIDDEN, "stream is private")

    def on_message(self, viewer: Viewer, data: dict[str, Any]) -> None:
        if not self.chat_enabled and not viewer.staff:
            return self.error(viewer, "chat_off", "chat is turned off for this stream")
        text, mtype = data.get("text"), data.get("type", "MESSAGE")
        if not isinstance(text, str):
            return self.error(viewer, "bad_message", "text must be a string")
        if mtype not in MESSAGE_TYPES or (mtype == "ANNOUNCEMENT" and not viewer.staff):
            return self.error(viewer, "bad_message", f"type must be one of {', '.join(MESSAGE_TYPES[:3])}")
        muted = self._muted(viewer)
        if muted:
            return self.error(viewer, "muted", muted)
        if not viewer.staff and not (
                self._limit(self.identity_limits, viewer.identity, self.limits.messages_per_identity).allow()
                and self._limit(self.address_limits, viewer.address, self.limits.messages_per_address).allow()):
            return self.error(viewer, "rate_limited", "you are sending messages too fast")
        now = self.clock()
        verdict = self.policy.judge(text, privileged=viewer.staff, last_sent=self.last_sent.get(viewer.identity),
                                    now=now, trusted=viewer.role == "member")
        if verdict.action == "reject":
            return self.error(viewer, "rejected", verdict.reason)
        self.last_sent[viewer.identity] = now
        message = self._message(viewer, text.strip(), mtype, now,
                                prayer_team_only=bool(data.get("prayer_team_only")) and mtype == "PRAYER_REQUEST",
                                status="APPROVED" if verdict.action == "allow" else "HELD")
        self.authors.heard(viewer.name, viewer.identity, viewer.address, viewer.role)
        self.store.save_message(message)
        if verdict.action == "hold":
            self.held[message["id"]] = message
            while len(self.held) > self.limits.held_queue:
                self.held.pop(next(iter(self.held)))
            self.send(viewer, "chat:moderated", {"id": message["id"], "status": "HELD", "reason": verdict.reason})
            self.broadcast("chat:moderated", {"held": [public(message)]}, staff_only=True)
            return
        self._publish(message)

    def _message(self, viewer: Viewer, text: str, mtype: str, now: float, *, prayer_team_only: bool = False,
                 status: str = "APPROVED") -> dict[str, Any]:
        return {
            "id": secrets.token_hex(8), "stream_id": self.stream_id, "type": mtype, "text": text,
            "author": viewer.name, "role": viewer.role, "created_at": now, "pinned": 0,
            "prayer_team_only": int(prayer_team_only), "status": status,
            "published_at": now if status == "APPROVED" else None, "highlighted": 0,
            "author_viewer": viewer.identity, "author_address": viewer.address,
        }

    def system_message(self, text: str) -> None:
        """A SYSTEM line from the server itself (the service started, ended)."""
        now = self.clock()
        message = {"id": secrets.token_hex(8), "stream_id": self.stream_id, "type": "SYSTEM", "text": text,
                   "author": "System", "role": "system", "created_at": now, "pinned": 0,
                   "prayer_team_only": 0, "status": "APPROVED", "published_at": now, "highlighted": 0}
        self.store.save_message(message)
        self._publish(message)

    def _publish(self, message: dict[str, Any]) -> None:
        self.history.append(message)
        self.broadcast("chat:message", public(message), staff_only=bool(message["prayer_team_only"]))

    def on_typing(self, viewer: Viewer, data: dict[str, Any]) -> None:
        """Coalesced: at most one chat:typing per room per interval, naming everyone who typed since."""
        if self._muted(viewer) or not viewer.typing.allow():
            return
        self._typing[viewer.identity] = viewer.name
        if self._typing_handle is None:
            delay = max(0.0, self._typing_last + self.limits.typing_interval - time.monotonic())
            self._typing_handle = asyncio.get_running_loop().call_later(delay, self._flush_typing)

    def _flush_typing(self) -> None:
        self._typing_handle = None
        self._typing_last = time.monotonic()
        names = list(dict.fromkeys(self._typing.values()))[:20]
        self._typing.clear()
        if names:
            self.broadcast("chat:typing", {"name": names[0], "names": names})

    def on_reaction(self, viewer: Viewer, data: dict[str, Any]) -> None:
        if not self.reactions_enabled:
            return self.error(viewer, "reactions_off", "reactions are turned off for this stream")
        rtype = data.get("type")
        if rtype not in REACTIONS:
            return self.error(viewer, "bad_reaction", f"type must be one of {', '.join(REACTIONS)}")
        count, per = self.limits.reactions_per_identity
        if not self._limit(self.reaction_limits, viewer.identity, (count, per)).allow():
            return self.error(viewer, "rate_limited", f"at most {count} reactions every {per:g} seconds")
        self._reaction_counts[rtype] = self._reaction_counts.get(rtype, 0) + 1

    # -- moderation --------------------------------------------------------------------------------
    def _audit(self, viewer: Viewer, action: str, target: str, detail: Any = None) -> None:
        self.store.audit(self.stream_id, self.clock(), viewer.name, action, target, detail)

    def _find(self, message_id: str) -> dict[str, Any] | None:
        return next((m for m in self.history if m["id"] == message_id), None)

    def on_review(self, viewer: Viewer, data: dict[str, Any]) -> None:
        message = self.held.pop(str(data.get("id")), None)
        if message is None:
            return self.error(viewer, "not_found", "no such held message")
        approve = bool(data.get("approve"))
        message["status"] = "APPROVED" if approve else "REJECTED"
        if approve:
            message["published_at"] = self.clock()  # it takes its place in the history now
        self.store.update_message(message["id"], status=message["status"], published_at=message.get("published_at"))
        self._audit(viewer, "approve" if approve else "reject", message["id"])
        if approve:
            self._publish(message)
        self.broadcast("chat:moderated", {"id": message["id"], "status": message["status"]}, staff_only=True)

    def on_remove(self, viewer: Viewer, data: dict[str, Any]) -> None:
        message_id = str(data.get("id"))
        found = self._find(message_id)
        if found is None:
            return self.error(viewer, "not_found", "no such message")
        self.history.remove(found)
        self.store.update_message(message_id, status="REMOVED", pinned=0)
        if self.pinned and self.pinned["id"] == message_id:
            self.pinned = None
        self._audit(viewer, "remove", message_id)
        self.broadcast("chat:removed", {"id": message_id})

    def on_pin(self, viewer: Viewer, data: dict[str, Any]) -> None:
        message_id = data.get("id")
        found = None
        if message_id is not None:
            found = self._find(str(message_id))
            if found is None:
                return self.error(viewer, "not_found", "no such message")
        if self.pinned is not None:
            self.pinned["pinned"] = 0
            self.store.update_message(self.pinned["id"], pinned=0)
        self.pinned = found
        if found is not None:
            found["pinned"] = 1
            self.store.update_message(found["id"], pinned=1)
        self._audit(viewer, "pin", str(message_id))
        self.broadcast("chat:pinned", {"message": found and public(found)})

    def on_announce(self, viewer: Viewer, data: dict[str, Any]) -> None:
        """A card for everyone at once. It needs text, or a card with a title (which is then its text);
        a refused announcement reaches nobody."""
        text, card = data.get("text"), data.get("card")
        if text is not None and not isinstance(text, str):
            return self.error(viewer, "bad_request", "text must be a string")
        if card is not None:
            if not isinstance(card, dict) or any(
                    card.get(k) is not None and not isinstance(card.get(k), str) for k in ("title", "text", "url")):
                return self.error(viewer, "bad_request", "card must be {title, text, url} strings")
            card = {k: card[k] for k in ("title", "text", "url") if card.get(k)}
            if card.get("url") and not str(card["url"]).lower().startswith(("https://", "http://")):
                return self.error(viewer, "bad_request", "the card's url must be http(s)")
            if any(len(v) > self.policy.max_length * 4 for v in card.values()):
                return self.error(viewer, "bad_request", "the card's fields are too long")
        shown = (text or "").strip() or str((card or {}).get("title") or "").strip()
        if not shown:
            return self.error(viewer, "bad_request", "an announcement needs text, or a card with a title")
        verdict = self.policy.judge(shown, privileged=True, last_sent=None, now=self.clock())
        if verdict.action == "reject":
            return self.error(viewer, "rejected", verdict.reason)
        message = self._message(viewer, shown, "ANNOUNCEMENT", self.clock())
        # The card is kept (not sent in chat:message) so the chat replay can show the giving moment again.
        self.store.save_message({**message, "card": json.dumps(card)} if card else message)
        self._publish(message)
        self.broadcast("stream:announcement", {"text": shown, "card": card or None})
        self._audit(viewer, "announce", "", shown)

    def on_highlight(self, viewer: Viewer, data: dict[str, Any]) -> None:
        message_id = str(data.get("id"))
        found = self._find(message_id)
        if found is None:
            return self.error(viewer, "not_found", "no such message")
        found["highlighted"] = 1
        self.store.update_message(message_id, highlighted=1)
        self._audit(viewer, "highlight", message_id)
        self.broadcast("chat:highlighted", {"id": message_id})

    # -- bans and time-outs ------------------------------------------------------------------------
    def _targets(self, data: dict[str, Any]) -> tuple[str, dict[str, set[str]]] | None:
        """(name, identity -> addresses) a moderator means: by message id, or by name (people in the
        room now and recent authors, members included, staff never)."""
        found = None
        if data.get("id"):
            found = self._find(str(data["id"])) or self.held.get(str(data["id"]))
            if found is None:
                return None
        name = str(found["author"] if found else data.get("name", "")).strip()[:200]
        if not name:
            return None
        targets: dict[str, set[str]] = {}
        if found and found.get("author_viewer") and found.get("role") not in STAFF:
            targets.setdefault(found["author_viewer"], set()).add(found.get("author_address") or "")
        key = name_key(name)
        for other in self.viewers.values():
            if other.key == key and not other.staff and other.role != "listener":
                targets.setdefault(other.identity, set()).add(other.address)
        if not found:
            for identity, addresses in self.authors.named(name).items():
                if self.authors.roles.get(identity) not in STAFF:
                    targets.setdefault(identity, set()).update(addresses)
        return name, {i: {a for a in addrs if a} for i, addrs in targets.items()}

    def _sanction(self, viewer: Viewer, kind: str, data: dict[str, Any], seconds: float | None) -> None:
        resolved = self._targets(data)
        if resolved is None:
            return self.error(viewer, "bad_request" if not data.get("id") else "not_found",
                              "send a name (or the id of one of their messages)")
        name, targets = resolved
        addresses = sorted({a for addrs in targets.values() for a in addrs})
        by_address = bool(data.get("address"))
        if by_address and not addresses:
            return self.error(viewer, "not_found", f"no address is known for {name!r}: nobody by that name is "
                                                   "in the room or spoke lately")
        now = self.clock()
        sanction = Sanction(kind=kind, name=name, identities=sorted(targets), addresses=addresses,
                            address_ban=by_address, until=None if seconds is None else now + seconds,
                            created_at=now, moderator=viewer.name)
        self.sanctions.add(sanction)
        self.store.save_sanction(sanction.row(self.stream_id))
        self._audit(viewer, kind, name, seconds if kind == "timeout" else {"address": by_address})
        what = "banned" if kind == "ban" else f"timed out for {seconds:g} s"
        people = len(targets)
        text = (f"{name} is {what}: {people} viewer{'s' if people != 1 else ''} by that name"
                f"{'' if people else ' (nobody by that name is here or spoke lately; guests taking it are muted)'}.")
        if by_address:
            text += (" Address ban: every guest on that network is muted too. On a shared network such as the"
                     " church's Wi-Fi that is every guest there; members and staff can still speak.")
        self.broadcast("chat:banned" if kind == "ban" else "chat:timed_out",
                       {"name": name, "viewers": people, "address": by_address, "until": sanction.until,
                        "message": text}, staff_only=True)

    def on_timeout(self, viewer: Viewer, data: dict[str, Any]) -> None:
        seconds = data.get("seconds", 300)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 1 <= seconds <= 86400:
            return self.error(viewer, "bad_request", "send a name and 1..86400 seconds")
        self._sanction(viewer, "timeout", data, float(seconds))

    def on_ban(self, viewer: Viewer, data: dict[str, Any]) -> None:
        self._sanction(viewer, "ban", data, None)

    def on_unban(self, viewer: Viewer, data: dict[str, Any]) -> None:
        name = str(data.get("name", "")).strip()
        lifted = self.sanctions.lift(name) if name else []
        if not lifted:
            return self.error(viewer, "not_found", "no ban or time-out under that name")
        for sanction in lifted:
            self.store.delete_sanction(sanction.id)
        self._audit(viewer, "unban", name)
        self.broadcast("chat:unbanned", {"name": name, "lifted": len(lifted),
                                         "message": f"{name} may speak again."}, staff_only=True)


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
    "chat:unban": _Handler(Room.on_unban, True),
}
