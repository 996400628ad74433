"""Errors the API promised: every /api error is the documented JSON, and the document and the server agree
on what they accept (deep JSON, empty and ancient dates, unmatched routes, the calendar's 404)."""
from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request
from typing import Any, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from tests.server_fixture import ADMIN_TOKEN, ServerHandle, run_server, small_config
from web.api import iso, json_depth, parse_date, parse_time
from web.errors import json_errors


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    handle = run_server(small_config(tmp_path_factory.mktemp("errors") / "data"))
    yield handle
    handle.stop()


def raw(server: ServerHandle, method: str, path: str, data: bytes | None = None,
        token: str | None = ADMIN_TOKEN) -> tuple[int, dict[str, str], Any]:
    """A request outside the documented operations (server.api checks answers against the document)."""
    request = urllib.request.Request(server.http + path, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, headers, body = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, headers, body = exc.code, dict(exc.headers), exc.read()
    assert headers["Content-Type"].startswith("application/json"), (status, headers, body[:200])
    return status, headers, json.loads(body)


def is_error(body: Any) -> bool:
    return isinstance(body, dict) and set(body) == {"error", "details"} and isinstance(body["error"], str)


def document_accepts(server: ServerHandle, pointer: str, value: Any) -> bool:
    """Whether the schema at a JSON pointer into the served OpenAPI document accepts a value."""
    document = json.loads(server.get("/api/openapi.json")[2])
    registry: Registry = Registry().with_resource("urn:doc", Resource.from_contents(
        {"$schema": "https://json-schema.org/draft/2020-12/schema", **document}))
    return Draft202012Validator({"$ref": f"urn:doc#{pointer}"}, registry=registry).is_valid(value)


@pytest.fixture(scope="module")
def series(server: ServerHandle) -> dict[str, Any]:
    status, body = server.api("POST", "/api/series", {
        "title": "Sunday Worship", "rrule": "FREQ=WEEKLY;BYDAY=SU", "start_time": "10:30", "duration": 90,
        "timezone": "America/Chicago", "dtstart": "2026-01-04"})
    assert status == 201, body
    return body


# -- deep and odd JSON ----------------------------------------------------------------------------------
@pytest.mark.parametrize("body", [
    b"[" * 30_000 + b"]" * 30_000,                               # 60 KB, under the body limit
    b'{"title": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",
    b'{"title": "x", "description": ' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}",
])
def test_deeply_nested_json_is_a_400(server: ServerHandle, body: bytes) -> None:
    status, _, answer = raw(server, "POST", "/api/streams", body)
    assert status == 400 and is_error(answer) and "body" in answer["details"]


@pytest.mark.parametrize("body", [b'{"title": NaN}', b'{"title": Infinity}', b'{"title": ' + b"1" * 5000 + b"}"])
def test_json_that_python_reads_but_json_forbids_is_a_400(server: ServerHandle, body: bytes) -> None:
    status, _, answer = raw(server, "POST", "/api/streams", body)
    assert status == 400 and is_error(answer)


def test_json_depth_ignores_brackets_in_strings() -> None:
    assert json_depth(b'{"a": "[[[{{{", "b": [[1]]}') == 3
    assert json_depth(b'"\\"[["') == 0
    assert json_depth(b"[" * 30_000) == 30_000


# -- dates -----------------------------------------------------------------------------------------
def test_empty_from_does_not_cancel_the_series(server: ServerHandle, series: dict[str, Any]) -> None:
    status, body = server.api("DELETE", f"/api/series/{series['id']}?from=")
    assert status == 400 and "from" in body["details"]
    status, again = server.api("GET", f"/api/series/{series['id']}")
    assert status == 200 and again["until"] is None


