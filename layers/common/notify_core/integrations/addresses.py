"""Which IP addresses a customer webhook may reach: the pure rules behind `guarded_http`.

Outside local mode only public unicast addresses pass. Refused, each with its reason:
private (RFC 1918), loopback, link-local (with the cloud metadata services on 169.254.169.254),
CGNAT / shared address space (100.64.0.0/10), "this network", multicast, reserved and
documentation ranges, IPv6 unique-local (fc00::/7, with AWS's fd00:ec2::254), site-local,
IPv4-mapped and IPv4-compatible IPv6 (a way to spell any IPv4 address, private ones included),
Teredo, local-use NAT64, and 6to4 / NAT64 addresses whose embedded IPv4 address is refused.
Anything else Python's `ipaddress` does not call global is refused as well.

In local mode (WEBHOOK_ALLOW_PRIVATE_TARGETS) private and loopback addresses pass, but never a
cloud metadata address, nor multicast or unspecified ones (nothing to connect to).
"""

from __future__ import annotations

import ipaddress
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4: Final = ipaddress.IPv4Network
_V6: Final = ipaddress.IPv6Network

# (network, reason): the first match names the refusal. Order: most specific first.
BLOCKED_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "'this network' address"),
    (_V4("10.0.0.0/8"), "private address"),
    (_V4("100.64.0.0/10"), "carrier-grade NAT (shared) address"),
    (_V4("127.0.0.0/8"), "loopback address"),
    (_V4("169.254.0.0/16"), "link-local address"),
    (_V4("172.16.0.0/12"), "private address"),
    (_V4("192.0.0.0/24"), "IETF protocol assignment"),
    (_V4("192.0.2.0/24"), "documentation address"),
    (_V4("192.88.99.0/24"), "6to4 relay anycast address"),
    (_V4("192.168.0.0/16"), "private address"),
    (_V4("198.18.0.0/15"), "benchmarking address"),
    (_V4("198.51.100.0/24"), "documentation address"),
    (_V4("203.0.113.0/24"), "documentation address"),
    (_V4("224.0.0.0/4"), "multicast address"),
    (_V4("240.0.0.0/4"), "reserved address"),
)
BLOCKED_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified address"),
    (_V6("::1/128"), "loopback address"),
    (_V6("::ffff:0:0/96"), "IPv4-mapped IPv6 address"),
    (_V6("::/96"), "IPv4-compatible IPv6 address"),
    (_V6("64:ff9b:1::/48"), "local-use NAT64 address"),
    (_V6("100::/64"), "discard-only address"),
    (_V6("2001::/32"), "Teredo address"),
    (_V6("2001:db8::/32"), "documentation address"),
    (_V6("fc00::/7"), "unique-local address"),
    (_V6("fe80::/10"), "link-local address"),
    (_V6("fec0::/10"), "site-local address"),
    (_V6("ff00::/8"), "multicast address"),
)
# Cloud metadata services: refused in every mode.
METADATA: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack
        "169.254.170.2",  # ECS task metadata
        "169.254.169.253",  # AWS VPC DNS
        "169.254.169.123",  # AWS time sync
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS VPC DNS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)
_NAT64 = _V6("64:ff9b::/96")
_6TO4 = _V6("2002::/16")


def parse(text: str) -> IPAddress | None:
    """An address literal (IPv6 may carry brackets or a zone: both are dropped), or None."""
    value = text.strip().strip("[]").split("%", 1)[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def embedded_v4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, NAT64, 6to4), else None."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64 or (int(ip) >> 32 == 0 and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    return None


def refusal(ip: IPAddress, allow_private: bool = False) -> str | None:
    """Why `ip` may not be a webhook target, or None when it may."""
    inner = embedded_v4(ip)
    if ip in METADATA or (inner is not None and inner in METADATA):
        return "cloud metadata address"
    if allow_private:
        if ip.is_multicast or ip.is_unspecified or (inner is not None and inner.is_unspecified):
            return "multicast or unspecified address"
        return None
    for network, reason in BLOCKED_V4 if isinstance(ip, ipaddress.IPv4Address) else BLOCKED_V6:
        if ip in network:
            return reason
    if inner is not None:
        why = refusal(inner)
        if why is not None:
            return f"{why} (embedded in {ip})"
    if not ip.is_global:
        return "non-public address"
    return None
