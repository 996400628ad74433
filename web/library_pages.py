"""The public sermon library of an organization: the HTML page (search, series and speaker filters, rendered on
the server, every value escaped), the JSON Feed 1.1 for the church website, the podcast RSS feed, its artwork
and each episode's audio. No token: only recordings of streams that are public right now are shown."""
from __future__ import annotations

import asyncio
import html
import json
from typing import Any

from aiohttp import web

from mediaserver.branding import resolve
from mediaserver.library import LibraryFilter, publishable
from mediaserver.podcast import Channel, artwork_png, owner_email, rss_feed
from web.api import public_base
from web.keys import CONFIG, DB, STORE
from web.library_api import LIBRARY, audio_path, item_urls
from web.remote_media import remote_redirect

# Feeds are read by podcast apps and website widgets every few minutes: a short shared cache is enough.
FEED_CACHE = "public, max-age=60"
MAX_QUERY = 200


async def _org(request: web.Request) -> dict[str, Any]:
    org = await asyncio.to_thread(request.app[DB].org, request.match_info["org_slug"])
    if org is None or org["slug"] != request.match_info["org_slug"]:
        raise web.HTTPNotFound(text="No such library.\n")
    return org


async def visible_items(request: web.Request, org: dict[str, Any]) -> list[dict[str, Any]]:
    """The organization's published items whose stream is public now (a stream made private drops out) and
    whose recording still exists."""
    db = request.app[DB]
    items = await asyncio.to_thread(request.app[LIBRARY].of_org, org["id"])
    ids = sorted({i["stream_id"] for i in items})
    if not ids:
        return []
    streams = await asyncio.to_thread(db.query_streams, f"id in ({','.join('?' * len(ids))})", ids, "created_at",
                                      len(ids), 0)
    public = {s["id"] for s in streams if publishable(s)}
    # A recording deleted since (by hand or by retention) takes its sermon out of the library with it.
    rec_ids = sorted({i["recording_id"] for i in items})
    kept = {r["id"] for r in await asyncio.to_thread(
        db.recordings_where, f"id in ({','.join('?' * len(rec_ids))})", rec_ids)}
    return [i for i in items if i["stream_id"] in public and i["recording_id"] in kept]


def _options(name: str, values: list[str], chosen: str, everyone: str) -> str:
    opts = [f'<option value="">{html.escape(everyone)}</option>']
    for value in values:
        selected = " selected" if value == chosen else ""
        opts.append(f'<option value="{html.escape(value, quote=True)}"{selected}>{html.escape(value)}</option>')
    return f'<select name="{name}" aria-label="{name}">{"".join(opts)}</select>'


def render_page(org_name: str, color: str | None, items: list[dict[str, Any]], chosen: LibraryFilter,
                all_items: list[dict[str, Any]], base: str, slug: str) -> str:
    """The library page (sans-IO): every value from the database or the query goes through html.escape."""
    e = html.escape
    speakers = sorted({i["speaker"] for i in all_items if i.get("speaker")})
    series = sorted({i["series"] for i in all_items if i.get("series")})
    cards = []
    for item in items:
        urls = item_urls(base, slug, item)
        meta = " · ".join(e(str(p)) for p in (item.get("date"), item.get("speaker"), item.get("series"),
                                                item.get("scripture")) if p)
        poster = (f'<img class="poster" alt="" src="{e(item["poster_url"], quote=True)}">'
                  if str(item.get("poster_url") or "").startswith(("http://", "https://", "/")) else "")
        audio = (f' · <a href="{e(urls["audio_url"], quote=True)}">Listen (audio)</a>' if urls["audio_url"] else "")
        cards.append(
            f'<li class="sermon" id="item-{e(item["id"], quote=True)}">{poster}'
            f'<h2><a href="{e(urls["watch_url"], quote=True)}">{e(item["title"])}</a></h2>'
            f'<p class="meta">{meta}</p>'
            f'<p class="description">{e(item.get("description") or "")}</p>'
            f'<p><a href="{e(urls["watch_url"], quote=True)}">Watch</a>{audio}</p></li>')
    listing = "".join(cards) or '<li class="empty">No sermons match.</li>'
    accent = e(color or "#1d4ed8", quote=True)
    feeds = f"{base}/library/{slug}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sermons · {e(org_name)}</title>
