"""File, URL and domain entities of a Case (core/indicators.py): parsed once, bad values skipped with a reason."""

from __future__ import annotations

import pytest

from core.case import normalise
from core.indicators import parse_domain, parse_hash, parse_url
from tests.fixtures import INCIDENT_4711, sample

SHA256 = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"
MD5 = "44d88612fea8a8f36de82e1278abb02f"
SHA1 = "3395856ce81f2b7382dee72602f798b642f14140"


def alert(*entities: dict) -> dict:
    return {"SystemAlertId": "x", "WorkspaceSubscriptionId": "s", "WorkspaceResourceGroup": "rg",
            "Entities": list(entities)}


def test_a_file_with_several_hashes_and_the_hash_entities_it_names_are_one_file():
    case = normalise(alert(
        {"$id": "7", "Name": "evil.exe", "Type": "file", "FileHashes": [{"$ref": "8"}, {"$ref": "9"}]},
        {"$id": "8", "Algorithm": "SHA256", "Value": SHA256.upper(), "Type": "filehash"},
        {"$id": "9", "Algorithm": "MD5", "Value": MD5, "Type": "filehash"},
        {"$ref": "8"},
        {"$id": "10", "Algorithm": "SHA1", "Value": SHA1, "Type": "filehash"},
    ))
    [file, other] = case.files
    assert (file.sha256, file.md5, file.name, file.value, file.algorithm) == (SHA256, MD5, "evil.exe", SHA256, "SHA256")
    assert other.value == SHA1 and other.algorithm == "SHA1"
    assert case.skipped == ()


def test_arm_file_entities_point_to_their_hashes_by_id():
    hash_id = INCIDENT_4711.rsplit("/", 2)[0] + "/Entities/h1"
    body = {"Entity": {"kind": "File", "properties": {"fileName": "a.dll", "fileHashEntityIds": [hash_id]}},
            "IncidentArmID": INCIDENT_4711}
    case = normalise(body).with_entities([
        body["Entity"], {"id": hash_id, "kind": "FileHash", "properties": {"algorithm": "MD5", "hashValue": MD5}}])
    assert [(f.md5, f.name) for f in case.files] == [(MD5, "a.dll")]


def test_the_defender_portal_sample_has_its_file_hash_as_a_file_and_still_in_others():
    case = normalise(sample("incident-trigger-defender-portal.json"))
    assert [f.sha256[:10] for f in case.files] == ["3f9a6c1e5b"]
    assert [o.kind for o in case.others] == ["filehash"]  # sync's ticket description keeps listing it


@pytest.mark.parametrize(("algorithm", "value", "reason"), [
    ("SHA256", "xyz", "not an MD5, SHA-1 or SHA-256"),
    ("SHA256", MD5, "not a SHA256 hash"),
    ("SHA256AC", SHA256, "Authenticode"),
    ("MD5", "", "without a value"),
    (None, "g" * 32, "not an MD5"),
])
def test_bad_hashes_are_reasons(algorithm, value, reason):
    assert reason in parse_hash(algorithm, value)


@pytest.mark.parametrize(("raw", "ok"), [
    ("https://evil.example/x?y=1", True), ("http://[2001:db8::1]:8080/", True), ("ftp://files.example/a", True),
    ("evil.example/path", False), ("https://", False), ("javascript:alert(1)", False), ("https://a b.example/", False),
    ("https://evil.example:99999/", False), ("", False),
])
def test_urls_parse_or_are_refused(raw, ok):
    assert isinstance(parse_url(raw), str) is not ok


@pytest.mark.parametrize(("raw", "expected"), [
    ("Evil.Example.", "evil.example"), ("bücher.example", "xn--bcher-kva.example"),
    ("a-b.c-d.example", "a-b.c-d.example"),
])
def test_domains_are_lower_case_ascii(raw, expected):
    assert parse_domain(raw).domain == expected


@pytest.mark.parametrize(("raw", "reason"), [
    ("bad_label.example", "not a valid domain name"), ("-lead.example", "not a valid domain name"),
    ("intranet", "single-label"), ("203.0.113.5", "an IP address"), ("a" * 64 + ".example", "not a valid"),
    ("", "without a domain name"),
])
def test_bad_domains_are_reasons(raw, reason):
    assert reason in parse_domain(raw)


def test_bad_values_are_skipped_rows_never_indicators():
    case = normalise(alert({"Type": "url", "Url": "not a url"}, {"Type": "dns", "DomainName": "bad_label.example"},
                           {"Type": "filehash", "Algorithm": "SHA1", "Value": "xyz"}))
    assert case.urls == () and case.domains == () and case.files == ()
    assert [s.kind for s in case.skipped] == ["url", "dnsresolution", "filehash"]


def test_host_dns_domains_and_upn_suffixes_are_never_domains():
    case = normalise(sample("incident-trigger.json"))
    assert case.hosts[0].dns_domain and case.accounts[0].upn_suffix and case.domains == ()
