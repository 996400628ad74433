"""Branding (name, colours, logo, poster) and the embed page, against a real server: the upload API with images
PyAV makes here, the watch and go-live pages in Chromium (computed styles, the decoded logo, the poster's pixels),
and the embed code placed on a second site on another port, playing a real RTMP publish."""
from __future__ import annotations

import fractions
import html
import http.client
import io
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiohttp import web

from tests.browser import module_browser
from tests.media_source import start_publisher
from tests.server_fixture import ServerHandle, run_server, small_config

PRIMARY, BACKGROUND = "#1d4ed8", "#f5f0e6"  # a blue and a light cream: WCAG picks black text on the cream


def rgb(color: str) -> str:
    """How getComputedStyle writes "#rrggbb"."""
    return f"rgb({int(color[1:3], 16)}, {int(color[3:5], 16)}, {int(color[5:7], 16)})"


def image(kind: str, width: int, height: int, color: tuple[int, int, int] = (200, 30, 60)) -> bytes:
    """A solid image encoded by PyAV: kind png, jpeg or webp."""
    codec, pix_fmt = {"png": ("png", "rgb24"), "jpeg": ("mjpeg", "yuvj420p"), "webp": ("libwebp", "yuv420p")}[kind]
    context = av.CodecContext.create(codec, "w")
    context.width, context.height, context.pix_fmt = width, height, pix_fmt
    context.time_base = fractions.Fraction(1, 1)
    pixels = np.empty((height, width, 3), np.uint8)
    pixels[:] = color
    frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format=pix_fmt)
    return b"".join(bytes(packet) for packet in [*context.encode(frame), *context.encode(None)])


def decode_png(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data), format="png_pipe") as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    handle = run_server(small_config(tmp_path_factory.mktemp("branding") / "data"))
    handle.api("GET", "/api/streams")  # loads the OpenAPI checker the raw requests below also use
    yield handle
    handle.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from module_browser()


def org_token(server: ServerHandle, slug: str) -> str:
    db = server.server.db
    org = db.org(slug) or db.create_org(slug, slug.title())
    return db.create_token(org["id"], "test")[1]


def put_image(server: ServerHandle, slug: str, kind: str, data: bytes, content_type: str,
              token: str | None) -> tuple[int, Any]:
    import json

    path = f"/api/orgs/{slug}/branding/{kind}"
    request = urllib.request.Request(server.http + path, data=data, method="PUT")
    request.add_header("Content-Type", content_type)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, body = response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        status, body = exc.code, json.loads(exc.read() or b"null")
    server.checker.check("PUT", path, status, body)
    return status, body


def brand_of(server: ServerHandle, slug: str, token: str) -> dict[str, Any]:
    status, org = server.api("GET", f"/api/orgs/{slug}", token=token)
    assert status == 200
    return org["settings"].get("branding", {})


def page_config(page: bytes) -> dict[str, Any]:
    import json

    match = re.search(r'<script id="player-config" type="application/json">(.*?)</script>', page.decode(), re.S)
    assert match
    return json.loads(match.group(1))


