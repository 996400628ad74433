"""A recording's file that lives in S3 (storage.backend = "s3"): a redirect to a short-lived presigned URL.

Called after the same access check as a local file (web/media.py). Bytes then go from the bucket to the
player, not through the origin; playlists are not redirected (they carry the viewer's token, added here).
"""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from storage.local import LocalStore
from storage.store import StorageError
from storage.tiered import TieredStore

log = logging.getLogger(__name__)


async def remote_redirect(store: LocalStore, key: str, seconds: int, *,
                          download_name: str | None = None) -> web.Response | None:
    """302 to the object's presigned URL, or None when the store has no remote tier or no such object."""
    if not isinstance(store, TieredStore):
        return None
    try:
        size = await asyncio.to_thread(store.remote_size, key)
    except StorageError as exc:
        log.error("S3 check of %s failed: %s", key, exc)
        return web.Response(status=503, text="recording storage unavailable\n",
                            headers={"Cache-Control": "no-store", "Retry-After": "5",
                                     "Access-Control-Allow-Origin": "*"})
    if size is None:
        return None
    url = store.remote.presigned_url(key, seconds, download_name=download_name)  # signed locally, no request
    # The URL expires and may be signed for a private stream: neither a browser nor a CDN may keep the redirect.
    return web.Response(status=302, headers={"Location": url, "Cache-Control": "private, no-store",
                                             "Access-Control-Allow-Origin": "*"})
