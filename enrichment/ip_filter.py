"""Which IP addresses are worth a VirusTotal lookup.

Addresses that cannot identify an outside party are skipped, with the reason shown in the
comment. The table is the project's own data, checked in order (the standard library's
``is_global`` and ``is_private`` have changed between Python patch releases, so they decide nothing
here). The documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) are
deliberately NOT skipped: real telemetry never holds them, and the samples, demo and tests use them as
stand-ins for public addresses.

IPv6 addresses that carry an IPv4 address are judged by the IPv4 they wrap (issue #15, item 10):
- IPv4-mapped ``::ffff:a.b.c.d`` is that IPv4 everywhere (core/case.py already turns it into the IPv4);
- 6to4 ``2002:AABB:CCDD::/48`` (RFC 3056) wraps a.b.c.d in bits 16-47;
- Teredo ``2001:0::/32`` (RFC 4380) wraps the client's IPv4, inverted, in the last 32 bits;
- NAT64 ``64:ff9b::/96`` (RFC 6052, well-known prefix) wraps the IPv4 in the last 32 bits; the local-use
  prefix ``64:ff9b:1::/48`` (RFC 8215) is private to its network and skipped outright.
A wrapper of a private, loopback or otherwise skipped IPv4 is skipped with that reason; a wrapper of a public
IPv4 is looked up as the IPv6 address it is.
"""

from __future__ import annotations

import ipaddress

SKIPPED_NETWORKS: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified / this network"),
    ("10.0.0.0/8", "private address (RFC 1918)"),
    ("100.64.0.0/10", "shared address space (CGNAT, RFC 6598)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private address (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignment"),
    ("192.168.0.0/16", "private address (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("::/96", "IPv4-compatible address (deprecated, RFC 4291)"),
    ("64:ff9b:1::/48", "NAT64 local-use prefix (RFC 8215)"),
    ("100::/64", "discard-only (RFC 6666)"),
    ("2001:2::/48", "benchmarking (RFC 5180)"),
    ("fc00::/7", "unique local address (private)"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
)
_NETWORKS = tuple((ipaddress.ip_network(net), reason) for net, reason in SKIPPED_NETWORKS)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _wrapped(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """(mechanism, IPv4) for an IPv6 address that carries an IPv4 one."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _table_reason(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    for network, reason in _NETWORKS:
        if ip.version == network.version and ip in network:
            return reason
    return None


def skip_reason(address: str) -> str | None:
    """Why ``address`` is not looked up, or None when it is a public address."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and (wrapped := _wrapped(ip)) is not None:
        mechanism, inner = wrapped
        inner_reason = _table_reason(inner)
        if inner_reason is not None:
            return inner_reason if mechanism == "IPv4-mapped" else f"{mechanism} address of {inner}: {inner_reason}"
        if mechanism == "IPv4-mapped":
            return None
    return _table_reason(ip)


def partition(addresses: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Split addresses into (public, [(skipped, reason)]), each in input order."""
    public: list[str] = []
    skipped: list[tuple[str, str]] = []
    for address in addresses:
        reason = skip_reason(address)
        if reason:
            skipped.append((address, reason))
        else:
            public.append(address)
    return public, skipped
