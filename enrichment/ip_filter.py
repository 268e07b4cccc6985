"""Which IP addresses are worth a VirusTotal lookup.

Addresses that cannot identify an outside party are skipped, with the reason shown in the
comment. The table is data, checked in order. The documentation ranges (192.0.2.0/24,
198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) are deliberately NOT skipped: real telemetry
never holds them, and the samples, demo and tests use them as stand-ins for public addresses.
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
    ("fc00::/7", "unique local address (private)"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
)
_NETWORKS = tuple((ipaddress.ip_network(net), reason) for net, reason in SKIPPED_NETWORKS)


def skip_reason(address: str) -> str | None:
    """Why ``address`` is not looked up, or None when it is a public address."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for network, reason in _NETWORKS:
        if ip.version == network.version and ip in network:
            return reason
    return None


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
