"""What a run may send to VirusTotal (enrichment/indicators.py): cleaned URLs, internal names kept in."""

from __future__ import annotations

import pytest

from core.case import normalise
from core.internal_domains import InternalDomains
from enrichment.indicators import Indicator, Policy, clean_url

SHA256 = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"


def case_of(*entities: dict):
    return normalise({"SystemAlertId": "x", "Entities": list(entities)})


def policy(*internal: str, **kw) -> Policy:
    return Policy(InternalDomains(frozenset(internal), None).reason, **kw)


@pytest.mark.parametrize(("raw", "clean"), [
    ("https://user:p%40ss@Evil.Example:8443/a/b?token=SECRET&sig=x#frag", "https://evil.example:8443/a/b"),
    ("HTTP://evil.example", "http://evil.example/"),
    ("https://[2001:DB8::1]/x?y", "https://[2001:db8::1]/x"),
])
def test_urls_lose_userinfo_query_and_fragment(raw, clean):
    assert clean_url(raw) == clean


def test_every_kind_in_one_selection_and_internal_names_skipped():
    case = case_of({"Type": "ip", "Address": "203.0.113.9"}, {"Type": "ip", "Address": "10.1.1.1"},
                   {"Type": "filehash", "Algorithm": "SHA256", "Value": SHA256},
                   {"Type": "url", "Url": "https://evil.example/x?code=1"},
                   {"Type": "url", "Url": "https://portal.corp.contoso.com/login"},
                   {"Type": "url", "Url": "http://192.168.1.10/admin"},
                   {"Type": "dns", "DomainName": "evil.example"}, {"Type": "dns", "DomainName": "contoso.com"},
                   {"Type": "dns", "DomainName": "bad_label.example"})
    chosen = policy("contoso.com").select(case)
    assert [i.key for i in chosen.indicators] == [
        "ip:203.0.113.9", f"file:{SHA256}", "url:https://evil.example/x", "domain:evil.example"]
    reasons = {value: reason for _, value, reason in chosen.skipped}
    assert "private" in reasons["10.1.1.1"]
    assert "INTERNAL_DOMAINS" in reasons["https://portal.corp.contoso.com/login"]
    assert "INTERNAL_DOMAINS" in reasons["contoso.com"]
    assert "on 192.168.1.10: private" in reasons["http://192.168.1.10/admin"]
    assert "not a valid domain name" in reasons["bad_label.example"]
    assert not any("code=1" in i.value or "@" in i.value for i in chosen.indicators)


def test_url_lookup_by_domain_sends_only_the_host():
    case = case_of({"Type": "url", "Url": "https://evil.example/x?code=1"},
                   {"Type": "url", "Url": "http://203.0.113.8/a"})
    assert [i.key for i in policy(url_lookup="domain").select(case).indicators] == [
        "domain:evil.example", "ip:203.0.113.8"]


def test_url_hosts_as_domains_when_asked():
    case = case_of({"Type": "url", "Url": "https://evil.example/x"}, {"Type": "dns", "DomainName": "evil.example"})
    assert [i.key for i in policy(domains_from_urls=True).select(case).indicators] == [
        "url:https://evil.example/x", "domain:evil.example"]
    assert [i.key for i in policy().select(case).indicators] == ["url:https://evil.example/x", "domain:evil.example"]


def test_keys_round_trip_and_bare_addresses_are_ips():
    assert Indicator.from_key("url:https://evil.example/x") == Indicator("url", "https://evil.example/x")
    assert Indicator.from_key("ip:2001:db8::1") == Indicator("ip", "2001:db8::1")
    assert Indicator.from_key("2001:db8::1") == Indicator("ip", "2001:db8::1")  # queued before other kinds
