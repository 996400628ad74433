"""Chat rooms across processes. One process owns each room (a Redis lease) and runs the real Room; every
process keeps its own sockets and relays their joins, frames and leaves to the owner, whose frames come back
on one channel per room (broadcasts once, targeted sends addressed to process and viewer), in the room's order.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from mediaserver.chat.protocol import ChatLimits, FrameError, frame, parse_frame
from mediaserver.chat.room import Room, Viewer
from mediaserver.cluster import messages as m
from mediaserver.cluster.lease import Lease
from mediaserver.cluster.publisher import Publisher

log = logging.getLogger(__name__)

Fanout = Callable[[bytes, bool], int]
# Opens the real Room of a stream (from SQLite) with the given fan-out; closes it again.
RoomOpener = Callable[[str, dict[str, Any], "str | None", Fanout], Awaitable[Room]]
RoomCloser = Callable[[Room], Awaitable[None]]


@dataclass(eq=False)
class RemoteViewer(Viewer):
    """A viewer whose socket is in some process (this one too): what the Room offers it goes there."""
    process: str = ""
    relay: Callable[[bytes], None] | None = None  # publishes on the room's channel from the owner

    def offer(self, text: bytes) -> bool:
        if self.dropped or self.relay is None:
            return False
        self.relay(m.encode("one", text, proc=self.process, id=self.id))
        return True

    def close(self, code: int, reason: str) -> None:
        self.close_code, self.close_reason = code, reason
        if self.relay is not None:
            self.relay(m.encode("close", proc=self.process, id=self.id, code=code, reason=reason))


@dataclass(eq=False)
class RoomLink:
    """This process's side of a room: its own sockets' viewers, relayed to whichever process owns the room.
    Offers the part of Room's surface that web/chat_ws.py uses."""
    stream_id: str
    settings: dict[str, Any]
    org_id: str | None
    limits: ChatLimits
    cluster: "ClusterChat"
    viewers: dict[str, Viewer] = field(default_factory=dict)
    owner: str | None = None        # the process we last relayed joins to (None: unknown, relay on next announce)
    stream: dict[str, Any] | None = None  # the stream row last seen, for a new owner's Room
    idle_since: float = field(default_factory=time.monotonic)

    def _to_owner(self, data: bytes, viewer: Viewer | None = None, *, join: bool = False) -> None:
        def sent(receivers: int) -> None:
            if receivers:
                return
            self.owner = None  # nobody listening: the next owner's announcement re-relays our joins
            if viewer is not None and not join and viewer.id in self.viewers:
                viewer.offer(_error("reconnecting", "the chat is reconnecting; send that again in a moment"))
        self.cluster.publisher.publish(m.to_owner(self.stream_id), data, sent)

    def join(self, viewer: Viewer) -> None:
        self.viewers[viewer.id] = viewer
        self._to_owner(m.encode("join", proc=self.cluster.process_id, viewer=m.viewer_header(viewer)), viewer,
                       join=True)

    def rejoin_all(self) -> None:
        for viewer in list(self.viewers.values()):
            self._to_owner(m.encode("join", proc=self.cluster.process_id, viewer=m.viewer_header(viewer)), viewer,
                           join=True)

    def handle(self, viewer: Viewer, raw: str) -> dict[str, Any] | None:
        """Auth frames stay here (the socket's side checks tokens); everything else goes to the owner."""
        try:
            event, data = parse_frame(raw, self.limits)
            if event == "auth":
                return data
        except FrameError:
            pass  # the owner's Room answers it, in order with everything else
        self._to_owner(m.encode("frame", raw.encode(), proc=self.cluster.process_id, id=viewer.id), viewer)
        return None

    def reidentify(self, viewer: Viewer, *, role: str, name: str, identity: str, viewer_token: str | None) -> None:
        viewer.role, viewer.identity, viewer.viewer_token = role, identity, viewer_token  # staff_only locally
        self._to_owner(m.encode("reid", proc=self.cluster.process_id, id=viewer.id, role=role, name=name,
                                identity=identity, viewer_token=viewer_token, caller=m.caller_to_dict(viewer.caller)),
                       viewer)

    def error(self, viewer: Viewer, code: str, message: str) -> None:
        self._to_owner(m.encode("error", proc=self.cluster.process_id, id=viewer.id, code=code, message=message),
                       viewer)

    def leave(self, viewer: Viewer) -> None:
        if self.viewers.pop(viewer.id, None) is not None:
            self._to_owner(m.encode("leave", proc=self.cluster.process_id, id=viewer.id))
            if not self.viewers:
                self.idle_since = time.monotonic()

    def apply_stream(self, stream: dict[str, Any]) -> None:
        self.stream = stream
        self._to_owner(m.encode("stream", stream=stream))

    def deliver(self, message: m.Message) -> None:
        """A frame or close from the owner: to our own viewers only."""
        header = message.header
        if message.op == "all":
            staff_only = bool(header.get("staff"))
            for viewer in list(self.viewers.values()):
                if not staff_only or viewer.staff:
                    viewer.offer(message.body)
        elif message.op in ("one", "close") and header.get("proc") == self.cluster.process_id:
            target = self.viewers.get(str(header.get("id")))
            if target is None:
                return
            if message.op == "one":
                target.offer(message.body)
            else:
                target.close(int(header.get("code", 1000)), str(header.get("reason", "")))
        elif message.op == "owner":
            owner = str(header.get("proc"))
            if owner != self.owner and owner != self.cluster.process_id:
                self.owner = owner
                self.rejoin_all()