@pytest.mark.parametrize("method,path,body,field", [
    ("POST", "/api/streams", {"title": "t", "scheduled_start": "0999-06-24T10:00:00Z"}, "scheduled_start"),
    ("POST", "/api/streams", {"title": "t", "scheduled_end": "0113-06-24T10:00:00Z"}, "scheduled_end"),
    ("POST", "/api/streams", {"title": "t", "scheduled_start": "9999-12-31T23:00:00-05:00"}, "scheduled_start"),
    ("POST", "/api/series", {"title": "t", "rrule": "FREQ=WEEKLY;BYDAY=SU", "start_time": "10:30", "duration": 60,
                             "timezone": "UTC", "dtstart": "0999-01-03"}, "dtstart"),
])
def test_years_before_1000_are_refused(server: ServerHandle, method: str, path: str, body: dict[str, Any],
                                       field: str) -> None:
    status, answer = server.api(method, path, body)
    assert status == 400 and field in answer["details"], answer


def test_years_before_1000_are_refused_on_every_date(server: ServerHandle, series: dict[str, Any]) -> None:
    stream = server.create_stream("Ancient")
    status, body = server.api("PATCH", f"/api/streams/{stream['id']}", {"scheduled_start": "0999-12-31T10:00:00Z"})
    assert status == 400 and "scheduled_start" in body["details"]
    status, body = server.api("PATCH", f"/api/series/{series['id']}", {"from": "0999-01-03"})
    assert status == 400 and "from" in body["details"]
    status, body = server.api("DELETE", f"/api/series/{series['id']}?from=0999-01-03")
    assert status == 400 and "from" in body["details"]
    for query, field in [("from=0999-01-01&to=2026-03-01", "from"), ("from=2026-01-01&to=0999-03-01", "to"),
                         ("from=0999-01-01T00:00:00Z&to=2026-03-01", "from"), ("from=&to=2026-03-01", "from"),
                         ("from=2026-01-01&to=", "to")]:
        status, body = server.api("GET", f"/api/series/{series['id']}/occurrences?{query}")
        assert status == 400 and field in body["details"], (query, body)
    # Nothing ancient was stored: every stream in the list still matches the document (server.api checks).
    status, listing = server.api("GET", "/api/streams?limit=100")
    assert status == 200 and all(s["created_at"][:4] >= "2000" for s in listing["streams"])


def test_date_helpers() -> None:
    assert parse_time("1000-01-01T00:00:00Z") == -30610224000.0
    assert iso(-30610224000.0) == "1000-01-01T00:00:00.000Z"
    assert str(parse_date("2026-12-06")) == "2026-12-06"
    for bad in ["", "0999-12-31T00:00:00Z", "2026-12-06", "2026-12-06T16:30Z", "20261206T163000Z", "2026-02-30T00:00:00Z",
                "9999-12-31T23:00:00-05:00", "1000-01-01T00:30:00+01:00"]:
        with pytest.raises(ValueError):
            parse_time(bad)
    for bad in ["", "0999-12-31", "2026-W49-7", "20261206", "2026-02-30"]:
        with pytest.raises(ValueError):
            parse_date(bad)


# -- unmatched routes --------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/api/nothing-here", "/api/streams/x/y/z", "/api"])
def test_unmatched_api_path_is_a_json_404(server: ServerHandle, path: str) -> None:
    status, _, body = raw(server, "GET", path)
    assert status == 404 and is_error(body)


def test_unmatched_api_path_without_token_is_a_json_401(server: ServerHandle) -> None:
    status, headers, body = raw(server, "GET", "/api/nothing-here", token=None)
    assert status == 401 and is_error(body) and headers["WWW-Authenticate"] == "Bearer"


def test_wrong_method_is_a_json_405(server: ServerHandle) -> None:
    status, headers, body = raw(server, "PUT", "/api/streams", b"{}")
    assert status == 405 and is_error(body)
    assert {"GET", "POST"} <= set(body["details"]["allowed"]) and "POST" in headers["Allow"]


def test_errors_outside_api_stay_as_they_were(server: ServerHandle) -> None:
    status, headers, _ = server.get("/no-such-page")
    assert status == 404 and not headers["Content-Type"].startswith("application/json")


