"""An organization's branding, sans-IO: colours (with a WCAG-contrast text colour), the logo and poster images
(type sniffed from magic bytes, size read from the header, then decoded once to prove it is an image), the
CSS custom properties the pages use, and the embed code for a church's website."""
from __future__ import annotations

import hashlib
import html
import io
import json
import re
import struct
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

COLOR = re.compile(r"#[0-9A-Fa-f]{6}")
ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+")
IMAGE_KINDS = ("logo", "poster")
MAX_IMAGE_BYTES = 2 * 1024 * 1024
# A 2 MB PNG can claim 30000x30000 pixels (gigabytes once decoded): refuse by the header, before decoding.
MAX_IMAGE_SIDE = 8192
MAX_IMAGE_PIXELS = 40_000_000
IMAGE_TYPES = {"image/png": "png_pipe", "image/jpeg": "jpeg_pipe", "image/webp": "webp_pipe"}
EMBED_ALLOW = "autoplay; fullscreen; picture-in-picture"


class ImageRejected(Exception):
    """An upload that is not an image we take; `status` is the HTTP answer (413 too big, 415 wrong type)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int
    size: int
    sha256: str

    def meta(self) -> dict[str, Any]:
        """What the organization's settings keep about the stored image."""
        return {"content_type": self.content_type, "width": self.width, "height": self.height,
                "bytes": self.size, "sha256": self.sha256}


# ---- colours ----------------------------------------------------------------------------------------

def _linear(channel: int) -> float:
    c = channel / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def luminance(color: str) -> float:
    """WCAG 2 relative luminance of "#rrggbb"."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * _linear(r) + 0.7152 * _linear(g) + 0.0722 * _linear(b)


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio, 1..21."""
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def readable_on(background: str) -> str:
    """Black or white, whichever contrasts more with the background."""
    return "#000000" if contrast("#000000", background) >= contrast("#ffffff", background) else "#ffffff"


def _color(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) and COLOR.fullmatch(value) else None


# ---- what a page shows --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Branding:
    """One organization's resolved branding: colours valid or None, image URLs ready for a page."""
    name: str | None
    primary: str | None
    background: str | None
    text: str | None
    logo_url: str | None
    poster_url: str | None
    embed_origins: tuple[str, ...] | None  # None: any site may embed

    def css_variables(self) -> dict[str, str]:
        """The player.css custom properties this branding overrides (none when nothing is set)."""
        props: dict[str, str] = {}
        if self.primary:
            props["--accent"] = self.primary
            props["--on-accent"] = readable_on(self.primary)
        if self.background:
            text = self.text or readable_on(self.background)
            props.update({"--bg": self.background, "--text": text,
                          # Panels, lines and muted text are mixed from the two, so they stay readable.
                          "--panel": f"color-mix(in srgb, {self.background} 90%, {text})",
                          "--line": f"color-mix(in srgb, {self.background} 70%, {text})",
                          "--muted": f"color-mix(in srgb, {text} 72%, {self.background})",
                          "color-scheme": "dark" if luminance(self.background) < 0.18 else "light"})
        elif self.text:
            props["--text"] = self.text
        return props

    def style_element(self) -> str:
        """A <style> for the page head. Every value is a checked hex colour or built from them."""
        props = self.css_variables()
        if not props:
            return ""
        return "<style id=\"brand-style\">:root{" + ";".join(f"{k}:{v}" for k, v in props.items()) + "}</style>"


def asset_url(org_slug: str, kind: str, meta: dict[str, Any]) -> str:
    """The image's address; the content hash in it makes a new upload a new URL (caches never show the old)."""
    return f"/brand/{org_slug}/{kind}?v={str(meta.get('sha256', ''))[:16]}"


def stored_image(branding: dict[str, Any], kind: str) -> dict[str, Any] | None:
    meta = branding.get(kind)
    return meta if isinstance(meta, dict) and isinstance(meta.get("sha256"), str) else None


def settings_of(org: dict[str, Any] | None) -> dict[str, Any]:
    if org is None:
        return {}
    try:
        settings = json.loads(org["settings"] or "{}")
    except ValueError:
        return {}
    return settings if isinstance(settings, dict) else {}


def resolve(org: dict[str, Any] | None) -> Branding:
    """The organization's branding from its settings: uploaded images win over the older URL fields, and
    primary_color over accent_color."""
    if org is None:
        return Branding(None, None, None, None, None, None, None)
    settings = settings_of(org)
    branding = settings.get("branding") if isinstance(settings.get("branding"), dict) else {}
    assert isinstance(branding, dict)

    def url(name: str) -> str | None:
        value = branding.get(name)
        return value if isinstance(value, str) and re.match(r"(https?://|/)", value) else None

    logo, poster = stored_image(branding, "logo"), stored_image(branding, "poster")
    name = branding.get("display_name")
    origins = settings.get("embed_origins")
    return Branding(
        name=name.strip() if isinstance(name, str) and name.strip() else org["name"],
        primary=_color(branding.get("primary_color")) or _color(branding.get("accent_color")),
        background=_color(branding.get("background_color")),
        text=_color(branding.get("text_color")),
        logo_url=asset_url(org["slug"], "logo", logo) if logo else url("logo_url"),
        poster_url=asset_url(org["slug"], "poster", poster) if poster else url("pre_stream_image"),
        embed_origins=tuple(o for o in origins if isinstance(o, str)) if isinstance(origins, list) else None)


