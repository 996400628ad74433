"""Moderation rules and frame parsing, sans-IO (mediaserver/chat/moderation.py, chat/room.parse_frame), with a
bounded fuzz of the frame parser."""
from __future__ import annotations

import json
import random

import pytest

from mediaserver.chat.room import ChatLimits, FrameError, parse_frame
from mediaserver.chat.moderation import BlockedWords, ModerationPolicy, find_link

BLOCKED = BlockedWords(["ass", "heretic", "badword"])


@pytest.mark.parametrize("text", [
    "badword", "you BADWORD", "b\u200badword", "bad\u00adword", "b\u0430dword", "\uff42\uff41\uff44word",
    "b-a-d-w-o-r-d", "b.a.d.w.o.r.d", "b a d w o r d", "b_a_d_w_o_r_d", "well b a d w o r d then",
    "you HÉRÉTIC", "h\u0435r\u0435tic", "ass", "what an ass!",
])
def test_disguised_blocked_words_are_caught(text: str) -> None:
    assert BLOCKED.find(text) is not None


@pytest.mark.parametrize("text", ["Welcome to Sunday class and the assembly", "pass the bread", "harassment",
                                  "bad word", "a good word", "Heretical? no: heretics, plural"])
def test_ordinary_words_pass(text: str) -> None:
    assert BLOCKED.find(text) is None


@pytest.mark.parametrize("text, link", [
    ("go to scam.ru/win", "scam.ru"), ("visit grace.church today", "grace.church"),
    ("www.example.com", "www.example.com"), ("https://x.example", "https://x.example"),
    ("x.github.io", "x.github.io"), ("example.co.uk/path", "example.co.uk"), ("mail me: a@grace.church", "grace.church"),
    ("\uff53\uff43\uff41\uff4d\uff0e\uff52\uff55", "scam.ru"), ("scam\u200b.ru", "scam.ru"), ("scam\u3002ru", "scam.ru"),
    ("\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444", "\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444"),
    ("see 10.0.0.1", "10.0.0.1"),
])
def test_links_with_any_public_suffix_are_found(text: str, link: str) -> None:
    assert find_link(text) == link


@pytest.mark.parametrize("text", ["That was the end.Then we prayed", "John 3.16", "at 10.30 sharp", "e.g. this",
                                  "Mr.Smith", "v1.2.3", "node.js is fine", "a.b"])
def test_sentences_are_not_links(text: str) -> None:
    assert find_link(text) is None


def test_invisible_only_and_bidi_override_messages_are_refused_with_a_reason() -> None:
    policy = ModerationPolicy()
    for text, reason in (("\u200b\u200b", "no visible characters"), ("\u2060\u00ad\ufeff", "no visible characters"),
                         ("hello \u202eevil", "bidi"), ("   ", "empty")):
        verdict = policy.judge(text, privileged=False, last_sent=None, now=0)
        assert verdict.action == "reject" and reason in verdict.reason, (text, verdict)
    assert policy.judge("שלום \u200f friends", privileged=False, last_sent=None, now=0).action == "allow"


def test_policy_from_settings() -> None:
    policy = ModerationPolicy.from_settings({"chat": {"blocked_words": ["x"], "slow_mode_seconds": 5,
                                                      "hold_for_review": True, "link_filter": False}})
    assert policy.slow_mode_seconds == 5 and policy.hold_for_review and not policy.link_filter
    assert ModerationPolicy.from_settings({}).link_filter


def test_frame_limits_count_utf8_bytes() -> None:
    limits = ChatLimits()
    ok = json.dumps({"event": "chat:message", "data": {"text": "é" * 1000}}, ensure_ascii=False)
    assert parse_frame(ok, limits)[0] == "chat:message"  # 1000 characters, 2000 bytes
    wide = json.dumps({"event": "chat:message", "data": {"text": "\u4e2d" * 3900}}, ensure_ascii=False)
    assert len(wide) < limits.max_frame_bytes < len(wide.encode())
    with pytest.raises(FrameError) as caught:
        parse_frame(wide, limits)
    assert caught.value.code == "too_large" and caught.value.close is None
    with pytest.raises(FrameError) as huge:
        parse_frame("x" * (limits.close_frame_bytes + 1), limits)
    assert huge.value.close == 1009


def test_frame_parser_fuzz() -> None:
    rng = random.Random(1234)
    seeds = ['{"event": "chat:message", "data": {"text": "hi"}}', '{"event": "auth", "data": {"token": "x"}}']
    alphabet = '{}[]":,\\ \u0000\ud800é\u200b' + "abcdefghij0123456789"
    for _ in range(3000):
        text = list(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            pos = rng.randrange(len(text) + 1)
            op = rng.random()
            if op < 0.4 and text:
                del text[min(pos, len(text) - 1)]
            else:
                text.insert(pos, rng.choice(alphabet))
        try:
            event, data = parse_frame("".join(text), ChatLimits())
        except FrameError as exc:
            assert exc.code in ("bad_frame", "too_large")
        else:
            assert isinstance(event, str) and isinstance(data, dict)
