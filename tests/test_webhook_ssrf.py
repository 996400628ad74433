"""Webhooks can't be used to probe the server's own network: loopback, private, link-local, multicast and other
non-public destinations are refused when subscribing (through the running server's API) and at every send,
on the addresses actually connected to, so a name re-pointed at 127.0.0.1 after subscribing (DNS rebinding)
reaches nothing; allow_private_networks turns all of it off."""
from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Iterator

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from mediaserver.net_guard import (GuardedResolver, RefusedDestination, address_refusal, check_destination,
                                   refusal_behind)
from mediaserver.webhooks import WebhookError, WebhookSender, WebhookStore
from tests.server_fixture import ServerHandle, run_server, small_config
from tests.test_webhooks import Receiver, until

pytestmark = pytest.mark.timeout(30)

SECRET = "a-long-webhook-secret-123"
ORG = "org_a"
PUBLIC = "93.184.216.34"  # what "rebind.example" resolves to while subscribing


class FakeResolver(AbstractResolver):
    """Answers from a table, like a DNS server under someone else's control; counts the questions."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.asked.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ResolveResult(hostname=host, host=address, port=port,
                              family=socket.AF_INET6 if ":" in address else socket.AF_INET, proto=0,
                              flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV)
                for address in self.table[host]]

    async def close(self) -> None:
        pass


# -- subscribing through the API ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerHandle]:
    config = small_config(tmp_path_factory.mktemp("ssrf") / "data")
    assert config.webhooks.allow_private_networks is False  # the default
    handle = run_server(config)
    yield handle
    handle.stop()


@pytest.mark.parametrize("url, reason", [
    ("http://127.0.0.1:9/x", "127.0.0.1 is a loopback address"),
    ("http://localhost:9/", "is a loopback address"),  # a name: resolved, every address refused
    ("http://[::1]/", "::1 is a loopback address"),
    ("http://0.0.0.0/", "0.0.0.0 is an unspecified address"),
    ("http://10.1.2.3/", "10.1.2.3 is a private address"),
    ("http://192.168.1.20:8080/hook", "192.168.1.20 is a private address"),
    ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
    ("http://2130706433/", "127.0.0.1 is a loopback address"),
    ("http://0x7f000001/", "127.0.0.1 is a loopback address"),
    ("http://017700000001/", "127.0.0.1 is a loopback address"),
    ("http://127.1/", "127.0.0.1 is a loopback address"),
    ("http://[::ffff:127.0.0.1]/", "is a loopback address (127.0.0.1 inside IPv6)"),
    ("http://224.0.0.1/", "224.0.0.1 is a multicast address"),
    ("https://[fd00::5]/hook", "fd00::5 is a private address"),
])
def test_subscribing_a_non_public_destination_is_a_400_naming_the_url(server: ServerHandle, url: str,
                                                                       reason: str) -> None:
    status, body = server.api("POST", "/api/webhooks", {"url": url, "secret": SECRET, "events": ["*"]})
    assert status == 400, body
    assert body["error"] == "invalid fields" and list(body["details"]) == ["url"]
    message = body["details"]["url"]
    assert message.startswith("url: refused: destination ") and reason in message, message
    assert "allow_private_networks" in message
    assert all(hook["url"] != url for hook in server.api("GET", "/api/webhooks")[1]["webhooks"])


def test_allowing_private_networks_accepts_a_loopback_receiver(tmp_path: Path) -> None:
    config = small_config(tmp_path / "data")
    config.webhooks.allow_private_networks = True
    server = run_server(config)
    try:
        url = "http://127.0.0.1:8099/hook"
        status, hook = server.api("POST", "/api/webhooks", {"url": url, "secret": SECRET, "events": ["*"]})
        assert status == 201 and hook["url"] == url
    finally:
        server.stop()


# -- the address policy -------------------------------------------------------------------------------
@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "a loopback address"), ("127.255.0.9", "a loopback address"), ("::1", "a loopback address"),
    ("0.0.0.0", "an unspecified address"), ("::", "an unspecified address"),
    ("10.0.0.5", "a private address"), ("172.16.3.4", "a private address"), ("192.168.0.1", "a private address"),
    ("fc00::1", "a private address"), ("fd12:3456::1", "a private address"), ("fec0::1", "a private address"),
    ("169.254.169.254", "a link-local address"), ("fe80::1", "a link-local address"),
    ("224.0.0.1", "a multicast address"), ("239.255.255.250", "a multicast address"), ("ff02::1", "a multicast address"),
    ("240.0.0.1", "a reserved address"), ("255.255.255.255", "a reserved address"),
    ("100.64.0.1", "a special-purpose (non-public) address"),
    ("::ffff:127.0.0.1", "a loopback address (127.0.0.1 inside IPv6)"),
    ("::ffff:10.0.0.1", "a private address (10.0.0.1 inside IPv6)"),
    ("2002:a9fe:a9fe::1", "a link-local address (169.254.169.254 inside IPv6)"),  # 6to4
    ("64:ff9b::7f00:1", "a loopback address (127.0.0.1 inside IPv6)"),  # NAT64
    ("not-an-address", "not a valid IP address"),
])
def test_non_public_addresses_are_refused_with_a_reason(address: str, reason: str) -> None:
    assert address_refusal(address) == reason


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8",
                                     "64:ff9b::808:808", "2002:808:808::1"])
def test_public_addresses_pass(address: str) -> None:
    assert address_refusal(address) is None


def test_a_name_is_refused_only_when_every_address_is() -> None:
    table = {"lan.example": ["10.0.0.7", "127.0.0.1"], "mixed.example": ["10.0.0.7", PUBLIC]}

    def lookup(host: str, port: int) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    with pytest.raises(RefusedDestination) as caught:
        check_destination("lan.example", 443, lookup)
    assert str(caught.value) == "refused: destination 10.0.0.7 is a private address"
    check_destination("mixed.example", 443, lookup)  # connections go to the public one only
    check_destination("not-yet.example", 443, lookup)  # not resolvable now: checked at every send
    with pytest.raises(RefusedDestination):
        check_destination("127.0.0.1", 443, lookup)  # an address is never looked up


def test_the_store_refuses_a_name_that_resolves_privately(tmp_path: Path) -> None:
    store = WebhookStore(tmp_path / "db.sqlite", lookup=lambda host, port: ["192.168.1.1"])
    try:
        with pytest.raises(WebhookError) as caught:
            store.subscribe(ORG, "https://router.example/hook", SECRET, ["*"])
        assert str(caught.value).startswith("url: refused: destination 192.168.1.1 is a private address")
        assert store.subscriptions(ORG) == []
    finally:
        store.close()


# -- at send time: the resolver under aiohttp ---------------------------------------------------------
def test_guarded_resolver_never_connects_to_a_rebound_name() -> None:
    async def main() -> None:
        receiver = await Receiver().start()
        rebound = FakeResolver({"rebind.example": ["127.0.0.1"]})
        url = f"http://rebind.example:{receiver.port}/hook"
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=GuardedResolver(rebound))) as guarded:
                with pytest.raises(aiohttp.ClientConnectorError) as caught:
                    await guarded.post(url, data=b"{}")
            refused = refusal_behind(caught.value)
            assert refused is not None and str(refused) == "refused: destination 127.0.0.1 is a loopback address"
            assert rebound.asked == ["rebind.example"]
            assert receiver.requests == []  # never reached
            # The same request without the guard (what allow_private_networks does) reaches it.
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=rebound)) as open_session:
                async with open_session.post(url, data=b"{}") as response:
                    assert response.status == 204
            assert len(receiver.requests) == 1
        finally:
            await receiver.stop()

    asyncio.run(main())


def test_guarded_resolver_keeps_only_public_addresses() -> None:
    async def main() -> None:
        guard = GuardedResolver(FakeResolver({"mixed.example": ["127.0.0.1", PUBLIC, "::1", "2606:4700:4700::1111"],
                                              "lan.example": ["10.0.0.5"]}))
        assert [r["host"] for r in await guard.resolve("mixed.example", 443)] == [PUBLIC, "2606:4700:4700::1111"]
        with pytest.raises(RefusedDestination, match=r"^refused: destination 10\.0\.0\.5 is a private address$"):
            await guard.resolve("lan.example", 443)

    asyncio.run(main())


def _sender(store: WebhookStore, resolver: AbstractResolver | None = None) -> WebhookSender:
    return WebhookSender(store, timeout=5.0, backoff_base=0.2, poll_interval=0.05, resolver=resolver)


def test_a_rebound_delivery_is_a_failed_attempt_that_says_why(tmp_path: Path) -> None:
    async def main() -> None:
        receiver = await Receiver().start()
        # Public while subscribing, 127.0.0.1 when the delivery is sent.
        store = WebhookStore(tmp_path / "db.sqlite", lookup=lambda host, port: [PUBLIC])
        sub = store.subscribe(ORG, f"http://rebind.example:{receiver.port}/hook", SECRET, ["*"])
        sender = _sender(store, resolver=FakeResolver({"rebind.example": ["127.0.0.1"]}))
        await sender.start()
        try:
            await asyncio.to_thread(store.enqueue, ORG, "stream.live", {"stream_id": "st_1"})
            sender.wake()
            rows = await until(lambda: [r for r in store.deliveries(ORG, sub["id"]) if r["attempts"] >= 2],
                               timeout=8.0, what="two refused attempts")
            row = rows[0]
            assert row["status"] == "PENDING" and row["last_status_code"] is None  # retried like any failure
            assert row["last_error"] == "refused: destination 127.0.0.1 is a loopback address"
            assert all(a["status_code"] is None and a["error"] == row["last_error"] for a in row["attempt_log"])
            assert receiver.requests == []
        finally:
            await sender.stop()
            await receiver.stop()
            store.close()

    asyncio.run(main())


@pytest.mark.parametrize("host", ["127.0.0.1", "2130706433", "127.1", "[::ffff:127.0.0.1]"])
def test_a_literal_address_stored_while_allowed_is_refused_once_not(tmp_path: Path, host: str) -> None:
    async def main() -> None:
        receiver = await Receiver().start()
        # Subscribed while private networks were allowed; the setting has been turned off since.
        store = WebhookStore(tmp_path / "db.sqlite", allow_private_networks=True)
        sub = store.subscribe(ORG, f"http://{host}:{receiver.port}/hook", SECRET, ["*"])
        sender = _sender(store)
        await sender.start()
        try:
            await asyncio.to_thread(store.enqueue, ORG, "stream.live", {"stream_id": "st_1"})
            sender.wake()
            rows = await until(lambda: [r for r in store.deliveries(ORG, sub["id"]) if r["attempts"] >= 1],
                               timeout=8.0, what="a refused attempt")
            assert rows[0]["last_error"].startswith("refused: destination ")
            assert "is a loopback address" in rows[0]["last_error"]
            assert receiver.requests == []
        finally:
            await sender.stop()
            await receiver.stop()
            store.close()

    asyncio.run(main())