# ---- embedding ----------------------------------------------------------------------------------------

def frame_ancestors(origins: tuple[str, ...] | None) -> str:
    """The embed page's CSP: the listed sites (and the server itself) may frame it; unset means any site."""
    if origins is None or "*" in origins:
        return "frame-ancestors *"
    allowed = [o for o in origins if ORIGIN.fullmatch(o)]
    return "frame-ancestors " + " ".join(["'self'", *allowed])


def embed_code(base: str, stream_id: str, title: str) -> str:
    """A responsive iframe for a church's website: 16:9 at whatever width the page gives it."""
    src = html.escape(f"{base}/embed/{stream_id}", quote=True)
    return (f'<div style="position:relative;width:100%;aspect-ratio:16/9;">'
            f'<iframe src="{src}" title="{html.escape(title, quote=True)}" '
            f'style="position:absolute;inset:0;width:100%;height:100%;border:0;" '
            f'allow="{EMBED_ALLOW}" allowfullscreen></iframe></div>')


def valid_origin(value: str) -> bool:
    if value == "*":
        return True
    if not ORIGIN.fullmatch(value):
        return False
    parts = urlsplit(value)
    return bool(parts.hostname) and not parts.path


# ---- images -------------------------------------------------------------------------------------------

def sniff(data: bytes) -> str | None:
    """The image type the bytes start with (PNG, JPEG, WebP), else None. SVG and the rest are never taken."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def header_size(data: bytes, content_type: str) -> tuple[int, int]:
    """Width and height as the image's header states them (no decoding); ImageRejected if unreadable."""
    try:
        if content_type == "image/png":
            if data[12:16] != b"IHDR":
                raise ImageRejected(415, "a PNG without its IHDR header")
            return struct.unpack(">II", data[16:24])
        if content_type == "image/webp":
            return _webp_size(data)
        return _jpeg_size(data)
    except (struct.error, IndexError):
        raise ImageRejected(415, "the image's header is cut short") from None


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk, body = data[12:16], data[20:]
    if chunk == b"VP8 ":
        if body[3:6] != b"\x9d\x01\x2a":
            raise ImageRejected(415, "a WebP with a broken VP8 frame header")
        w, h = struct.unpack("<HH", body[6:10])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L":
        if body[0] != 0x2F:
            raise ImageRejected(415, "a WebP with a broken lossless header")
        bits = int.from_bytes(body[1:5], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(body[4:7], "little") + 1, int.from_bytes(body[7:10], "little") + 1
    raise ImageRejected(415, f"a WebP with an unknown first chunk {chunk!r}")


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ImageRejected(415, "a JPEG with a broken marker")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD9)):
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker in _SOF:
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        if length < 2:
            raise ImageRejected(415, "a JPEG with a broken segment length")
        i += 2 + length
    raise ImageRejected(415, "a JPEG without a frame header")


def check_image(data: bytes, declared_type: str) -> ImageInfo:
    """Accept a PNG, JPEG or WebP of at most MAX_IMAGE_BYTES that decodes to the size its header states.

    CPU work (one decode): call it off the event loop."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageRejected(413, f"the image is {len(data)} bytes; at most {MAX_IMAGE_BYTES} are taken")
    declared = declared_type.split(";")[0].strip().lower()
    if declared not in IMAGE_TYPES:
        raise ImageRejected(415, f"Content-Type {declared or 'missing'!r}: send image/png, image/jpeg or image/webp "
                                 "(SVG is refused: it can carry scripts)")
    actual = sniff(data)
    if actual != declared:
        raise ImageRejected(415, f"the body is not {declared} (its first bytes say {actual or 'not an image'})")
    if not complete(data, actual):
        raise ImageRejected(415, f"the {actual} image is cut short (its end marker is missing)")
    width, height = header_size(data, actual)
    if not (0 < width <= MAX_IMAGE_SIDE and 0 < height <= MAX_IMAGE_SIDE) or width * height > MAX_IMAGE_PIXELS:
        raise ImageRejected(415, f"a {width}x{height} image; at most {MAX_IMAGE_SIDE} pixels a side are taken")
    decoded = _decode_size(data, actual)
    if decoded != (width, height):
        raise ImageRejected(415, f"the image decodes to {decoded}, not the {width}x{height} its header states")
    return ImageInfo(actual, width, height, len(data), hashlib.sha256(data).hexdigest())


def complete(data: bytes, content_type: str) -> bool:
    """Whether the image ends where its format says (decoders happily show half a picture)."""
    if content_type == "image/png":
        return data.endswith(b"IEND\xaeB`\x82")
    if content_type == "image/jpeg":
        return data.rstrip(b"\x00").endswith(b"\xff\xd9")
    return len(data) >= 12 and int.from_bytes(data[4:8], "little") + 8 == len(data)


def _decode_size(data: bytes, content_type: str) -> tuple[int, int]:
    import av

    try:
        with av.open(io.BytesIO(data), "r", format=IMAGE_TYPES[content_type]) as container:
            frame = next(container.decode(video=0))
            return frame.width, frame.height
    except (av.FFmpegError, StopIteration, IndexError, ValueError, OSError) as exc:
        raise ImageRejected(415, f"the image does not decode: {exc}") from None
