"""Video as a platform serves it, for tests (no network reaches Mux from here): a short real HLS with the frame
number drawn into every picture, and the stream.mux.com routes the Mux stand-in (tests/mux_standin.py) adds
through its extra_routes, so the server under test, PyAV and Chromium all fetch "Mux's" media from loopback."""
from __future__ import annotations

import asyncio
import base64
import math
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import jwt
import numpy as np
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mediaserver.config import Config
from tests.media_source import numbered_picture
from tests.mux_standin import MuxStandIn

FPS, SECONDS, RATE = 30, 6.0, 48_000


# -- the source: a short real HLS, as a platform serves a recording ----------------------------------------
def make_hls(folder: Path) -> None:
    """playlist.m3u8 + 0.ts, 1.ts, 2.ts: 320x180 H.264 (1 s GOP), frame i showing i; AAC 440 Hz mono."""
    folder.mkdir(parents=True, exist_ok=True)
    out = av.open(str(folder / "playlist.m3u8"), "w", format="hls",
                  options={"hls_time": "2", "hls_playlist_type": "vod", "hls_segment_filename": str(folder / "%d.ts")})
    video = out.add_stream("libx264", rate=FPS)
    video.width, video.height, video.pix_fmt = 320, 180, "yuv420p"
    video.options = {"preset": "ultrafast", "g": str(FPS), "keyint_min": str(FPS), "sc_threshold": "0", "bf": "0"}
    audio = out.add_stream("aac", rate=RATE)
    audio.layout = "mono"
    total, sent = int(SECONDS * RATE), 0
    for i in range(int(SECONDS * FPS)):
        pixels, pixel_format = numbered_picture(i, 320, 180, "gradient")
        frame = av.VideoFrame.from_ndarray(pixels, format=pixel_format)
        frame.pts, frame.time_base = i, Fraction(1, FPS)
        for packet in video.encode(frame):
            out.mux(packet)
        while sent < min(total, int((i + 1) / FPS * RATE)):
            n = min(1024, total - sent)
            tone = 0.3 * np.sin(2 * math.pi * 440 * np.arange(sent, sent + n) / RATE)
            chunk = av.AudioFrame.from_ndarray(tone.astype(np.float32)[None, :], format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = RATE, sent, Fraction(1, RATE)
            for packet in audio.encode(chunk):
                out.mux(packet)
            sent += n
    for stream in (video, audio):
        for packet in stream.encode(None):
            out.mux(packet)
    out.close()


# -- stream.mux.com on the stand-in ------------------------------------------------------------------------
@dataclass
class Served:
    folder: Path
    signed: bool
    fail: bool = False
    masters: int = 0          # requests for the master playlist (one per copy attempt)
    master_times: list[float] = field(default_factory=list)   # when each came (time.monotonic())
    hold: threading.Event | None = None   # the master playlist waits for this (a copy under way)


@dataclass
class Fetched:
    """One media request the stand-in answered: which playback id, which file, and the verified JWT's claims
    (None for a public playback id)."""
    pid: str
    name: str
    claims: dict[str, object] | None


class MuxMedia:
    """Routes for the Mux stand-in: the asset (GET /video/v1/assets/{id}, with recording_times) and its HLS
    as stream.mux.com serves it: /{playback_id}.m3u8 -> rendition playlist -> TS segments; a signed asset's
    files only with ?token= a valid RS256 playback JWT for that playback id (verified with the public key).
    Like stream.mux.com, the media answers carry Access-Control-Allow-Origin: * (a watch page on another
    origin reads them with hls.js)."""

    def __init__(self, public_pem: bytes) -> None:
        self.public_pem = public_pem
        self.served: dict[str, Served] = {}
        self.starts: dict[str, str] = {}      # asset id -> recording_times[0].started_at
        self.refused = 0
        self.fetched: list[Fetched] = []      # every media request answered, in order
        self.standin: MuxStandIn | None = None

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/video/v1/assets/{id}", self.asset)
        app.router.add_get("/{pid}.m3u8", self.master)
        app.router.add_get("/{pid}/{name}", self.file)
        app.on_response_prepare.append(self._cors)

    @staticmethod
    async def _cors(request: web.Request, response: web.StreamResponse) -> None:
        if not request.path.startswith("/video/"):
            response.headers["Access-Control-Allow-Origin"] = "*"

    async def asset(self, request: web.Request) -> web.Response:
        assert self.standin is not None
        for stream in self.standin.streams.values():
            if stream.asset and stream.asset["id"] == request.match_info["id"]:
                data = dict(stream.asset)
                if data["id"] in self.starts:
                    data["recording_times"] = [{"started_at": self.starts[data["id"]], "duration": SECONDS,
                                                "type": "content"}]
                return web.json_response({"data": data})
        return web.json_response({"error": {"type": "not_found", "messages": ["Asset not found"]}}, status=404)

    def _allowed(self, request: web.Request, pid: str, name: str) -> Served | None:
        served = self.served.get(pid)
        if served is None:
            return None
        claims = None
        if served.signed:
            try:
                claims = jwt.decode(request.query.get("token", ""), self.public_pem, algorithms=["RS256"],
                                    audience="v")
            except jwt.PyJWTError:
                self.refused += 1
                raise web.HTTPForbidden(text="bad or missing token")
            if claims.get("sub") != pid:
                self.refused += 1
                raise web.HTTPForbidden(text="token for another playback id")
        self.fetched.append(Fetched(pid, name, claims))
        return served

    async def master(self, request: web.Request) -> web.Response:
        pid = request.match_info["pid"]
        served = self._allowed(request, pid, f"{pid}.m3u8")
        if served is None:
            raise web.HTTPNotFound()
        served.masters += 1
        served.master_times.append(time.monotonic())
        if served.hold is not None:
            await asyncio.to_thread(served.hold.wait, 30)
        if served.fail:
            raise web.HTTPInternalServerError(text="upstream trouble")
        # As Mux does: the rendition's absolute URL, carrying the token of a signed asset.
        token = f"?token={request.query['token']}" if served.signed else ""
        text = (f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=320x180,CODECS=\"avc1.42c00d,mp4a.40.2\"\n"
                f"{request.url.origin()}/{pid}/rendition.m3u8{token}\n")
        return web.Response(text=text, content_type="application/vnd.apple.mpegurl")

    async def file(self, request: web.Request) -> web.Response:
        pid, name = request.match_info["pid"], request.match_info["name"]
        served = self._allowed(request, pid, name)
        if served is None or "/" in name or name.startswith("."):
            raise web.HTTPNotFound()
        path = served.folder / ("playlist.m3u8" if name == "rendition.m3u8" else name)
        if not path.is_file():
            raise web.HTTPNotFound()
        if name == "rendition.m3u8" and served.signed:
            # As Mux does for a signed playback id: every segment URL in the rendition carries a token too
            # (here the one the request was verified with).
            token = request.query["token"]
            lines = [line if not line.strip() or line.startswith("#") else f"{line}?token={token}"
                     for line in path.read_text().splitlines()]
            return web.Response(text="\n".join(lines) + "\n", content_type="application/vnd.apple.mpegurl")
        return web.Response(body=path.read_bytes())


# -- a Mux stand-in serving that media, with the signing key our server signs playback with -----------------
@dataclass
class MuxWithMedia:
    source: Path            # the HLS the stand-in serves for every playback id it knows
    key: rsa.RSAPrivateKey    # our server's Mux signing key; the stand-in verifies with its public half
    media: MuxMedia
    standin: MuxStandIn

    def configure(self, config: Config, key_id: str) -> None:
        """[mux] pointed at the stand-in (the API and stream.mux.com both), with this signing key."""
        mux = config.mux
        mux.token_id, mux.token_secret, mux.webhook_secret = (self.standin.token_id, self.standin.token_secret,
                                                              self.standin.webhook_secret)
        mux.base_url = mux.stream_host = self.standin.url
        mux.signing_key_id = key_id
        mux.signing_private_key = base64.b64encode(self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption())).decode()


def start_mux_with_media(source: Path, token_id: str, token_secret: str, webhook_secret: str) -> MuxWithMedia:
    make_hls(source)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    media = MuxMedia(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))
    standin = MuxStandIn(token_id, token_secret, webhook_secret, extra_routes=media.routes).start()
    media.standin = standin
    return MuxWithMedia(source, key, media, standin)