<link rel="alternate" type="application/rss+xml" title="Podcast" href="{e(feeds, quote=True)}/podcast.xml">
<link rel="alternate" type="application/feed+json" title="JSON Feed" href="{e(feeds, quote=True)}/feed.json">
<style>
body {{ font-family: system-ui, sans-serif; margin: 0 auto; max-width: 52rem; padding: 1rem; }}
h1 {{ color: {accent}; }} form {{ display: flex; flex-wrap: wrap; gap: .5rem; margin-bottom: 1rem; }}
input, select, button {{ font: inherit; padding: .4rem; }} ul {{ list-style: none; padding: 0; }}
.sermon {{ border-top: 1px solid #ddd; padding: .75rem 0; }} .sermon h2 {{ margin: 0 0 .25rem; font-size: 1.2rem; }}
.poster {{ float: right; width: 8rem; margin-left: .75rem; }} .meta {{ color: #555; margin: 0; }}
a {{ color: {accent}; }}
</style></head>
<body><h1>Sermons · {e(org_name)}</h1>
<form method="get" role="search">
<input type="search" name="q" value="{e(chosen.text, quote=True)}" placeholder="Search title, speaker, scripture" aria-label="Search">
{_options("speaker", speakers, chosen.speaker, "Every speaker")}
{_options("series", series, chosen.series, "Every series")}
<button type="submit">Search</button></form>
<p><a href="{e(feeds, quote=True)}/podcast.xml">Podcast feed</a> · <a href="{e(feeds, quote=True)}/feed.json">JSON feed</a></p>
<ul class="sermons">{listing}</ul>
</body></html>
"""


async def library_page(request: web.Request) -> web.Response:
    org = await _org(request)
    chosen = LibraryFilter(request.query.get("q", "")[:MAX_QUERY].strip(),
                           request.query.get("speaker", "")[:MAX_QUERY], request.query.get("series", "")[:MAX_QUERY])
    items = await visible_items(request, org)
    branding = resolve(org)
    text = render_page(branding.name or org["name"], branding.primary, [i for i in items if chosen.matches(i)],
                       chosen, items, public_base(request), org["slug"])
    return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-cache"})


def json_feed(org_name: str, base: str, slug: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    """JSON Feed 1.1 (https://jsonfeed.org/version/1.1); the sermon's own fields under "_sermon"."""
    entries = []
    for item in items:
        urls = item_urls(base, slug, item)
        entry: dict[str, Any] = {
            "id": item["id"], "url": urls["watch_url"], "title": item["title"],
            "content_text": item.get("description") or item["title"],
            "date_published": f"{item['date']}T12:00:00Z",
            "tags": [t for t in (item.get("series"),) if t],
            "_sermon": {"speaker": item.get("speaker") or "", "series": item.get("series") or "",
                        "scripture": item.get("scripture") or "", "date": item["date"]},
        }
        if item.get("speaker"):
            entry["authors"] = [{"name": item["speaker"]}]
        if str(item.get("poster_url") or "").startswith(("http://", "https://")):
            entry["image"] = item["poster_url"]
        if urls["audio_url"]:
            entry["attachments"] = [{"url": urls["audio_url"], "mime_type": "audio/mp4",
                                     "size_in_bytes": item["audio_size"],
                                     "duration_in_seconds": round(float(item.get("audio_duration") or 0), 3)}]
        entries.append(entry)
    return {"version": "https://jsonfeed.org/version/1.1", "title": f"Sermons · {org_name}",
            "home_page_url": f"{base}/library/{slug}", "feed_url": f"{base}/library/{slug}/feed.json",
            "language": "en", "items": entries}


async def feed_json(request: web.Request) -> web.Response:
    org = await _org(request)
    items = await visible_items(request, org)
    feed = json_feed(resolve(org).name or org["name"], public_base(request), org["slug"], items)
    return web.Response(text=json.dumps(feed), content_type="application/feed+json",
                        headers={"Cache-Control": FEED_CACHE, "Access-Control-Allow-Origin": "*"})


async def podcast_xml(request: web.Request) -> web.Response:
    org = await _org(request)
    items = await visible_items(request, org)
    base, slug, name = public_base(request), org["slug"], resolve(org).name or org["name"]
    channel = Channel(title=f"Sermons · {name}", link=f"{base}/library/{slug}",
                      description=f"Sermons from {name}", author=name,
                      image_url=f"{base}/library/{slug}/artwork.png",
                      owner_email=owner_email(json.loads(org["settings"] or "{}")))
    body = rss_feed(channel, [(i, str(item_urls(base, slug, i)["audio_url"])) for i in items])
    return web.Response(body=body, content_type="application/rss+xml", charset="utf-8",
                        headers={"Cache-Control": FEED_CACHE})


async def artwork(request: web.Request) -> web.Response:
    org = await _org(request)
    png = await asyncio.to_thread(artwork_png, resolve(org).primary)
    return web.Response(body=png, content_type="image/png", headers={"Cache-Control": "public, max-age=3600"})


async def audio(request: web.Request) -> web.StreamResponse:
    org = await _org(request)
    items = await visible_items(request, org)
    item = next((i for i in items if i["id"] == request.match_info["item_id"]), None)
    path = audio_path(request.app[STORE], item) if item is not None else None
    if path is None and item is not None and item.get("audio_key"):  # moved to S3 with its recording
        moved = await remote_redirect(request.app[STORE], item["audio_key"], request.app[CONFIG].storage.s3_url_seconds)
        if moved is not None:
            return moved
    if path is None:
        raise web.HTTPNotFound(text="No such episode.\n")
    return web.FileResponse(path, headers={"Content-Type": "audio/mp4", "Cache-Control": "public, max-age=86400"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/library/{org_slug}", library_page)
    app.router.add_get("/library/{org_slug}/feed.json", feed_json)
    app.router.add_get("/library/{org_slug}/podcast.xml", podcast_xml)
    app.router.add_get("/library/{org_slug}/artwork.png", artwork)
    app.router.add_get("/library/{org_slug}/{item_id}/audio.m4a", audio)
