import pytest

from enrichment.ip_filter import partition, skip_reason


@pytest.mark.parametrize(("ip", "reason"), [
    ("10.0.0.5", "private"), ("172.16.4.1", "private"), ("192.168.1.1", "private"),
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("169.254.10.1", "link-local"), ("fe80::1", "link-local"),
    ("100.64.0.1", "CGNAT"), ("224.0.0.251", "multicast"), ("ff02::1", "multicast"), ("240.0.0.1", "reserved"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("fd00::1", "private"), ("::ffff:10.1.2.3", "private"),
    ("198.18.0.1", "benchmarking"),
])
def test_non_public_addresses_are_skipped_with_a_reason(ip, reason):
    assert reason in skip_reason(ip)


@pytest.mark.parametrize("ip", ["8.8.8.8", "203.0.113.45", "198.51.100.23", "2001:db8::1", "2606:4700::1111",
                                "100.128.0.1", "::ffff:8.8.8.8"])
def test_public_addresses_are_looked_up(ip):
    assert skip_reason(ip) is None


def test_partition_keeps_order():
    assert partition(["10.0.0.5", "8.8.8.8", "127.0.0.1", "1.1.1.1"]) == (
        ["8.8.8.8", "1.1.1.1"], [("10.0.0.5", "private address (RFC 1918)"), ("127.0.0.1", "loopback")])


@pytest.mark.parametrize(("ip", "reason"), [
    ("2002:0a00:0001::1", "6to4 address of 10.0.0.1: private address (RFC 1918)"),
    ("2002:7f00:0001::1", "6to4 address of 127.0.0.1: loopback"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffa", "Teredo address of 10.0.0.5: private address (RFC 1918)"),
    ("64:ff9b::c0a8:0101", "NAT64 address of 192.168.1.1: private address (RFC 1918)"),
    ("64:ff9b:1::1", "NAT64 local-use prefix (RFC 8215)"),
    ("::10.0.0.1", "IPv4-compatible"),
    ("100::1", "discard-only"),
])
def test_ipv6_wrappers_of_private_ipv4_addresses_are_skipped_with_the_reason(ip, reason):
    assert reason in skip_reason(ip)


@pytest.mark.parametrize("ip", ["2002:cb00:712d::1", "64:ff9b::cb00:712d", "2001:0:4136:e378:8000:63bf:34ff:8ed2"])
def test_ipv6_wrappers_of_public_ipv4_addresses_are_looked_up(ip):
    assert skip_reason(ip) is None
