"""Every error under /api is the documented JSON {"error": "...", "details": ...}.

aiohttp answers unmatched paths (404) and wrong methods (405) in text/plain; this middleware, outermost,
rewrites those, and turns an unexpected exception into a logged JSON 500 instead of aiohttp's HTML page.
"""
from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)


def is_api(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def _details(request: web.Request, exc: web.HTTPException) -> Any:
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return {"method": exc.method, "allowed": sorted(exc.allowed_methods)}
    if isinstance(exc, web.HTTPNotFound):
        return {"path": request.path}
    return None


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    if not is_api(request.path):
        return await handler(request)
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise  # a redirect, or an error already in our format
        response = web.json_response({"error": exc.reason.lower(), "details": _details(request, exc)}, status=exc.status)
        for header in ("Allow", "WWW-Authenticate", "Retry-After"):
            if header in exc.headers:
                response.headers[header] = exc.headers[header]
        return response
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return web.json_response({"error": "internal server error", "details": None}, status=500)