def test_contrast_and_image_checks_without_a_server() -> None:
    from mediaserver.branding import ImageRejected, check_image, contrast, readable_on

    # Values from the WCAG 2 definition: black on white is 21:1, #777777 on white about 4.48:1.
    assert round(contrast("#000000", "#ffffff"), 2) == 21.0 and round(contrast("#777777", "#ffffff"), 2) == 4.48
    assert readable_on("#f5f0e6") == "#000000" and readable_on("#102030") == "#ffffff"
    assert readable_on("#1d4ed8") == "#ffffff" and readable_on("#ffcc4d") == "#000000"
    # Truncated and mutated images: a clean refusal every time, never another exception.
    rng = np.random.default_rng(7)
    for kind, content_type in (("png", "image/png"), ("jpeg", "image/jpeg"), ("webp", "image/webp")):
        good = image(kind, 40, 30)
        assert (check_image(good, content_type).width, check_image(good, content_type).height) == (40, 30)
        for cut in range(0, len(good), max(1, len(good) // 25)):
            with pytest.raises(ImageRejected):
                check_image(good[:cut], content_type)
        for _ in range(60):
            bad = bytearray(good)
            for at in rng.integers(0, len(bad), 4):
                bad[at] = int(rng.integers(0, 256))
            try:
                info = check_image(bytes(bad), content_type)
            except ImageRejected:
                continue
            assert 0 < info.width <= 8192 and 0 < info.height <= 8192


def test_branding_api_validates_stores_and_serves_images(server: ServerHandle) -> None:
    token, other = org_token(server, "grace"), org_token(server, "elsewhere")
    for field, value in (("primary_color", "blue"), ("background_color", "#12345"), ("text_color", "#gg0000")):
        status, body = server.api("PATCH", "/api/orgs/grace", {"settings": {"branding": {field: value}}}, token=token)
        assert status == 400 and f"settings.branding.{field}" in body["details"], body
    status, _ = server.api("PATCH", "/api/orgs/grace", {"settings": {"embed_origins": ["javascript:alert(1)"]}},
                           token=token)
    assert status == 400

    logo = image("png", 100, 40)
    assert put_image(server, "grace", "logo", logo, "image/png", None)[0] == 401
    assert put_image(server, "grace", "logo", logo, "image/png", other)[0] == 404  # another church's token
    status, org = put_image(server, "grace", "logo", logo, "image/png", token)
    assert status == 200, org
    meta = org["settings"]["branding"]["logo"]
    assert (meta["width"], meta["height"], meta["content_type"], meta["bytes"]) == (100, 40, "image/png", len(logo))
    poster = image("jpeg", 64, 36)
    status, org = put_image(server, "grace", "poster", poster, "image/jpeg", token)
    assert status == 200 and org["settings"]["branding"]["poster"]["width"] == 64
    webp = image("webp", 30, 20)
    status, org = put_image(server, "grace", "poster", webp, "image/webp", token)
    assert status == 200 and (org["settings"]["branding"]["poster"]["height"]) == 20

    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    refused = [(svg, "image/svg+xml"), (svg, "image/png"), (b"hello", "text/plain"), (logo, "image/jpeg"),
               (logo[:60], "image/png"),  # a PNG cut short: the header is there, the picture isn't
               (logo[:16] + b"\x00\x00\x7f\xff\x00\x00\x7f\xff" + logo[24:], "image/png")]  # claims 32767 px a side
    for data, content_type in refused:
        status, body = put_image(server, "grace", "logo", data, content_type, token)
        assert status == 415, (content_type, data[:20], body)
    too_big = logo + b"\x00" * (2 * 1024 * 1024)
    assert put_image(server, "grace", "logo", too_big, "image/png", token)[0] == 413
    # Without a Content-Length (chunked), the limit is enforced while reading.
    connection = http.client.HTTPConnection("127.0.0.1", server.server.http_port, timeout=30)
    connection.request("PUT", "/api/orgs/grace/branding/logo", body=iter([too_big[i:i + 65536]
                       for i in range(0, len(too_big), 65536)]), encode_chunked=True,
                       headers={"Content-Type": "image/png", "Authorization": f"Bearer {token}"})
    assert connection.getresponse().status == 413
    connection.close()

    # Served publicly, byte for byte, at the URL the watch page links.
    stream = server.api("POST", "/api/streams", {"title": "Branded"}, token=token)[1]
    logo_url = page_config(server.get(f"/watch/{stream['id']}")[2])["branding"]["logo_url"]
    status, headers, body = server.get(logo_url)
    assert status == 200 and body == logo and headers["Content-Type"] == "image/png"
    assert "immutable" in headers["Cache-Control"]
    first_etag = headers["ETag"]
    status, headers, _ = server.get("/brand/grace/logo")
    assert status == 200 and headers["ETag"] == first_etag and "no-cache" in headers["Cache-Control"]
    request = urllib.request.Request(server.http + "/brand/grace/logo", headers={"If-None-Match": first_etag})
    with pytest.raises(urllib.error.HTTPError) as not_modified:
        urllib.request.urlopen(request, timeout=10)
    assert not_modified.value.code == 304

    # A new upload: a new URL and ETag, the new bytes at once; the old hash URL is no longer immutable.
    new_logo = image("png", 120, 48, (10, 200, 90))
    assert put_image(server, "grace", "logo", new_logo, "image/png", token)[0] == 200
    new_url = page_config(server.get(f"/watch/{stream['id']}")[2])["branding"]["logo_url"]
    assert new_url != logo_url
    status, headers, body = server.get("/brand/grace/logo")
    assert body == new_logo and headers["ETag"] != first_etag
    status, headers, body = server.get(logo_url)
    assert body == new_logo and "immutable" not in headers["Cache-Control"]

    # A PATCH of the colours keeps the uploaded images; DELETE removes one.
    status, org = server.api("PATCH", "/api/orgs/grace", {"settings": {"branding": {"primary_color": PRIMARY}}},
                             token=token)
    assert status == 200 and org["settings"]["branding"]["logo"]["width"] == 120
    assert server.api("DELETE", "/api/orgs/grace/branding/logo", token=other)[0] == 404
    status, org = server.api("DELETE", "/api/orgs/grace/branding/logo", token=token)
    assert status == 200 and "logo" not in org["settings"]["branding"]
    assert server.get("/brand/grace/logo")[0] == 404
    assert brand_of(server, "grace", token)["poster"]["width"] == 30


def test_embed_code_and_framing_headers(server: ServerHandle) -> None:
    token = org_token(server, "framing")
    title = 'Good Friday <i>"Tenebrae"</i>'
    stream = server.api("POST", "/api/streams", {"title": title}, token=token)[1]
    code = stream["embed_code"]
    iframe = re.search(r"<iframe ([^>]*)>", code)
    assert iframe and 'aspect-ratio:16/9' in code
    attributes = dict((name, html.unescape(value)) for name, value in re.findall(r'([a-z-]+)="([^"]*)"', iframe.group(1)))
    assert attributes["src"] == f"{server.http}/embed/{stream['id']}"
    assert attributes["title"] == title
    assert attributes["allow"] == "autoplay; fullscreen; picture-in-picture" and " allowfullscreen" in iframe.group(0)

    status, headers, _ = server.get(f"/watch/{stream['id']}")
    assert status == 200 and headers["Content-Security-Policy"] == "frame-ancestors 'self'"
    assert headers["X-Frame-Options"] == "SAMEORIGIN"
    status, headers, page = server.get(f"/embed/{stream['id']}")
    assert status == 200 and headers["Content-Security-Policy"] == "frame-ancestors *"
    assert "X-Frame-Options" not in headers
    assert page_config(page)["chat_enabled"] is False
    assert page_config(server.get(f"/embed/{stream['id']}?chat=1")[2])["chat_enabled"] is True
    assert server.api("PATCH", "/api/orgs/framing", {"settings": {"embed_origins": ["https://www.grace.org"]}},
                      token=token)[0] == 200
    headers = server.get(f"/embed/{stream['id']}")[1]
    assert headers["Content-Security-Policy"] == "frame-ancestors 'self' https://www.grace.org"
    assert server.get("/embed/nope")[0] == 404


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_watch_and_golive_pages_wear_the_branding(server: ServerHandle, browser: Any, tmp_path: Path) -> None:
    token = org_token(server, "chapel")
    branding = {"display_name": "Grace Chapel", "primary_color": PRIMARY, "background_color": BACKGROUND}
    assert server.api("PATCH", "/api/orgs/chapel", {"settings": {"branding": branding}}, token=token)[0] == 200
    assert put_image(server, "chapel", "logo", image("png", 120, 48), "image/png", token)[0] == 200
    poster_color = (20, 160, 70)
    assert put_image(server, "chapel", "poster", image("jpeg", 320, 180, poster_color), "image/jpeg", token)[0] == 200
    stream = server.api("POST", "/api/streams", {"title": "Evensong"}, token=token)[1]
    plain = server.api("POST", "/api/streams", {"title": "Unbranded"})[1]  # the default organization

    page = browser.new_page(viewport={"width": 1000, "height": 720})
    try:
        page.goto(f"{server.http}/watch/{stream['id']}")
        page.wait_for_function("() => { const i = document.querySelector('.church-logo'); return i && i.complete "
                               "&& i.naturalWidth > 0; }", timeout=10000)
        styles = page.evaluate("""() => {
            const css = (el) => getComputedStyle(el);
            return {play: css(document.getElementById('play')).backgroundColor,
                    body: css(document.body).backgroundColor, text: css(document.body).color,
                    logo: document.querySelector('.church-logo').naturalWidth,
                    church: document.querySelector('.church').textContent,
                    poster: document.getElementById('video').poster,
                    paused: document.getElementById('video').paused};
        }""")
        assert styles["play"] == rgb(PRIMARY) and styles["body"] == rgb(BACKGROUND)
        assert styles["text"] == "rgb(0, 0, 0)"  # no text colour set: black is the readable one on cream
        assert styles["logo"] == 120 and "Grace Chapel" in styles["church"]
        assert "/brand/chapel/poster?v=" in styles["poster"] and styles["paused"]
        # The poster is what the video area shows before playback: its colour in the middle of the picture.
        shot = decode_png(page.locator("#video").screenshot(path=str(tmp_path / "poster.png")))
        middle = shot[shot.shape[0] // 2, shot.shape[1] // 2].astype(int)
        assert np.abs(middle - np.array(poster_color)).max() <= 12, middle

        page.goto(f"{server.http}/golive/{stream['id']}")
        golive = page.evaluate("""() => ({body: getComputedStyle(document.body).backgroundColor,
            start: getComputedStyle(document.getElementById('start')).backgroundColor,
            logo: !!document.querySelector('.church-logo')})""")
        assert golive == {"body": rgb(BACKGROUND), "start": rgb(PRIMARY), "logo": True}

        # Another organization's page keeps the defaults: no poster, no logo.
        page.goto(f"{server.http}/watch/{plain['id']}")
        assert page.evaluate("document.getElementById('video').poster") == ""
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") != rgb(BACKGROUND)
    finally:
        page.close()


async def start_site(pages: dict[str, str]) -> tuple[web.AppRunner, int]:
    """The church's own website: another port, so another origin than the media server."""
    async def serve(request: web.Request) -> web.Response:
        if request.match_info["name"] not in pages:
            raise web.HTTPNotFound()
        return web.Response(text=pages[request.match_info["name"]], content_type="text/html")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, runner.addresses[0][1]


def host_page(*snippets: str) -> str:
    return ("<!doctype html><html><head><meta name=viewport content='width=device-width'><style>body{margin:0;"
            "padding:20px} .slot{margin-bottom:20px}</style></head><body><h1>Grace Church</h1>"
            + "".join(f"<div class=slot>{s}</div>" for s in snippets) + "</body></html>")


def embed_frame(page: Any, stream_id: str) -> Any:
    frames = [f for f in page.frames if f.url.endswith(f"/embed/{stream_id}")]
    return frames[0] if frames else None


def test_embed_plays_on_another_site_and_follows_its_frame(server: ServerHandle, browser: Any, tmp_path: Path) -> None:
    token, walled_token = org_token(server, "embedding"), org_token(server, "walled")
    assert server.api("PATCH", "/api/orgs/walled", {"settings": {"embed_origins": ["https://www.example.org"]}},
                      token=walled_token)[0] == 200
    status, stream = server.api("POST", "/api/streams", {"title": "Sunday", "dvr_enabled": False}, token=token)
    assert status == 201
    walled = server.api("POST", "/api/streams", {"title": "Walled"}, token=walled_token)[1]
    private = server.api("POST", "/api/streams", {"title": "Members", "visibility": "PRIVATE"}, token=token)[1]
    runner, port = server.call(start_site({"live": host_page(stream["embed_code"]),
                                           "walled": host_page(stream["embed_code"], walled["embed_code"])}))
    publisher = start_publisher(server.rtmp_url(stream["stream_key"]), seconds=25)
    page = browser.new_page(viewport={"width": 1000, "height": 800})
    try:
        wait_for(lambda: server.api("GET", f"/api/streams/{stream['id']}", token=token)[1]["status"] == "LIVE",
                 30, "the stream to go live")
        page.goto(f"http://127.0.0.1:{port}/live")
        page.wait_for_function("() => [...document.querySelectorAll('iframe')].length === 1")
        wait_for(lambda: embed_frame(page, stream["id"]) is not None, 10, "the embed frame")
        frame = embed_frame(page, stream["id"])
        frame.wait_for_function("document.getElementById('video').currentTime > 0", timeout=30000)
        start = frame.evaluate("document.getElementById('video').currentTime")
        frame.wait_for_function(f"document.getElementById('video').currentTime > {start} + 1", timeout=20000)
        assert frame.evaluate("document.getElementById('room')") is None  # no chat without ?chat=1

        def boxes() -> tuple[float, float, bool]:
            iframe_width = page.evaluate("document.querySelector('iframe').getBoundingClientRect().width")
            video_width, fits = frame.evaluate("""() => {
                const root = document.documentElement;
                return [document.getElementById('video').getBoundingClientRect().width,
                        root.scrollWidth <= root.clientWidth && root.scrollHeight <= root.clientHeight];
            }""")
            return iframe_width, video_width, fits

        wide = boxes()
        page.screenshot(path=str(tmp_path / "embed-wide.png"))
        page.set_viewport_size({"width": 480, "height": 800})
        wait_for(lambda: abs(boxes()[0] - wide[0]) > 100, 5, "the iframe to narrow")
        narrow = boxes()
        page.screenshot(path=str(tmp_path / "embed-narrow.png"))
        for iframe_width, video_width, fits in (wide, narrow):
            assert abs(iframe_width - video_width) <= 1 and fits, (wide, narrow)
        assert narrow[1] < wide[1] - 100

        # An organization that allows only its own site: Chromium refuses to show its embed here.
        page.goto(f"http://127.0.0.1:{port}/walled")
        page.wait_for_function("() => document.querySelectorAll('iframe').length === 2")
        wait_for(lambda: embed_frame(page, stream["id"]) is not None, 10, "the allowed frame")
        embed_frame(page, stream["id"]).wait_for_selector("#video", state="attached", timeout=10000)
        # The same snippet, another organization's stream: Chromium shows its error page in place of the player.
        wait_for(lambda: (page.locator("iframe").nth(1).element_handle().content_frame().url
                          == "chrome-error://chromewebdata/"), 10, "Chromium to refuse the walled frame")
        assert page.locator("iframe").nth(1).get_attribute("src") == f"{server.http}/embed/{walled['id']}"
        assert page.locator("iframe").nth(1).element_handle().content_frame().evaluate(
            "!document.getElementById('video')")

        # A private stream: the embed refuses as the watch page does, and gets no playlist.
        texts = []
        for path in (f"/watch/{private['id']}", f"/embed/{private['id']}"):
            page.goto(server.http + path)
            page.wait_for_function("document.getElementById('status').textContent.length > 0")
            texts.append(page.evaluate("[document.getElementById('status').textContent, "
                                       "document.getElementById('video').currentSrc]"))
        assert texts[0] == texts[1] and texts[0][1] == "" and "private" in texts[0][0].lower()

        # ?chat=1 brings the room into the frame.
        page.goto(f"{server.http}/embed/{stream['id']}?chat=1")
        page.wait_for_selector("#room .chat-form", timeout=10000)
    finally:
        page.close()
        publisher.kill()
        server.call(runner.cleanup())
