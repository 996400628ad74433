"""Bans and time-outs in one room, sans-IO: who they follow and who they mute.

A sanction follows viewer identities (a per-browser id, or a member's token), not addresses: a church's
whole congregation may share one. Guests are also muted when they take the sanctioned name again, or a
name one letter away from it on the sanctioned guest's network; and by an explicit address ban, every
guest on that network. Staff are never muted; members only by a sanction on their own identity.
"""
from __future__ import annotations

import json
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Iterable

from mediaserver.chat.names import name_key
from mediaserver.chat.text import within_one_edit

GENERATED_NAME = re.compile(r"Guest \d{4}")  # the name a refused guest gets: says nothing about who it is
MIN_LOOKALIKE_KEY = 3                       # "Al"/"Ali" are too short to call one a disguise of the other


@dataclass
class Sanction:
    kind: str                      # "ban" or "timeout"
    name: str                      # as the moderator wrote it
    identities: list[str]          # the viewer identities it follows
    addresses: list[str]           # where those identities were seen (look-alike names, address bans)
    address_ban: bool = False      # every guest on `addresses`
    until: float | None = None     # None: for the rest of the stream
    created_at: float = 0.0
    moderator: str = ""
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    name_key: str = ""

    def __post_init__(self) -> None:
        self.name_key = self.name_key or name_key(self.name)

    def active(self, now: float) -> bool:
        return self.until is None or self.until > now

    def mutes(self, *, identity: str, key: str, address: str, guest: bool) -> bool:
        """key: name_key() of the viewer's name."""
        if identity in self.identities:
            return True
        if not guest:
            return False
        if self.address_ban and address in self.addresses:
            return True
        if GENERATED_NAME.fullmatch(self.name.strip()):
            return False
        if key == self.name_key:
            return True
        return (address in self.addresses and len(self.name_key) >= MIN_LOOKALIKE_KEY
                and within_one_edit(key, self.name_key))

    def row(self, stream_id: str) -> dict[str, Any]:
        return {"id": self.id, "stream_id": stream_id, "kind": self.kind, "name": self.name, "name_key": self.name_key,
                "identities": json.dumps(self.identities), "addresses": json.dumps(self.addresses),
                "address_ban": int(self.address_ban), "until": self.until, "created_at": self.created_at,
                "moderator": self.moderator}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Sanction":
        return cls(kind=row["kind"], name=row["name"], identities=list(json.loads(row["identities"] or "[]")),
                   addresses=list(json.loads(row["addresses"] or "[]")), address_ban=bool(row["address_ban"]),
                   until=row["until"], created_at=row["created_at"] or 0.0, moderator=row["moderator"] or "",
                   id=row["id"], name_key=row["name_key"] or "")


class Sanctions:
    """The room's sanctions in force."""

    def __init__(self, items: Iterable[Sanction] = ()) -> None:
        self.items: dict[str, Sanction] = {s.id: s for s in items}

    def add(self, sanction: Sanction) -> None:
        self.items[sanction.id] = sanction

    def muting(self, *, identity: str, name: str, address: str, guest: bool, now: float) -> Sanction | None:
        """The sanction that mutes this viewer now, if any (expired ones are forgotten)."""
        found: Sanction | None = None
        key = name_key(name) if self.items else ""
        for sanction in list(self.items.values()):
            if not sanction.active(now):
                del self.items[sanction.id]
            elif sanction.mutes(identity=identity, key=key, address=address, guest=guest):
                if found is None or found.until is not None and (sanction.until is None or sanction.until > found.until):
                    found = sanction  # the longest one says how long
        return found

    def lift(self, name: str) -> list[Sanction]:
        """Every sanction made under this name (or its look-alikes of the same key)."""
        key = name_key(name)
        lifted = [s for s in self.items.values() if s.name_key == key]
        for sanction in lifted:
            del self.items[sanction.id]
        return lifted


class Authors:
    """Who spoke lately under which name: name key -> identity -> addresses, so a moderator can ban a
    name after its owner left. Bounded: the least recently heard names are forgotten first."""

    def __init__(self, limit: int = 5000, per_name: int = 50) -> None:
        self.limit, self.per_name = limit, per_name
        self._names: OrderedDict[str, dict[str, set[str]]] = OrderedDict()
        self.roles: dict[str, str] = {}  # identity -> role, so staff are never resolved into a sanction
        self.protected_keys: set[str] = set()  # names members and staff spoke under: no guest may take them

    def heard(self, name: str, identity: str, address: str | None, role: str) -> None:
        if not identity:
            return
        key = name_key(name)
        entry = self._names.setdefault(key, {})
        if identity not in entry and len(entry) >= self.per_name:
            entry.pop(next(iter(entry)))  # a common name: the oldest of its speakers goes
        addresses = entry.setdefault(identity, set())
        if address and len(addresses) < self.per_name:
            addresses.add(address)
        self._names.move_to_end(key)
        self.roles[identity] = role
        if role != "guest":
            self.protected_keys.add(key)
        while len(self._names) > self.limit:
            old_key, dropped = self._names.popitem(last=False)
            self.protected_keys.discard(old_key)
            for old in dropped:
                self.roles.pop(old, None)

    def named(self, name: str) -> dict[str, set[str]]:
        return self._names.get(name_key(name), {})
