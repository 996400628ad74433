"""A stream's chat moderation record under /api: the audit log (who removed, pinned, timed out... what, when)
and the bans and time-outs in force. Thin: the stream's owner check (another organization gets 404), the chat
store read off the loop after what the rooms queued is written. Moderating itself runs over the room's socket."""
from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from web.api import find_stream, iso
from web.keys import CHAT, CONFIG

AUDIT_LIMIT = 1000  # the newest entries; a long service with a busy team stays well under this


def _detail(text: str | None) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text


def audit_view(row: dict[str, Any], messages: dict[str, dict[str, str]]) -> dict[str, Any]:
    return {"at": iso(row["at"]), "moderator": row["moderator"] or "", "action": row["action"],
            "target": row["target"] or "", "detail": _detail(row["detail"]),
            "message": messages.get(row["target"] or "")}


def read_audit(store: Any, database: Path, stream_id: str) -> tuple[list[dict[str, Any]], dict[str, dict[str, str]]]:
    """The stream's newest audit rows, and the messages they name (removed ones too: the log says what went)."""
    rows = store.audit_log(stream_id)[-AUDIT_LIMIT:]
    ids = sorted({r["target"] for r in rows if r["target"]})
    messages: dict[str, dict[str, str]] = {}
    # A read-only connection of its own: the chat store's is busy writing batches.
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
    try:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for mid, text, author in conn.execute(
                    f"SELECT id, text, author FROM chat_messages WHERE stream_id = ? AND id IN ({', '.join('?' * len(chunk))})",
                    [stream_id, *chunk]):
                messages[mid] = {"text": text or "", "author": author or ""}
    finally:
        conn.close()
    return rows, messages


def sanction_view(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "kind": row["kind"], "name": row["name"], "until": iso(row["until"]),
            "created_at": iso(row["created_at"]), "moderator": row["moderator"] or "",
            "address_ban": bool(row["address_ban"]), "viewers": len(json.loads(row["identities"] or "[]"))}


async def audit(request: web.Request) -> web.Response:
    stream = await find_stream(request)
    store = request.app[CHAT].store
    await store.flush()  # actions of the last moment are queued, not yet on disk
    rows, messages = await asyncio.to_thread(read_audit, store, request.app[CONFIG].data_path / "mediaserver.db",
                                             stream["id"])
    return web.json_response({"stream_id": stream["id"], "entries": [audit_view(r, messages) for r in rows]})


async def sanctions(request: web.Request) -> web.Response:
    stream = await find_stream(request)
    store = request.app[CHAT].store
    await store.flush()
    rows = await asyncio.to_thread(store.sanctions, stream["id"], time.time())
    return web.json_response({"stream_id": stream["id"], "sanctions": [sanction_view(r) for r in rows]})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/streams/{stream_id}/chat/audit", audit)
    app.router.add_get("/api/streams/{stream_id}/chat/sanctions", sanctions)
