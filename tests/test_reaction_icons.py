"""The watch page's reactions, viewer count and message labels are inline SVG, never emoji: Debian's Chromium has
no emoji font out of the box and draws emoji as empty boxes."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest

from mediaserver.chat.protocol import REACTIONS
from tests.server_fixture import run_server, small_config
from tests.browser import module_browser

STATIC_DIR = Path(__file__).resolve().parent.parent / "web" / "static"
# Pictographs (U+1F000-U+1FAFF), miscellaneous symbols and dingbats (U+2600-U+27BF), and the emoji-presentation
# selector (U+FE0F) that turns a plain symbol into an emoji.
PICTOGRAPH = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F]")
JS_PICTOGRAPH = r"/[\u{1F000}-\u{1FAFF}\u{2600}-\u{27BF}\u{FE0F}]/u"
LABELS = {"LIKE": "like", "LOVE": "love", "PRAY": "pray", "AMEN": "amen", "CLAP": "clap", "RAISED_HANDS": "raised hands"}


def test_no_pictographs_in_the_static_pages() -> None:
    files = [p for pattern in ("*.js", "*.html", "*.css") for p in sorted(STATIC_DIR.glob(pattern))]
    assert any(p.name == "chat.js" for p in files)
    found = [f"{p.name}:{number}: {line.strip()[:80]}"
             for p in files for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if PICTOGRAPH.search(line)]
    assert found == []


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from module_browser()


def box(page: Any, selector: str) -> list[dict[str, float]]:
    """Bounding boxes of the <svg> elements matching selector."""
    return page.eval_on_selector_all(selector, "els => els.map(e => { const r = e.getBoundingClientRect(); "
                                               "return { width: r.width, height: r.height }; })")


@pytest.mark.browser
def test_reactions_and_viewer_count_are_drawn_as_svg(tmp_path: Path, browser: Any) -> None:
    server = run_server(small_config(tmp_path / "data"))
    try:
        stream = server.create_stream("Evening prayer")
        page = browser.new_page()
        errors: list[str] = []
        sent: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(str(payload))))
        page.add_init_script("localStorage.setItem('chat-name', 'Ruth')")
        page.goto(f"{server.http}/watch/{stream['id']}")
        page.wait_for_selector("#reactions button svg")
        page.wait_for_selector("#viewer-count svg", timeout=10_000)  # the count arrives once the room is joined
        for kind, text in (("QUESTION", "When does the choir sing?"), ("PRAYER_REQUEST", "For my mother")):
            page.select_option("#chat-type", kind)
            page.fill("#chat-text", text)
            page.press("#chat-text", "Enter")
        page.wait_for_function("document.querySelectorAll('#messages li .text svg').length === 2", timeout=10_000)

        # Nothing on the page is an emoji: not the buttons, not the count, not the labels.
        assert page.evaluate(f"{JS_PICTOGRAPH}.test(document.body.innerText)") is False
        buttons = page.eval_on_selector_all(
            "#reactions button", f"bs => bs.map(b => ({{ type: b.dataset.reaction, label: b.getAttribute('aria-label'),"
                                 f" text: b.textContent, emoji: {JS_PICTOGRAPH}.test(b.textContent),"
                                 " svgs: b.querySelectorAll('svg path').length }))")
        assert [b["type"] for b in buttons] == list(REACTIONS)  # the protocol's names, unchanged
        assert {b["type"]: b["label"] for b in buttons} == LABELS  # what screen readers announce
        assert all(b["text"].strip() == "" and not b["emoji"] and b["svgs"] >= 1 for b in buttons), buttons
        boxes = box(page, "#reactions button > svg")
        assert len(boxes) == len(REACTIONS) and all(b["width"] >= 16 and b["height"] >= 16 for b in boxes), boxes
        assert all(b["width"] > 0 and b["height"] > 0 for b in box(page, "#viewer-count svg, #messages li .text svg"))
        assert page.get_attribute("#viewer-count svg", "aria-label")
        labels = page.eval_on_selector_all("#messages li .text svg", "els => els.map(e => e.getAttribute('aria-label'))")
        assert labels == ["Question", "Prayer request"]
        assert page.eval_on_selector_all("#messages li .text", "els => els.map(e => e.textContent.trim())") == [
            "When does the choir sing?", "For my mother"]

        # A click sends the reaction by its protocol name and floats its icon up the video.
        page.click("#reactions button[data-reaction='LOVE']")
        page.wait_for_selector(".floats .float svg", timeout=5_000)
        floating = box(page, ".floats .float svg")
        assert floating and all(b["width"] > 0 and b["height"] > 0 for b in floating), floating
        assert page.evaluate(f"{JS_PICTOGRAPH}.test(document.querySelector('.floats').textContent)") is False
        assert any('"stream:reaction"' in frame and '"LOVE"' in frame for frame in sent), sent
        page.close()
        assert errors == []
    finally:
        server.stop()