def test_unexpected_exception_is_a_logged_json_500(caplog: pytest.LogCaptureFixture) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    async def run() -> tuple[int, Any, int, str]:
        app = web.Application(middlewares=[json_errors])
        app.router.add_get("/api/broken", broken)
        app.router.add_get("/page", broken)
        async with TestClient(TestServer(app)) as client:
            api = await client.get("/api/broken")
            page = await client.get("/page")
            return api.status, await api.json(), page.status, page.content_type

    with caplog.at_level(logging.ERROR, logger="web.errors"):
        status, body, page_status, page_type = asyncio.run(run())
    assert status == 500 and body == {"error": "internal server error", "details": None}
    assert "GET /api/broken" in caplog.text and "a bug" in caplog.text
    assert page_status == 500 and page_type != "application/json"  # other paths keep aiohttp's handling


# -- the document and the server agree ------------------------------------------------------------
def test_calendar_404_is_documented_json(server: ServerHandle) -> None:
    status, body = server.api("GET", "/api/orgs/no-such-church/calendar.ics", token=None)  # checked against the document
    assert status == 404 and is_error(body)


OCCURRENCES = "/paths/~1api~1series~1{series_id}~1occurrences/get/parameters"


@pytest.mark.parametrize("pointer,good,bad", [
    ("/components/schemas/StreamCreate/properties/timezone", "America/Chicago", ""),
    ("/components/schemas/OrgUpdate/properties/timezone", "Europe/London", ""),
    ("/components/schemas/WebhookCreate/properties/url", "https://example.org/hook", ""),
    ("/components/schemas/StreamCreate/properties/title", "Sunday", "   "),
    ("/components/schemas/StreamCreate/properties/scheduled_start", "2026-12-06T16:30:00Z", "0999-12-06T16:30:00Z"),
    ("/components/schemas/SeriesCreate/properties/dtstart", "2026-12-06", "0999-12-06"),
    ("/components/schemas/SeriesUpdate/properties/from", "2026-12-06", ""),
    (f"{OCCURRENCES}/1/schema", "2026-12-06", ""),
    (f"{OCCURRENCES}/2/schema", "2026-12-06T00:00:00-06:00", ""),
    ("/paths/~1api~1series~1{series_id}/delete/parameters/1/schema", "2026-12-06", ""),
    ("/paths/~1api~1streams/get/parameters/2/schema", 40, 10**30),
])
def test_document_refuses_what_the_server_refuses(server: ServerHandle, pointer: str, good: Any, bad: Any) -> None:
    assert document_accepts(server, pointer, good), pointer
    assert not document_accepts(server, pointer, bad), pointer


def test_server_refuses_empty_values(server: ServerHandle, series: dict[str, Any]) -> None:
    for method, path, body, field in [
        ("POST", "/api/streams", {"title": "t", "timezone": ""}, "timezone"),
        ("POST", "/api/streams", {"title": "t", "timezone": "Mars/Base"}, "timezone"),
        ("PATCH", "/api/orgs/default", {"timezone": ""}, "timezone"),
        ("POST", "/api/webhooks", {"url": "", "secret": "s" * 16, "events": ["stream.live"]}, "url"),
        ("POST", "/api/orgs/default/member-tokens", {"name": "  "}, "name"),
    ]:
        status, answer = server.api(method, path, body)
        assert status == 400 and field in answer["details"], (method, path, answer)
    status, answer = server.api("GET", "/api/streams?offset=16758068330572619599314944")
    assert status == 400 and "offset" in answer["details"]


def test_webhook_url_with_a_broken_bracketed_host_is_a_400(server: ServerHandle) -> None:
    # Found by Schemathesis: urlparse raises on "[C]", which is no IP address.
    status, answer = server.api("POST", "/api/webhooks", {"url": "https://[C]", "secret": "s" * 16, "events": ["*"]})
    assert status == 400 and "url" in answer["details"], answer
