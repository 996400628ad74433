"""Simulcast targets of a stream and each push's state: PENDING -> CONNECTING -> LIVE, RECONNECTING after a
failure (with backoff), FAILED after too many failures in a row. Sans-IO but for SimulcastStore (SQLite).

A target is YouTube, Facebook or any RTMP/RTMPS server URL plus a stream key; the key is stored sealed by
mediaserver/secret_box.py and never leaves the server again. The pushes themselves: mediaserver/simulcast_push.py."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from mediaserver.db import Database, new_id

STATUSES = ("PENDING", "CONNECTING", "LIVE", "RECONNECTING", "FAILED")
KINDS = ("youtube", "facebook", "rtmp")
# Where a platform takes RTMP(S) when the target gives no URL of its own.
DEFAULT_URLS = {
    "youtube": "rtmp://a.rtmp.youtube.com/live2",
    "facebook": "rtmps://live-api-s.facebook.com:443/rtmp",
}


SOURCE = "source"  # a target's rendition: the encoder's own media, as received


class TargetError(ValueError):
    """A target's fields can't be used; the message names the field."""


def target_url(kind: str, url: str | None) -> str:
    """The target's server URL (rtmp:// or rtmps://, a host), defaulted for a platform."""
    if kind not in KINDS:
        raise TargetError(f"kind: one of {', '.join(KINDS)}, not {kind!r}")
    chosen = url or DEFAULT_URLS.get(kind)
    if not chosen:
        raise TargetError("url: an rtmp:// or rtmps:// server URL is required for kind rtmp")
    parts = urlsplit(chosen)
    if parts.scheme not in ("rtmp", "rtmps") or not parts.hostname:
        raise TargetError(f"url: an rtmp:// or rtmps:// URL with a host, not {chosen!r}")
    if any(c.isspace() for c in chosen) or "?" in chosen or "#" in chosen:
        raise TargetError("url: no spaces, query or fragment (the key goes in the key field)")
    return chosen.rstrip("/")


def check_rendition(rendition: str, ladder: list[str]) -> str:
    """A target's rendition: SOURCE or the name of a rung of the stream's ladder."""
    if rendition != SOURCE and rendition not in ladder:
        raise TargetError(f"rendition: {SOURCE!r} or a rung of this stream's ladder ({', '.join(ladder)}), "
                          f"not {rendition!r}")
    return rendition


def push_url(server_url: str, key: str) -> str:
    return f"{server_url}/{key}"


@dataclass
class Backoff:
    """Seconds to wait before reconnect attempt n (1, 2, 4 ... up to cap)."""

    first: float = 1.0
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        return min(self.cap, self.first * (2 ** max(0, attempt - 1)))


@dataclass
class PushState:
    """One target's push state, driven by its pusher's events; every transition is returned so the caller can
    announce it (API, console, the simulcast.status webhook)."""

    max_failures: int = 8  # failures in a row (without reaching LIVE) before FAILED
    backoff: Backoff = field(default_factory=Backoff)
    status: str = "PENDING"
    error: str | None = None
    since: float = field(default_factory=time.time)
    failures: int = 0
    detail: str | None = None  # what is pushed when it isn't what was asked (e.g. an HEVC source's H.264 rung)

    def _to(self, status: str, error: str | None, now: float) -> bool:
        changed = (status, error) != (self.status, self.error)
        self.status, self.error, self.since = status, error, now if changed else self.since
        return changed

    def connecting(self, now: float) -> bool:
        # A reconnect attempt stays RECONNECTING until it is LIVE again: the operator sees one outage.
        return self._to("RECONNECTING" if self.status == "RECONNECTING" else "CONNECTING", self.error, now)

    def live(self, now: float) -> bool:
        self.failures = 0
        return self._to("LIVE", None, now)

    def failed(self, error: str, now: float) -> float | None:
        """The push stopped with error: seconds until the next attempt, or None when it gave up (FAILED)."""
        self.failures += 1
        if self.failures >= self.max_failures:
            self._to("FAILED", error, now)
            return None
        self._to("RECONNECTING", error, now)
        return self.backoff.delay(self.failures)

    def refused(self, error: str, now: float) -> bool:
        """The destination may not be reached (net_guard): no retry can change that, so FAILED at once."""
        self.failures = self.max_failures
        return self._to("FAILED", error, now)

    def stopped(self, now: float) -> bool:
        """The stream ended or the target was disabled: waiting for the next go-live."""
        self.failures = 0
        self.detail = None
        return self._to("PENDING", None, now)


