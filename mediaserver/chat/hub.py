"""The live rooms of every stream: opened on first join with the organization's moderation settings,
told when a stream goes live or ends, and given new settings the moment an organization changes them.
"""
from __future__ import annotations

import asyncio
from typing import Any

from mediaserver.chat.room import ChatLimits, Room
from mediaserver.chat.store import ChatStore
from mediaserver.events import Event, LocalEventBus
from mediaserver.chat.moderation import ModerationPolicy


class ChatHub:
    """Rooms by stream id; `limits` apply to every room."""

    def __init__(self, store: ChatStore, bus: LocalEventBus, limits: ChatLimits | None = None) -> None:
        self.store = store
        self.limits = limits or ChatLimits()
        self.rooms: dict[str, Room] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        bus.subscribe(self._on_event)

    async def room(self, stream_id: str, org_settings: dict[str, Any], org_id: str | None = None) -> Room:
        lock = self._locks.setdefault(stream_id, asyncio.Lock())
        async with lock:
            room = self.rooms.get(stream_id)
            if room is None:
                room = Room(stream_id, self.store, ModerationPolicy.from_settings(org_settings), limits=self.limits,
                            org_id=org_id)
                await room.start()
                self.rooms[stream_id] = room
            return room

    def apply_settings(self, org_id: str, org_settings: dict[str, Any]) -> int:
        """An organization's chat settings changed: its open rooms follow at once. Returns how many."""
        rooms = [room for room in self.rooms.values() if room.org_id == org_id]
        for room in rooms:
            room.apply_policy(ModerationPolicy.from_settings(org_settings))
        return len(rooms)

    def apply_stream(self, stream: dict[str, Any]) -> None:
        """A stream's chat/reaction switches changed (or a socket brought a fresh row): its room follows."""
        room = self.rooms.get(stream["id"])
        if room is not None:
            room.apply_stream(stream)

    async def _on_event(self, event: Event) -> None:
        room = self.rooms.get(event.stream_id)
        if room is None:
            return
        if event.name == "stream.live":
            room.broadcast("stream:live", {"stream_id": event.stream_id})
            room.system_message("The service is live. Welcome!")
        elif event.name in ("stream.ended", "stream.failed"):
            room.broadcast("stream:ended", {"stream_id": event.stream_id})
            room.system_message("The service has ended. Thank you for worshipping with us.")

    async def stop(self) -> None:
        for room in self.rooms.values():
            for viewer in list(room.viewers.values()):
                viewer.close(1001, "server shutting down")  # ends the socket's sender
            await room.stop()
        await self.store.stop()
