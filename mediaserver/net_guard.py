"""Which network destinations outgoing requests (webhooks) may reach: public addresses only, so a URL can't make
the server probe its own loopback, LAN, link-local or cloud-metadata addresses; and an aiohttp resolver enforcing it.

The check runs twice: when a URL is accepted (`check_destination`, a literal address or a name resolving only to
refused addresses is refused) and at every connection (`GuardedResolver`), where the addresses checked are the very
ones connected to, so a name re-pointed after the first check (DNS rebinding) gains nothing.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Callable, Union

from aiohttp.abc import AbstractResolver, ResolveResult

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
# (host, port) -> the addresses it resolves to, as strings; raises OSError when it can't be resolved.
AddressLookup = Callable[[str, int], list[str]]

NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052: the last 32 bits are an IPv4 address


class RefusedDestination(OSError):
    """A destination the policy refuses; str() is the reason, e.g. "refused: destination 10.0.0.5 is a private
    address". An OSError, so aiohttp reports it as a failed connection (and never connects)."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"refused: destination {address} is {reason}")
        self.address, self.reason = address, reason

    def __str__(self) -> str:
        return str(self.args[0])


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped (::ffff:a.b.c.d), 6to4 (2002::/16) or NAT64 (64:ff9b::/96) address leads to."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(address: str | Address) -> str | None:
    """Why `address` is refused ("a loopback address", "a private address", ...), or None for a public one."""
    try:
        ip = address if isinstance(address, (ipaddress.IPv4Address, ipaddress.IPv6Address)) else ipaddress.ip_address(address)
    except ValueError:
        return "not a valid IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            reason = address_refusal(embedded)
            return None if reason is None else f"{reason} ({embedded} inside IPv6)"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local):
        return "a private address"
    if not ip.is_global:
        return "a special-purpose (non-public) address"
    return None


def literal_address(host: str) -> Address | None:
    """The address `host` (a URL's host, IPv6 without brackets) stands for when it is one rather than a name,
    including the numeric forms resolvers accept: 2130706433, 0x7f000001, 017700000001, 127.1 all mean 127.0.0.1.
    Raises RefusedDestination for an IPv6-looking host that isn't a valid address."""
    host = host.rstrip(".")  # "127.0.0.1." is still 127.0.0.1
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise RefusedDestination(host, "not a valid IP address") from None
    try:
        return ipaddress.IPv4Address(host)
    except ValueError:
        pass
    if not host or not host.isascii() or not all(c.isalnum() or c == "." for c in host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))  # the legacy forms getaddrinfo would accept
    except OSError:
        return None


def check_address(address: str | Address) -> None:
    """Raises RefusedDestination unless `address` is public."""
    reason = address_refusal(address)
    if reason is not None:
        raise RefusedDestination(str(address), reason)


def check_literal_host(host: str) -> None:
    """Raises RefusedDestination when `host` is an address (in any form) that is refused; names pass."""
    literal = literal_address(host)
    if literal is not None:
        check_address(literal)


def system_lookup(host: str, port: int) -> list[str]:
    """The system resolver's addresses for `host` (blocking: call it from a thread)."""
    return [str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def check_destination(host: str, port: int, lookup: AddressLookup = system_lookup) -> None:
    """For accepting a URL: raises RefusedDestination when `host` is a refused address, or a name whose every
    address is refused. A name that doesn't resolve (yet) passes: each connection is checked again anyway."""
    check_literal_host(host)
    try:
        addresses = lookup(host, port)
    except (OSError, UnicodeError):
        return
    refused = [(address, reason) for address in addresses if (reason := address_refusal(address)) is not None]
    if addresses and len(refused) == len(addresses):
        raise RefusedDestination(*refused[0])


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that resolves with another one (aiohttp's default unless given) and keeps only the
    public addresses, raising RefusedDestination when none is left. Pass it as `TCPConnector(resolver=...)`: the
    connector connects to exactly these addresses (no second lookup), and HTTPS still verifies the certificate
    against the host name. aiohttp doesn't ask the resolver about literal addresses: check those with
    `check_literal_host` before the request."""

    def __init__(self, resolver: AbstractResolver | None = None) -> None:
        self._owns_resolver = resolver is None  # one given is closed by whoever made it
        if resolver is None:
            from aiohttp.resolver import DefaultResolver

            resolver = DefaultResolver()
        self._resolver = resolver

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        check_literal_host(host)
        results = await self._resolver.resolve(host, port, family)
        allowed: list[ResolveResult] = []
        first_refusal: RefusedDestination | None = None
        for result in results:
            reason = address_refusal(result["host"])
            if reason is None:
                allowed.append(result)
            elif first_refusal is None:
                first_refusal = RefusedDestination(result["host"], reason)
        if not allowed:
            raise first_refusal or RefusedDestination(host, "a name with no address")
        return allowed

    async def close(self) -> None:
        if self._owns_resolver:
            await self._resolver.close()


def refusal_behind(exc: BaseException) -> RefusedDestination | None:
    """The RefusedDestination an aiohttp client error was caused by, if any."""
    current: BaseException | None = exc
    for _ in range(8):  # a short chain: ClientConnectorError -> its os_error / __cause__
        if current is None or isinstance(current, RefusedDestination):
            return current
        nested = getattr(current, "os_error", None)  # where aiohttp's ClientConnectorError keeps it
        current = nested if isinstance(nested, BaseException) else current.__cause__ or current.__context__
    return None
