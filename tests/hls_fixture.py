"""A stand-in for mediaserver's viewer side in browser tests: an aiohttp server on loopback that serves the
player page (placeholder filled like web/pages.py does), /static/, and an HLS stream that ffmpeg writes."""
from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent.parent / "web" / "static"
FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
CONTENT_TYPES = {".m3u8": "application/vnd.apple.mpegurl", ".m4s": "video/iso.segment", ".mp4": "video/mp4"}


def page_config(stream_id: str, title: str, playback_url: str, *, dvr_window_seconds: float = 7200.0,
                segment_duration: float = 1.0, status: str = "LIVE") -> dict[str, Any]:
    """The JSON the server puts in place of __PLAYER_CONFIG__ (the same keys as web/pages.py)."""
    return {
        "stream_id": stream_id,
        "title": title,
        "playback_url": playback_url,
        "dvr_window_seconds": dvr_window_seconds,
        "segment_duration": segment_duration,
        "status": status,
    }


def render_watch_page(config: dict[str, Any]) -> str:
    """watch.html with the placeholder replaced; '<', '>' and '&' escaped so a title cannot close the script."""
    template = (STATIC_DIR / "watch.html").read_text()
    payload = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return template.replace("__PLAYER_CONFIG__", payload)


class FfmpegLive:
    """ffmpeg (CLI) producing a live-like two-rendition HLS stream (360p + 180p, fMP4, 1 s segments, an EVENT
    playlist without ENDLIST while it runs) into out_dir for `seconds`. Paced at real time if realtime; else it
    finishes at once and the playlists end with ENDLIST (a recording, VOD to the player)."""

    def __init__(self, out_dir: Path, *, seconds: float = 40.0, realtime: bool = True) -> None:
        self.out_dir = out_dir
        self.seconds = seconds
        self.realtime = realtime
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        pace = ["-re"] if self.realtime else []
        return [
            FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin",
            *pace, "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
            *pace, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-filter_complex", "[0:v]split=2[hi][lo0];[lo0]scale=320:180[lo]",
            "-map", "[hi]", "-map", "[lo]", "-map", "1:a", "-map", "1:a",
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
            "-g", "30", "-keyint_min", "30", "-sc_threshold", "0",
            "-b:v:0", "800k", "-b:v:1", "250k",
            "-c:a", "aac", "-b:a", "64k", "-ac", "2",
            "-t", f"{self.seconds:.1f}",
            "-f", "hls", "-hls_segment_type", "fmp4", "-hls_time", "1", "-hls_list_size", "0",
            "-hls_playlist_type", "event",
            "-hls_flags", "independent_segments+program_date_time+temp_file",
            "-hls_fmp4_init_filename", "init.mp4",
            "-hls_segment_filename", str(self.out_dir / "v%v" / "seg%d.m4s"),
            "-master_pl_name", "master.m3u8",
            "-var_stream_map", "v:0,a:0,name:360p v:1,a:1,name:180p",
            str(self.out_dir / "v%v" / "index.m3u8"),
        ]

    def start(self) -> FfmpegLive:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def wait_for_segments(self, count: int = 2, timeout: float = 20.0) -> None:
        """Blocks until the master playlist and `count` segments of every rendition are listed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"ffmpeg exited with {self.process.returncode}: {stderr[-2000:]}")
            playlists = [self.out_dir / "v360p" / "index.m3u8", self.out_dir / "v180p" / "index.m3u8"]
            if (self.out_dir / "master.m3u8").exists() and all(
                p.exists() and p.read_text().count("#EXTINF") >= count for p in playlists
            ):
                return
            time.sleep(0.2)
        raise TimeoutError(f"ffmpeg wrote no {count} segments per rendition into {self.out_dir} in {timeout} s")

    def wait(self, timeout: float = 30.0) -> None:
        """Blocks until ffmpeg has finished (a non-realtime run); raises if it failed."""
        assert self.process is not None
        if self.process.wait(timeout) != 0:
            stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
            raise RuntimeError(f"ffmpeg exited with {self.process.returncode}: {stderr[-2000:]}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process.stderr:
            self.process.stderr.close()


@dataclass
class PlayerSite:
    """The running loopback server: pages[stream_id] is the config served at /watch/{stream_id};
    /live/{name}/... are files under hls_root/{name}/ (404 until ffmpeg writes them)."""

    hls_root: Path
    pages: dict[str, dict[str, Any]] = field(default_factory=dict)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def watch_url(self, stream_id: str) -> str:
        return f"{self.base_url}/watch/{stream_id}"

    async def _watch(self, request: web.Request) -> web.Response:
        config = self.pages.get(request.match_info["stream_id"])
        if config is None:
            raise web.HTTPNotFound(text="No such stream.\n")
        response = web.Response(text=render_watch_page(config), content_type="text/html")
        response.headers["Cache-Control"] = "no-cache"
        return response

    async def _media(self, request: web.Request) -> web.StreamResponse:
        root = self.hls_root.resolve()
        path = (root / request.match_info["path"]).resolve()
        if root not in path.parents or not path.is_file() or path.suffix not in CONTENT_TYPES:
            raise web.HTTPNotFound()
        if path.suffix == ".m3u8":  # playlists change every segment: never cached
            body = await asyncio.to_thread(path.read_bytes)
            return web.Response(body=body, content_type=CONTENT_TYPES[".m3u8"], headers={"Cache-Control": "no-cache"})
        response = web.FileResponse(path, headers={"Content-Type": CONTENT_TYPES[path.suffix],
                                                   "Cache-Control": "max-age=3600"})
        return response

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_get("/watch/{stream_id}", self._watch)
        app.router.add_get("/live/{path:.+}", self._media)
        app.router.add_static("/static/", STATIC_DIR, append_version=False)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def start(self) -> PlayerSite:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="player-site", daemon=True)
        self._thread.start()
        ready.wait()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop = None