def _error(code: str, message: str) -> bytes:
    return frame("chat:error", {"code": code, "message": message})


@dataclass(eq=False)
class OwnedRoom:
    """A room this process owns: the real Room, its lease, and the relayed viewers in it."""
    room: Room
    lease: Lease
    renewer: asyncio.Task[None] | None = None
    empty_since: float = field(default_factory=time.monotonic)


class ClusterChat:
    """This process's part of the cluster's chat: its RoomLinks, the rooms it owns, one Redis subscriber."""

    def __init__(self, redis: Redis, process_id: str, open_room: RoomOpener, close_room: RoomCloser, *,
                 limits: ChatLimits, room_owner: bool = True, lease_seconds: float = 5.0, renew_seconds: float = 1.5,
                 idle_close: float = 120.0, preferred_owner: bool = False, defer_seconds: float = 0.0) -> None:
        """preferred_owner: this process takes the rooms others ask it to (`serve --workers`: the origin, so its
        analytics and metrics see every room while it runs). defer_seconds: before owning a room itself, this
        process asks the preferred owner and waits this long for it (a web worker; it owns rooms only when the
        origin is gone)."""
        self.redis, self.process_id = redis, process_id
        self.open_room, self.close_room = open_room, close_room
        self.limits, self.room_owner = limits, room_owner
        self.lease_seconds, self.renew_seconds, self.idle_close = lease_seconds, renew_seconds, idle_close
        self.preferred_owner, self.defer_seconds = preferred_owner, defer_seconds
        self.publisher = Publisher(redis)
        self.links: dict[str, RoomLink] = {}
        self.owned: dict[str, OwnedRoom] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._subscribed: dict[str, asyncio.Event] = {}
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._claims: set[asyncio.Task[None]] = set()

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> None:
        self._pubsub = self.redis.pubsub()
        # Always subscribed to something, so the reader has a connection to read from.
        await self._pubsub.subscribe(f"{m.PREFIX}process:{self.process_id}")
        if self.preferred_owner:
            await self._pubsub.subscribe(m.CLAIMS)
        self.publisher.start()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read()), loop.create_task(self._tend())]

    async def stop(self) -> None:
        for link in self.links.values():
            for viewer in list(link.viewers.values()):
                viewer.close(1001, "server shutting down")
        for stream_id in list(self.owned):
            await self._step_down(stream_id)
        await self.publisher.stop()
        for task in [*self._tasks, *self._claims]:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pubsub is not None:
            await self._pubsub.aclose()

    async def _subscribe(self, channel: str) -> None:
        """Subscribe and wait until Redis confirmed it (so what is published next reaches us)."""
        confirmed = self._subscribed.setdefault(channel, asyncio.Event())
        await self._pubsub.subscribe(channel)
        await asyncio.wait_for(confirmed.wait(), 10.0)

    async def _unsubscribe(self, channel: str) -> None:
        self._subscribed.pop(channel, None)
        await self._pubsub.unsubscribe(channel)

    # -- the socket's side ---------------------------------------------------------------------------
    async def _link_locked(self, stream_id: str, settings: dict[str, Any], org_id: str | None) -> RoomLink:
        """This process's link to the room, made (and subscribed to the room's frames) if new. Under the lock."""
        link = self.links.get(stream_id)
        if link is None:
            link = RoomLink(stream_id, settings, org_id, self.limits, self)
            await self._subscribe(m.from_owner(stream_id))
            self.links[stream_id] = link
        return link

    async def link(self, stream_id: str, settings: dict[str, Any], org_id: str | None) -> RoomLink:
        lock = self._locks.setdefault(stream_id, asyncio.Lock())
        async with lock:
            link = await self._link_locked(stream_id, settings, org_id)
            link.settings, link.org_id = settings, org_id
            if stream_id not in self.owned:
                holder = await Lease(self.redis, m.lease_key(stream_id), self.process_id, self.lease_seconds).holder()
                if holder is None and (self.room_owner or self.defer_seconds > 0):
                    # A process that may not own rooms (a web worker on another host) still asks the origin to.
                    if not await self._claimed_by_preferred(link) and self.room_owner:
                        await self._take(link)
                elif link.owner is None:
                    link.owner = holder
            return link

    async def _claimed_by_preferred(self, link: RoomLink) -> bool:
        """Ask the preferred owner to take the room; True once someone holds it. The joins that follow find the
        owner through its announcement (RoomLink.deliver "owner"), so link.owner is left for that."""
        if self.defer_seconds <= 0:
            return False
        lease = Lease(self.redis, m.lease_key(link.stream_id), self.process_id, self.lease_seconds)
        try:
            listeners = await self.redis.publish(m.CLAIMS, m.encode(
                "claim", stream=link.stream_id, settings=link.settings, org=link.org_id, row=link.stream))
        except (RedisError, OSError) as exc:
            log.warning("could not ask for an owner of %s: %s", link.stream_id, exc)
            return False
        if not listeners:
            return False
        deadline = time.monotonic() + self.defer_seconds
        while time.monotonic() < deadline:
            if await lease.holder() is not None:
                return True
            await asyncio.sleep(0.05)
        return False

    async def _claim(self, stream_id: str, settings: dict[str, Any], org_id: str | None,
                     row: dict[str, Any] | None) -> None:
        """Another process asked us (the preferred owner) to own a room."""
        lock = self._locks.setdefault(stream_id, asyncio.Lock())
        async with lock:
            link = await self._link_locked(stream_id, settings, org_id)
            if row is not None and link.stream is None:
                link.stream = row
            if stream_id not in self.owned and await Lease(
                    self.redis, m.lease_key(stream_id), self.process_id, self.lease_seconds).holder() is None:
                await self._take(link)

    # -- owning rooms --------------------------------------------------------------------------------
    async def _take(self, link: RoomLink) -> bool:
        """Try to become the room's owner: the lease, then the Room from SQLite, then listen, then say so."""
        stream_id = link.stream_id
        lease = Lease(self.redis, m.lease_key(stream_id), self.process_id, self.lease_seconds)
        if not await lease.acquire():
            return False
        out = m.from_owner(stream_id)

        def fanout(text: bytes, staff_only: bool) -> int:
            self.publisher.publish(out, m.encode("all", text, staff=staff_only))
            return len(room.viewers)

        room = await self.open_room(stream_id, link.settings, link.org_id, fanout)
        if link.stream is not None:
            room.apply_stream(link.stream)
        owned = OwnedRoom(room, lease)
        self.owned[stream_id] = owned
        await self._subscribe(m.to_owner(stream_id))
        owned.renewer = asyncio.get_running_loop().create_task(self._renew(stream_id, owned))
        link.owner = self.process_id
        self.publisher.publish(out, m.encode("owner", proc=self.process_id))
        link.rejoin_all()  # our own sockets, through Redis like everyone's, so their order is the room's
        log.info("process %s owns the chat room of %s", self.process_id, stream_id)
        return True

    async def _renew(self, stream_id: str, owned: OwnedRoom) -> None:
        while True:
            await asyncio.sleep(self.renew_seconds)
            try:
                kept = await owned.lease.renew()
            except (RedisError, OSError) as exc:
                log.warning("could not renew the chat lease of %s: %s", stream_id, exc)
                continue
            idle = not owned.room.viewers and time.monotonic() - owned.empty_since > self.idle_close
            if not kept or idle:
                if not kept:
                    log.warning("process %s lost the chat room of %s", self.process_id, stream_id)
                asyncio.get_running_loop().create_task(self._step_down(stream_id))
                return

    async def _step_down(self, stream_id: str) -> None:
        owned = self.owned.pop(stream_id, None)
        if owned is None:
            return
        if owned.renewer is not None and owned.renewer is not asyncio.current_task():
            owned.renewer.cancel()
        try:
            await self._unsubscribe(m.to_owner(stream_id))
            await self.close_room(owned.room)
            await owned.lease.release()
        except (RedisError, OSError) as exc:
            log.warning("stepping down from %s: %s", stream_id, exc)
        link = self.links.get(stream_id)
        if link is not None and link.owner == self.process_id:
            link.owner = None

    def _on_owner_message(self, stream_id: str, message: m.Message) -> None:
        owned = self.owned.get(stream_id)
        if owned is None:
            return
        room, header = owned.room, message.header
        if message.op == "stream":
            if isinstance(header.get("stream"), dict):
                room.apply_stream(header["stream"])
            return
        proc = str(header.get("proc", ""))
        if message.op == "join":
            fields = m.check_viewer(header)
            old = room.viewers.get(fields["id"])
            if old is not None:  # joined again (a new owner asked everyone): same socket, fresh welcome
                room.viewers.pop(fields["id"], None)
            viewer = RemoteViewer(
                fields["asked"], fields["role"], fields["address"], fields["user_agent"], identity=fields["identity"],
                viewer_token=fields.get("viewer_token"), id=fields["id"], joined_at=float(fields["joined_at"]),
                caller=m.caller_from_dict(fields.get("caller")), queue_size=1, process=proc,
                relay=lambda data: self.publisher.publish(m.from_owner(stream_id), data))
            room.join(viewer)
            return
        known = room.viewers.get(str(header.get("id")))
        if not isinstance(known, RemoteViewer) or known.process != proc:
            return
        viewer = known
        if message.op == "frame":
            room.handle(viewer, message.body.decode("utf-8", "replace"))
        elif message.op == "reid":
            viewer.caller = m.caller_from_dict(header.get("caller"))
            room.reidentify(viewer, role=str(header.get("role")), name=str(header.get("name") or ""),
                            identity=str(header.get("identity")), viewer_token=header.get("viewer_token"))
        elif message.op == "error":
            room.error(viewer, str(header.get("code")), str(header.get("message")))
        elif message.op == "leave":
            room.leave(viewer)
            if not room.viewers:
                owned.empty_since = time.monotonic()

    # -- background ----------------------------------------------------------------------------------
    async def _read(self) -> None:
        in_suffix, out_suffix = ":in", ":out"
        while True:
            try:
                message = await self._pubsub.get_message(ignore_subscribe_messages=False, timeout=1.0)
            except (RedisError, OSError) as exc:
                log.warning("chat relay lost Redis (%s); retrying", exc)
                await asyncio.sleep(1.0)
                continue
            if message is None:
                continue
            channel = message["channel"].decode()
            if message["type"] == "subscribe":
                event = self._subscribed.get(channel)
                if event is not None:
                    event.set()
                continue
            if message["type"] != "message" or not channel.startswith(m.PREFIX):
                continue
            try:
                decoded = m.decode(message["data"])
                if channel == m.CLAIMS:
                    header = decoded.header
                    settings, org, row = header.get("settings"), header.get("org"), header.get("row")
                    task = asyncio.get_running_loop().create_task(self._claim(
                        str(header.get("stream")), settings if isinstance(settings, dict) else {},
                        org if isinstance(org, str) else None, row if isinstance(row, dict) else None))
                    self._claims.add(task)
                    task.add_done_callback(self._claims.discard)
                elif channel.endswith(in_suffix):
                    self._on_owner_message(channel[len(m.PREFIX):-len(in_suffix)], decoded)
                elif channel.endswith(out_suffix):
                    link = self.links.get(channel[len(m.PREFIX):-len(out_suffix)])
                    if link is not None:
                        link.deliver(decoded)
            except m.MessageError as exc:
                log.warning("ignoring a relay message on %s: %s", channel, exc)
            except Exception:
                log.exception("relay message on %s failed", channel)

    async def _tend(self) -> None:
        """Take over rooms whose owner is gone (lease expired) while we have viewers in them; forget idle links."""
        while True:
            await asyncio.sleep(min(1.0, self.renew_seconds))
            for stream_id, link in list(self.links.items()):
                try:
                    if link.viewers and stream_id not in self.owned and self.room_owner:
                        lock = self._locks.setdefault(stream_id, asyncio.Lock())
                        async with lock:
                            if stream_id not in self.owned and await Lease(
                                    self.redis, m.lease_key(stream_id), self.process_id,
                                    self.lease_seconds).holder() is None:
                                await self._take(link)
                    elif link.viewers and stream_id not in self.owned and self.defer_seconds > 0:
                        # Never an owner ourselves: ask the preferred one again (the origin came back).
                        if await Lease(self.redis, m.lease_key(stream_id), self.process_id,
                                       self.lease_seconds).holder() is None:
                            await self._claimed_by_preferred(link)
                    elif not link.viewers and time.monotonic() - link.idle_since > self.idle_close:
                        lock = self._locks.setdefault(stream_id, asyncio.Lock())
                        async with lock:
                            if not link.viewers and self.links.get(stream_id) is link:
                                del self.links[stream_id]
                                await self._unsubscribe(m.from_owner(stream_id))
                except (RedisError, OSError, asyncio.TimeoutError) as exc:
                    log.warning("tending the chat room of %s: %s", stream_id, exc)


ChatRoom = Room | RoomLink  # what a socket talks to: the Room itself (one process) or its link (a cluster)
