"""What chat processes say to each other over Redis, as bytes: a JSON header line, then an optional body
(a raw frame from a socket, or a frame the Room encoded once). Plain functions, no IO."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mediaserver.access import Caller, Role

PREFIX = "ms:chat:"


class MessageError(ValueError):
    """A relay message that can't be read (another version of the server, or garbage on the channel)."""


# Where processes ask the preferred owner (the origin of `serve --workers`) to take a room.
CLAIMS = f"{PREFIX}claims"


def to_owner(stream_id: str) -> str:
    """The channel the owner of a room listens on: joins, frames, leaves from every process."""
    return f"{PREFIX}{stream_id}:in"


def from_owner(stream_id: str) -> str:
    """The channel every process with viewers in the room listens on: frames and closes, in the room's order."""
    return f"{PREFIX}{stream_id}:out"


def lease_key(stream_id: str) -> str:
    return f"{PREFIX}{stream_id}:owner"


@dataclass(frozen=True, slots=True)
class Message:
    op: str
    header: dict[str, Any]
    body: bytes = b""


def encode(op: str, body: bytes = b"", **header: Any) -> bytes:
    return json.dumps({"op": op, **header}, separators=(",", ":"), default=str).encode() + b"\n" + body


def decode(data: bytes) -> Message:
    head, sep, body = data.partition(b"\n")
    if not sep:
        raise MessageError(f"no header line in {data[:60]!r}")
    try:
        header = json.loads(head)
    except ValueError as exc:
        raise MessageError(f"bad header {head[:60]!r}") from exc
    if not isinstance(header, dict) or not isinstance(header.get("op"), str):
        raise MessageError(f"header without op: {head[:60]!r}")
    return Message(header.pop("op"), header, body)


def caller_to_dict(caller: Caller | None) -> dict[str, Any] | None:
    if caller is None:
        return None
    return {"role": caller.role.value, "org_id": caller.org_id, "name": caller.name, "viewer_id": caller.viewer_id,
            "playback_token": caller.playback_token, "problem": caller.problem}


def caller_from_dict(data: Any) -> Caller | None:
    if not isinstance(data, dict):
        return None
    try:
        role = Role(data.get("role"))
    except ValueError as exc:
        raise MessageError(f"unknown caller role {data.get('role')!r}") from exc
    return Caller(role, org_id=data.get("org_id"), name=data.get("name"), viewer_id=data.get("viewer_id"),
                  playback_token=data.get("playback_token"), problem=data.get("problem"))


# The attributes of a socket's viewer that the owner's Room needs (moderation, names, visibility, analytics).
VIEWER_FIELDS = ("id", "role", "address", "user_agent", "identity", "viewer_token", "joined_at", "asked")


def viewer_header(viewer: Any) -> dict[str, Any]:
    fields = {name: getattr(viewer, name) for name in VIEWER_FIELDS}
    fields["caller"] = caller_to_dict(viewer.caller)
    return fields


def check_viewer(header: dict[str, Any]) -> dict[str, Any]:
    """The viewer fields of a join, type-checked (a bad one raises MessageError)."""
    viewer = header.get("viewer")
    if not isinstance(viewer, dict):
        raise MessageError("join without viewer")
    for name in ("id", "role", "address", "user_agent", "identity", "asked"):
        if not isinstance(viewer.get(name), str):
            raise MessageError(f"join: viewer.{name} must be a string")
    if not isinstance(viewer.get("joined_at"), (int, float)):
        raise MessageError("join: viewer.joined_at must be a number")
    if viewer.get("viewer_token") is not None and not isinstance(viewer["viewer_token"], str):
        raise MessageError("join: viewer.viewer_token must be a string")
    return viewer
