"""Our webhooks out land here: a real HTTP endpoint on loopback, in its own thread, keeping each delivery's body
and the time it arrived."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class WebhookReceiver:
    def __init__(self) -> None:
        arrivals: list[tuple[float, dict[str, Any]]] = []
        self.arrived = arrivals

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrivals.append((time.time(), json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/hook"

    @property
    def events(self) -> list[dict[str, Any]]:
        return [body for _at, body in list(self.arrived)]

    def arrivals(self, kind: str, stream_id: str) -> list[tuple[float, dict[str, Any]]]:
        return [(at, e) for at, e in list(self.arrived) if e["type"] == kind and e["data"].get("stream_id") == stream_id]

    def of(self, kind: str, stream_id: str) -> list[dict[str, Any]]:
        return [e for _at, e in self.arrivals(kind, stream_id)]

    def stop(self) -> None:
        self.http.shutdown()