class SimulcastStore:
    """The simulcast_targets table (sealed keys); blocking, so call it through asyncio.to_thread.

    A row is a stream's target (stream_id set) or an organization's default (stream_id null), which
    copy_defaults copies into each new stream of the organization."""

    def __init__(self, database: Database) -> None:
        self._database = database
        # The shared connection is used from worker threads under the data module's lock, as db.py does.
        with database._lock:
            table = database.db.table("simulcast_targets")
            if "simulcast_targets" not in database.db.table_names():
                table.create(
                    {"id": str, "stream_id": str, "org_id": str, "name": str, "kind": str, "url": str,
                     "key_sealed": str, "enabled": int, "tls_verify": int, "created_at": float, "rendition": str},
                    pk="id",
                )
                table.create_index(["stream_id"])
                table.create_index(["org_id"])
            elif "rendition" not in table.columns_dict:  # a database from before chosen renditions
                table.add_column("rendition", str)
            if "remote" not in table.columns_dict:  # JSON: the platform's own target (a Mux stream's), its status
                table.add_column("remote", str)

    def add(self, owner: tuple[str, str], name: str, kind: str, url: str, key_sealed: str,
            tls_verify: bool, rendition: str = SOURCE) -> dict[str, Any]:
        """owner: ("stream", id) or ("org", id); rendition: SOURCE or a ladder rung's name."""
        what, owner_id = owner
        row = {"id": new_id(), "stream_id": owner_id if what == "stream" else None,
               "org_id": owner_id if what == "org" else None, "name": name, "kind": kind, "url": url,
               "key_sealed": key_sealed, "enabled": 1, "tls_verify": int(tls_verify), "created_at": time.time(),
               "rendition": rendition}
        with self._database._lock:
            self._database.db.table("simulcast_targets").insert(row)
        return row

    def _where(self, owner: tuple[str, str]) -> str:
        return "stream_id = ?" if owner[0] == "stream" else "org_id = ? and stream_id is null"

    def targets(self, owner: tuple[str, str]) -> list[dict[str, Any]]:
        with self._database._lock:
            return list(self._database.db.table("simulcast_targets").rows_where(
                self._where(owner), [owner[1]], order_by="created_at, id"))

    def target(self, owner: tuple[str, str], target_id: str) -> dict[str, Any] | None:
        with self._database._lock:
            rows = list(self._database.db.table("simulcast_targets").rows_where(
                f"{self._where(owner)} and id = ?", [owner[1], target_id]))
        return rows[0] if rows else None

    def copy_defaults(self, org_id: str, stream_id: str, *,
                      source_only: bool = False) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """Give a new stream its organization's enabled default targets (once: not if it has targets); returns
        (default, copy) pairs. source_only: the copies push the source whatever the default asked (a platform
        pushes the stream as it receives it)."""
        copied: list[tuple[dict[str, Any], dict[str, Any]]] = []
        with self._database._lock:
            if self.targets(("stream", stream_id)):
                return copied
            for row in [r for r in self.targets(("org", org_id)) if r["enabled"]]:
                rendition = SOURCE if source_only else row.get("rendition") or SOURCE
                copied.append((row, self.add(("stream", stream_id), row["name"], row["kind"], row["url"],
                                             row["key_sealed"], bool(row["tls_verify"]), rendition)))
        return copied

    def update(self, target_id: str, **fields: Any) -> None:
        with self._database._lock:
            self._database.db.table("simulcast_targets").update(target_id, fields)

    def delete(self, target_id: str) -> None:
        with self._database._lock:
            self._database.db.table("simulcast_targets").delete_where("id = ?", [target_id])
