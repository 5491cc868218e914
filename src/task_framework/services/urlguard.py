"""Callback URL safety (API.md §12.7): refuse URLs that reach internal addresses.

A URL is checked twice: when a webhook is created or updated (the host is resolved and
every address must be allowed) and again at delivery time, where the connection goes to
the vetted address, so a DNS answer that changes in between (rebinding) does not help.

Blocked unless allowed by configuration: loopback, private (RFC 1918, ``fc00::/7``),
link-local, ``0.0.0.0/8``, shared address space ``100.64.0.0/10``, multicast, reserved,
and the IPv6 forms that embed such an IPv4 address (mapped, compatible, 6to4, Teredo,
NAT64). Cloud metadata endpoints stay blocked even when private networks are allowed:
only an explicit entry in the allow-list opens a metadata *address*, and the metadata
*hostnames* stay blocked whatever the allow-list holds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from task_framework.errors import ValidationFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

RESOLVE_TIMEOUT_SECONDS = 3.0
MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}

METADATA_HOSTNAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.platformequinix.com",
        "metadata.tencentyun.com",
    }
)
METADATA_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack, ...
        "169.254.170.2/32",  # AWS ECS task metadata
        "169.254.169.123/32",  # AWS time sync
        "100.100.100.200/32",  # Alibaba Cloud
        "fd00:ec2::254/128",  # AWS over IPv6
    )
)
# Ranges Python's ``is_global`` may consider global on some versions, blocked anyway.
EXTRA_BLOCKED: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "64:ff9b:1::/48")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NUMERIC_HOST_CHARS = frozenset("0123456789abcdefx.")


class InvalidWebhookUrl(ValidationFailed):
    """400 WEBHOOK_INVALID_URL."""

    code = "WEBHOOK_INVALID_URL"


class BlockedAddress(Exception):
    """Raised at delivery time: the host resolves to an address that is not allowed."""


@dataclass(frozen=True, slots=True)
class Target:
    """A vetted URL: where to connect and what to present as Host / SNI."""

    scheme: str
    host: str
    port: int
    address: IPAddress
    path: str  # path and query, never empty

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    @property
    def connect_url(self) -> str:
        """The URL with the host replaced by the vetted address."""
        addr = f"[{self.address}]" if self.address.version == 6 else str(self.address)
        return f"{self.scheme}://{addr}:{self.port}{self.path}"


def parse_ip_literal(host: str) -> IPAddress | None:
    """An IP address written in the host, including the IPv4 spellings that
    ``inet_aton`` accepts (``2130706433``, ``0177.0.0.1``, ``0x7f.1``, ``127.1``)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    lowered = host.lower()
    if lowered and set(lowered) <= _NUMERIC_HOST_CHARS and lowered[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(lowered))
        except OSError:
            return None
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    packed = address.packed
    if packed[:12] == bytes(12) and int(address) > 1:  # IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(packed[12:])
    return None


def is_metadata_address(address: IPAddress) -> bool:
    candidates: list[IPAddress] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            candidates.append(embedded)
    return any(
        c in net for c in candidates for net in METADATA_NETWORKS if c.version == net.version
    )


def is_public_address(address: IPAddress) -> bool:
    """True when ``address`` (and any IPv4 address it embeds) is globally routable."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            return False
        embedded = _embedded_ipv4(address)
        if embedded is not None and not is_public_address(embedded):
            return False
    if any(address in net for net in EXTRA_BLOCKED if net.version == address.version):
        return False
    return not (
        not address.is_global
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or address.is_loopback
        or address.is_link_local
        or address.is_private
    )


class UrlGuard:
    """Checks callback URLs against the SSRF policy of this deployment."""

    def __init__(
        self, *, allow_private: bool = False, allowed_networks: Iterable[str] = ()
    ) -> None:
        self.allow_private = allow_private
        self.allowed: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n.strip(), strict=False) for n in allowed_networks if n.strip()
        )

    def address_allowed(self, address: IPAddress) -> bool:
        if any(address in net for net in self.allowed if net.version == address.version):
            return True
        if is_metadata_address(address):
            return False
        return self.allow_private or is_public_address(address)

    def parse(self, url: str) -> SplitResult:
        """Syntax checks only; raises :class:`InvalidWebhookUrl`."""
        url = url.strip()
        if len(url) > MAX_URL_LENGTH:
            raise InvalidWebhookUrl("Invalid webhook URL: too long")
        if any(ch.isspace() or ord(ch) < 0x20 or ch == "\\" for ch in url):
            raise InvalidWebhookUrl("Invalid webhook URL: illegal characters")
        try:
            parts = urlsplit(url)
            _ = parts.port
        except ValueError as exc:
            raise InvalidWebhookUrl(f"Invalid webhook URL: {exc}") from exc
        if parts.scheme.lower() not in DEFAULT_PORTS:
            raise InvalidWebhookUrl("Invalid webhook URL: only http and https are allowed")
        if "@" in parts.netloc or parts.username is not None or parts.password is not None:
            raise InvalidWebhookUrl("Invalid webhook URL: credentials in the URL are not allowed")
        if not parts.hostname:
            raise InvalidWebhookUrl("Invalid webhook URL: missing host")
        return parts

    def _host_and_port(self, parts: SplitResult) -> tuple[str, int]:
        host = (parts.hostname or "").rstrip(".").lower()
        if not host:
            raise InvalidWebhookUrl("Invalid webhook URL: missing host")
        # Always: an allow-list names networks, and a metadata hostname is never one.
        if host in METADATA_HOSTNAMES:
            raise InvalidWebhookUrl(f"Blocked webhook URL: {host} is a metadata endpoint")
        return host, parts.port or DEFAULT_PORTS[parts.scheme.lower()]

    async def _resolve(self, host: str, port: int) -> list[IPAddress]:
        literal = parse_ip_literal(host)
        if literal is not None:
            return [literal]
        loop = asyncio.get_running_loop()
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_SECONDS
        )
        found: list[IPAddress] = []
        for info in infos:
            raw = str(info[4][0])
            address = ipaddress.ip_address(raw.split("%", 1)[0])
            if address not in found:
                found.append(address)
        return found

    async def check(self, url: str) -> str:
        """Check a URL at creation; returns it trimmed. Raises WEBHOOK_INVALID_URL.

        A host that does not resolve (yet) is accepted: it cannot reach anything now, and
        the delivery-time check applies to whatever it resolves to later.
        """
        parts = self.parse(url)
        host, port = self._host_and_port(parts)
        try:
            addresses = await self._resolve(host, port)
        except (OSError, TimeoutError, ValueError):
            return url.strip()
        for address in addresses:
            if not self.address_allowed(address):
                raise InvalidWebhookUrl(
                    f"Blocked webhook URL: {host} resolves to a non-public address"
                )
        return url.strip()

    async def target(self, url: str) -> Target:
        """Resolve at delivery time; raises :class:`BlockedAddress` or ``OSError``."""
        try:
            parts = self.parse(url)
            host, port = self._host_and_port(parts)
        except InvalidWebhookUrl as exc:
            raise BlockedAddress(exc.message) from exc
        addresses = await self._resolve(host, port)
        if not addresses:
            raise OSError(f"{host} has no address")
        if not all(self.address_allowed(a) for a in addresses):
            raise BlockedAddress("blocked address")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return Target(parts.scheme.lower(), host, port, addresses[0], path)


__all__ = [
    "BlockedAddress",
    "InvalidWebhookUrl",
    "Target",
    "UrlGuard",
    "is_public_address",
    "parse_ip_literal",
]
