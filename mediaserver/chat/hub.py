"""The live rooms of every stream: opened on first join with the organization's moderation settings,
told when a stream goes live or ends, and given new settings the moment an organization changes them.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Callable

from mediaserver.chat.room import ChatLimits, Room
from mediaserver.chat.store import ChatStore
from mediaserver.events import Event, LocalEventBus
from mediaserver.chat.moderation import ModerationPolicy

if TYPE_CHECKING:
    from mediaserver.cluster.chat_relay import ChatRoom, ClusterChat


# Across processes: a change made through one process's API reaches the rooms other processes own.
SETTINGS_EVENT = "chat.org_settings"
STREAM_EVENT = "chat.stream_switches"


class ChatHub:
    """Rooms by stream id; `limits` apply to every room."""

    def __init__(self, store: ChatStore, bus: LocalEventBus, limits: ChatLimits | None = None,
                 idle_close: float = 120.0) -> None:
        self.store = store
        self.limits = limits or ChatLimits()
        # A room nobody is in is closed after this many seconds (its state is in SQLite; the next join reloads
        # it), so the hub holds the rooms in use, not every room joined since the server started.
        self.idle_close = idle_close
        self.rooms: dict[str, Room] = {}
        self._closing: dict[str, asyncio.TimerHandle | asyncio.Task[None]] = {}  # pending idle checks
        self._locks: dict[str, asyncio.Lock] = {}
        # Set when processes share rooms over Redis: sockets then talk to a RoomLink, and `rooms` holds only
        # the rooms this process owns (their viewers are every process's).
        self.cluster: ClusterChat | None = None
        self.bus = bus
        bus.subscribe(self._on_event)

    async def room(self, stream_id: str, org_settings: dict[str, Any], org_id: str | None = None) -> ChatRoom:
        if self.cluster is not None:
            return await self.cluster.link(stream_id, org_settings, org_id)
        return await self.local_room(stream_id, org_settings, org_id)

    async def local_room(self, stream_id: str, org_settings: dict[str, Any], org_id: str | None = None) -> Room:
        lock = self._locks.setdefault(stream_id, asyncio.Lock())
        async with lock:
            room = self.rooms.get(stream_id)
            if room is None:
                room = Room(stream_id, self.store, ModerationPolicy.from_settings(org_settings), limits=self.limits,
                            org_id=org_id)
                await room.start()
                self.rooms[stream_id] = room
            return room

    async def open_owned(self, stream_id: str, org_settings: dict[str, Any], org_id: str | None,
                         fanout: Callable[[bytes, bool], int]) -> Room:
        """A room this process now owns for the cluster, loaded from SQLite, broadcasting through `fanout`."""
        await self.store.flush()
        room = Room(stream_id, self.store, ModerationPolicy.from_settings(org_settings), limits=self.limits,
                    org_id=org_id, fanout=fanout)
        await room.start()
        self.rooms[stream_id] = room
        return room

    async def close_owned(self, room: Room) -> None:
        if self.rooms.get(room.stream_id) is room:
            del self.rooms[room.stream_id]
        await room.stop()
        await self.store.flush()

    def release(self, stream_id: str) -> None:
        """Someone left the room: close it later if it is still empty then."""
        if self.cluster is not None:
            return  # the owner closes its idle rooms (mediaserver/cluster/chat_relay.py)
        room = self.rooms.get(stream_id)
        if room is None or room.viewers or stream_id in self._closing:
            return
        loop = asyncio.get_running_loop()

        def check() -> None:
            task = loop.create_task(self._close_if_idle(stream_id))
            self._closing[stream_id] = task
            task.add_done_callback(lambda _: self._closing.pop(stream_id, None))

        self._closing[stream_id] = loop.call_later(self.idle_close, check)

    async def _close_if_idle(self, stream_id: str) -> None:
        lock = self._locks.get(stream_id)
        if lock is None:
            return
        async with lock:
            room = self.rooms.get(stream_id)
            if room is None or room.viewers:
                return
            del self.rooms[stream_id]
            await room.stop()
            await self.store.flush()  # on disk before the next join (under this lock) loads the room again
        if not lock.locked() and self.rooms.get(stream_id) is None:
            self._locks.pop(stream_id, None)

    def apply_settings_here(self, org_id: str, org_settings: dict[str, Any]) -> None:
        for room in self.rooms.values():
            if room.org_id == org_id:
                room.apply_policy(ModerationPolicy.from_settings(org_settings))

    def apply_settings(self, org_id: str, org_settings: dict[str, Any]) -> int:
        """An organization's chat settings changed: its open rooms follow at once. Returns how many."""
        if self.cluster is not None:  # the rooms are owned all over the cluster: every process applies it
            self.bus.publish(Event(SETTINGS_EVENT, "", {"org_id": org_id, "settings": org_settings}))
        rooms = [room for room in self.rooms.values() if room.org_id == org_id]
        for room in rooms:
            room.apply_policy(ModerationPolicy.from_settings(org_settings))
        return len(rooms)

    def apply_stream(self, stream: dict[str, Any]) -> None:
        """A stream's chat/reaction switches changed (or a socket brought a fresh row): its room follows."""
        if self.cluster is not None:
            self.bus.publish(Event(STREAM_EVENT, stream["id"], {"stream": stream}))
        room = self.rooms.get(stream["id"])
        if room is not None:
            room.apply_stream(stream)

    async def _on_event(self, event: Event) -> None:
        if event.name == SETTINGS_EVENT and self.cluster is not None:
            self.apply_settings_here(str(event.data.get("org_id")), dict(event.data.get("settings") or {}))
            return
        room = self.rooms.get(event.stream_id)
        if event.name == STREAM_EVENT and room is not None and isinstance(event.data.get("stream"), dict):
            room.apply_stream(event.data["stream"])
        if room is None:
            return
        if event.name == "stream.live":
            room.broadcast("stream:live", {"stream_id": event.stream_id})
            room.system_message("The service is live. Welcome!")
        elif event.name in ("stream.ended", "stream.failed"):
            room.broadcast("stream:ended", {"stream_id": event.stream_id})
            room.system_message("The service has ended. Thank you for worshipping with us.")

    async def stop(self) -> None:
        if self.cluster is not None:
            await self.cluster.stop()
        for pending in list(self._closing.values()):
            pending.cancel()
        for room in self.rooms.values():
            for viewer in list(room.viewers.values()):
                viewer.close(1001, "server shutting down")  # ends the socket's sender
            await room.stop()
        await self.store.stop()
