"""The SSRF guard: every internal address form is refused while the guard is on."""

from __future__ import annotations

import ipaddress

import pytest

from task_framework.services.urlguard import (
    BlockedAddress,
    InvalidWebhookUrl,
    UrlGuard,
    parse_ip_literal,
)

BLOCKED_URLS = [
    # loopback, in every IPv4 spelling inet_aton accepts
    "http://127.0.0.1/hook",
    "http://127.1/hook",
    "http://2130706433/hook",
    "http://0177.0.0.1/hook",
    "http://0x7f.1/hook",
    "http://0x7f000001/hook",
    "http://0177.1/hook",
    "http://localhost:8080/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:7f00:1]/hook",
    "http://[0:0:0:0:0:ffff:7f00:1]/hook",
    # private
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://0xc0a80101/",
    "http://3232235777/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[::ffff:10.1.2.3]/",
    # link-local and cloud metadata
    "http://169.254.169.254/latest/meta-data/",
    "http://2852039166/latest/meta-data/",
    "http://0251.0376.0251.0376/",
    "http://[fe80::1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[fd00:ec2::254]/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata/",
    "http://100.100.100.200/",
    # unspecified, shared, multicast, reserved, embedded forms
    "http://0.0.0.0/",
    "http://0/",
    "http://[::]/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
    "http://[2002:a00:1::]/",  # 6to4 of 10.0.0.1
]
MALFORMED_URLS = [
    "ftp://example.com/",
    "file:///etc/passwd",
    "gopher://127.0.0.1/",
    "http:///nohost",
    "http://user:pass@93.184.216.34/",
    "http://93.184.216.34@127.0.0.1/",
    "http://example.com:99999/",
    "http://exa mple.com/",
    "http://example.com\\@127.0.0.1/",
]
PUBLIC_URLS = ["http://93.184.216.34/", "https://8.8.8.8:8443/x?y=1", "http://[2606:4700::1111]/"]


@pytest.mark.parametrize("url", BLOCKED_URLS)
async def test_internal_addresses_are_refused(url: str) -> None:
    with pytest.raises(InvalidWebhookUrl) as caught:
        await UrlGuard().check(url)
    assert caught.value.code == "WEBHOOK_INVALID_URL"
    assert caught.value.status == 400
    with pytest.raises(BlockedAddress):
        await UrlGuard().target(url)


@pytest.mark.parametrize("url", MALFORMED_URLS)
async def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(InvalidWebhookUrl):
        await UrlGuard().check(url)


@pytest.mark.parametrize("url", PUBLIC_URLS)
async def test_public_addresses_pass(url: str) -> None:
    assert await UrlGuard().check(url) == url
    target = await UrlGuard().target(url)
    assert target.address == parse_ip_literal(target.host)


async def test_allow_private_admits_loopback_but_not_metadata() -> None:
    guard = UrlGuard(allow_private=True)
    assert await guard.check("http://127.0.0.1:9/hook") == "http://127.0.0.1:9/hook"
    with pytest.raises(InvalidWebhookUrl):
        await guard.check("http://169.254.169.254/")
    with pytest.raises(InvalidWebhookUrl):
        await guard.check("http://metadata.google.internal/")


async def test_allow_list_admits_exactly_its_networks() -> None:
    guard = UrlGuard(allowed_networks=["127.0.0.0/8", "169.254.169.254/32"])
    await guard.check("http://127.0.0.2/")
    await guard.check("http://169.254.169.254/")
    with pytest.raises(InvalidWebhookUrl):
        await guard.check("http://10.0.0.1/")


@pytest.mark.parametrize("allow_private", [False, True])
async def test_an_allow_list_keeps_metadata_hostnames_blocked(allow_private: bool) -> None:
    # Regression: any allow-list entry used to switch the metadata-hostname block off.
    guard = UrlGuard(allow_private=allow_private, allowed_networks=["10.0.0.0/8"])
    for host in ("metadata.google.internal", "metadata", "instance-data.ec2.internal"):
        with pytest.raises(InvalidWebhookUrl, match="metadata endpoint"):
            await guard.check(f"http://{host}/computeMetadata/v1/")
        with pytest.raises(BlockedAddress):
            await guard.target(f"http://{host}/")
    assert await guard.check("http://10.1.2.3/hook") == "http://10.1.2.3/hook"


async def test_target_keeps_the_host_for_host_header_and_sni() -> None:
    guard = UrlGuard(allow_private=True)
    target = await guard.target("https://localhost:8443/a/b?c=d")
    assert target.address.is_loopback
    assert target.host == "localhost"
    assert target.host_header == "localhost:8443"
    assert target.connect_url.endswith(":8443/a/b?c=d")
    plain = await guard.target("http://127.0.0.1/")
    assert plain.host_header == "127.0.0.1"
    assert plain.connect_url == "http://127.0.0.1:80/"


def test_odd_ipv4_spellings_are_parsed() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    for spelling in ("2130706433", "0177.0.0.1", "0x7f.1", "127.1", "0x7F.0.0.1"):
        assert parse_ip_literal(spelling) == loopback
    assert parse_ip_literal("example.com") is None
    assert parse_ip_literal("1e100.net") is None
