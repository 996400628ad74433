"""The podcast side of the sermon library: an audio-only .m4a remuxed from a recording's AAC track (no
re-encode), the channel artwork (a 1400x1400 PNG, the size Apple Podcasts asks for), and the RSS 2.0 feed with
iTunes tags. The feed text is sans-IO: plain functions over item dicts.
"""
from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import av

ITUNES = "http://www.itunes.com/dtds/podcast-1.0.dtd"
ARTWORK_SIZE = 1400
AUDIO_NAME = "podcast.m4a"
# An organization's contact e-mail (settings.contact_email): the HTML5 e-mail syntax, ASCII only (it goes into
# the feed's XML as is), with a dot in the domain. web/openapi.py validates the setting with the same pattern.
EMAIL_PATTERN = (r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                 r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
OWNER_EMAIL_WARNING = ("Apple Podcasts needs an owner e-mail in the podcast feed: set the organization's contact "
                       "e-mail (settings.contact_email)")


class NoAudio(Exception):
    """The recording has no audio track to make a podcast episode from."""


def remux_audio(source: Path, target: Path) -> float:
    """Copy the AAC track of source (an MP4) into target (.m4a), packets untouched; returns its duration in
    seconds. Written under a temporary name and renamed, so a reader never sees half a file."""
    tmp = target.with_name(f".{target.name}.tmp")
    with av.open(str(source), "r") as inp:
        if not inp.streams.audio:
            raise NoAudio(f"{source.name} has no audio track")
        audio = inp.streams.audio[0]
        first: int | None = None
        last_end = 0
        with av.open(str(tmp), "w", format="ipod", options={"movflags": "+faststart"}) as out:
            out_stream = out.add_stream_from_template(audio)
            for packet in inp.demux(audio):
                if packet.dts is None or packet.size == 0:
                    continue
                if first is None:
                    first = packet.dts
                end = int(packet.pts if packet.pts is not None else packet.dts) + int(packet.duration or 0)
                last_end = max(last_end, end)
                packet.stream = out_stream
                out.mux(packet)
        tb = audio.time_base
    tmp.replace(target)
    if first is None or tb is None:
        return 0.0
    return float((last_end - first) * tb)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def artwork_png(color: str | None, size: int = ARTWORK_SIZE) -> bytes:
    """A square PNG in the church's colour (#rrggbb; a calm blue by default) with a lighter centre band:
    artwork that podcast apps accept when the church has none of its own."""
    hex_color = color if color and len(color) == 7 and color.startswith("#") else "#1d4ed8"
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    light = bytes(((r + 255) // 2, (g + 255) // 2, (b + 255) // 2))
    plain_row = b"\x00" + bytes((r, g, b)) * size
    band_row = b"\x00" + bytes((r, g, b)) * (size // 4) + light * (size - 2 * (size // 4)) + bytes((r, g, b)) * (size // 4)
    rows = [band_row if size * 2 // 5 <= y < size * 3 // 5 else plain_row for y in range(size)]
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(b"".join(rows), 6)) + _png_chunk(b"IEND", b""))


@dataclass(frozen=True)
class Channel:
    title: str
    link: str           # the public library page
    description: str
    author: str
    image_url: str
    language: str = "en"
    category: str = "Religion & Spirituality"
    subcategory: str = "Christianity"
    owner_email: str = ""


def owner_email(settings: dict[str, Any]) -> str:
    """The organization's contact e-mail if it is a valid one, else "" (the feed then has no itunes:email)."""
    value = settings.get("contact_email")
    return value if isinstance(value, str) and re.fullmatch(EMAIL_PATTERN, value) else ""


def podcast_warnings(settings: dict[str, Any]) -> list[str]:
    """What the organization should fix for podcast directories to take its feed."""
    return [] if owner_email(settings) else [OWNER_EMAIL_WARNING]


def rfc2822(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, tz=timezone.utc))


def item_timestamp(item: dict[str, Any]) -> float:
    """An episode's pubDate: its service date at noon UTC (the same day in every time zone of the Americas,
    Europe and Africa), else when it was published."""
    try:
        return datetime.strptime(str(item["date"]), "%Y-%m-%d").replace(hour=12, tzinfo=timezone.utc).timestamp()
    except (KeyError, ValueError):
        return float(item["published_at"])


def rss_feed(channel: Channel, episodes: list[tuple[dict[str, Any], str]]) -> bytes:
    """RSS 2.0 with iTunes tags. episodes: (library item with audio, its audio URL); items without audio
    are left out (an episode needs an enclosure)."""
    ET.register_namespace("itunes", ITUNES)
    rss = ET.Element("rss", {"version": "2.0"})
    ch = ET.SubElement(rss, "channel")

    def text(parent: ET.Element, tag: str, value: str, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, tag, attrs)
        element.text = value
        return element

    text(ch, "title", channel.title)
    text(ch, "link", channel.link)
    text(ch, "description", channel.description or channel.title)
    text(ch, "language", channel.language)
    text(ch, f"{{{ITUNES}}}author", channel.author)
    owner = ET.SubElement(ch, f"{{{ITUNES}}}owner")
    text(owner, f"{{{ITUNES}}}name", channel.author)
    if channel.owner_email:
        text(owner, f"{{{ITUNES}}}email", channel.owner_email)
    ET.SubElement(ch, f"{{{ITUNES}}}image", {"href": channel.image_url})
    image = ET.SubElement(ch, "image")
    text(image, "url", channel.image_url)
    text(image, "title", channel.title)
    text(image, "link", channel.link)
    category = ET.SubElement(ch, f"{{{ITUNES}}}category", {"text": channel.category})
    ET.SubElement(category, f"{{{ITUNES}}}category", {"text": channel.subcategory})
    text(ch, f"{{{ITUNES}}}explicit", "false")
    text(ch, f"{{{ITUNES}}}type", "episodic")
    for item, audio_url in episodes:
        if not item.get("audio_size"):
            continue
        entry = ET.SubElement(ch, "item")
        text(entry, "title", item["title"])
        summary = " · ".join(p for p in (item.get("speaker"), item.get("scripture"), item.get("series")) if p)
        text(entry, "description", item.get("description") or summary or item["title"])
        ET.SubElement(entry, "enclosure", {"url": audio_url, "length": str(int(item["audio_size"])),
                                           "type": "audio/mp4"})
        text(entry, "guid", f"mediaserver-library-{item['id']}", isPermaLink="false")
        text(entry, "pubDate", rfc2822(item_timestamp(item)))
        text(entry, f"{{{ITUNES}}}duration", str(int(round(float(item.get("audio_duration") or 0)))))
        text(entry, f"{{{ITUNES}}}author", item.get("speaker") or channel.author)
        text(entry, f"{{{ITUNES}}}explicit", "false")
        if item.get("poster_url", "").startswith("http"):
            ET.SubElement(entry, f"{{{ITUNES}}}image", {"href": item["poster_url"]})
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(rss, encoding="utf-8")
