"""VirusTotal client and verdicts, against the VirusTotal emulator over real HTTP."""

import pytest

from core.errors import ConfigurationError, DownstreamError
from core.http import build_session
from enrichment.indicators import Indicator
from enrichment.virustotal import QuotaExceeded, VerdictThresholds, VirusTotalClient
from localdev.emulators.virustotal import VirusTotalEmulator


@pytest.fixture(scope="module")
def vt_server():
    with VirusTotalEmulator(api_keys=("good-key",)) as server:
        yield server


@pytest.fixture
def vt(vt_server):
    vt_server.reset()
    return vt_server


def ip(value: str) -> Indicator:
    return Indicator("ip", value)


def client(vt, key="good-key", **kw) -> VirusTotalClient:
    session = build_session(timeout=1.0, retries=2, backoff=0.01, retry_statuses=(500, 502, 503, 504))
    return VirusTotalClient(session, key, vt.url, **kw)


@pytest.mark.parametrize(("stats", "expected"), [
    ({"malicious": 2, "harmless": 70}, "malicious"),
    ({"malicious": 1, "harmless": 70}, "suspicious"),
    ({"suspicious": 1, "harmless": 70}, "suspicious"),
    ({"harmless": 70, "undetected": 20}, "harmless"),
    ({}, "unknown"),
])
def test_default_thresholds(stats, expected):
    assert VerdictThresholds().classify(stats) == expected


def test_thresholds_are_configurable():
    strict = VerdictThresholds(malicious=5, suspicious=3)
    assert strict.classify({"malicious": 4}) == "suspicious"
    assert strict.classify({"malicious": 1, "suspicious": 1}) == "harmless"


def test_lookup_keeps_counts_owner_and_link(vt):
    vt.set_report("203.0.113.45", malicious=12, suspicious=1, harmless=60, undetected=21, reputation=-40,
                  country="NL", as_owner="Example Hosting B.V.", asn=64500)
    verdict = client(vt).lookup(ip("203.0.113.45"))
    assert verdict.verdict == "malicious"
    assert (verdict.malicious, verdict.suspicious, verdict.harmless, verdict.undetected) == (12, 1, 60, 21)
    assert (verdict.reputation, verdict.detail("country"), verdict.detail("asn")) == (-40, "NL", 64500)
    assert verdict.detail("as_owner") == "Example Hosting B.V."
    assert verdict.link == "https://www.virustotal.com/gui/ip-address/203.0.113.45"
    assert vt.received[-1].headers["x-apikey"] == "good-key"


def test_unknown_address_is_unknown_not_an_error(vt):
    vt.set_unknown("198.51.100.77")
    assert client(vt).lookup(ip("198.51.100.77")).verdict == "unknown"


def test_rejected_key_is_a_configuration_error_without_the_key(vt):
    with pytest.raises(ConfigurationError) as error:
        client(vt, key="s3cr3t-wrong-key").lookup(ip("198.51.100.23"))
    assert "VIRUSTOTAL_API_KEY" in error.value.message
    assert "s3cr3t" not in error.value.message and "s3cr3t" not in repr(client(vt, key="s3cr3t"))


def test_quota_is_reported_not_retried(vt):
    vt.fail(429, body={"error": {"code": "QuotaExceededError", "message": "Quota exceeded"}})
    with pytest.raises(QuotaExceeded):
        client(vt).lookup(ip("198.51.100.23"))
    assert len(vt.received) == 1  # a 429 spends no more quota on retries


def test_transient_errors_are_retried(vt):
    vt.fail(503, times=2, body={"error": {"code": "TransientError", "message": "try again"}})
    assert client(vt).lookup(ip("198.51.100.23")).verdict in ("harmless", "suspicious", "malicious")
    assert len(vt.received) == 3


def test_persistent_failure_is_a_downstream_error(vt):
    vt.fail(500, times=10)
    with pytest.raises(DownstreamError) as error:
        client(vt).lookup(ip("198.51.100.23"))
    assert error.value.status == 502 and error.value.retry_after


def test_timeout_and_malformed_answers(vt):
    vt.fail(delay=1.5, times=3)
    with pytest.raises(DownstreamError, match="in time"):
        client(vt).lookup(ip("198.51.100.23"))
    vt.reset()
    vt.fail(malformed=True)
    with pytest.raises(DownstreamError, match="not JSON"):
        client(vt).lookup(ip("198.51.100.23"))


def test_the_public_api_allows_four_a_minute_and_500_a_day(vt):
    """Sliding minute, day reset at 00:00 UTC; refused requests do not count (docs/emulators.md)."""
    now = [86400 * 20_000 + 86400 - 90.0]  # 23:58:30 UTC
    vt.clock = lambda: now[0]
    vt.public_api()
    vt.per_day = 6  # the daily cap, made small
    c = client(vt)
    try:
        for i in range(4):
            c.lookup(ip(f"198.51.100.{i + 1}"))
        with pytest.raises(QuotaExceeded):
            c.lookup(ip("198.51.100.9"))
        now[0] += 30  # the window slides: still four in the last 60 s
        with pytest.raises(QuotaExceeded):
            c.lookup(ip("198.51.100.9"))
        now[0] += 31  # 23:59:31, the first four are older than a minute
        c.lookup(ip("198.51.100.5"))
        c.lookup(ip("198.51.100.6"))
        with pytest.raises(QuotaExceeded):  # six today
            c.lookup(ip("198.51.100.7"))
        now[0] += 30  # 00:00:01 UTC: a new day
        c.lookup(ip("198.51.100.7"))
    finally:
        vt.per_minute = vt.per_day = None
        import time

        vt.clock = time.time


# -- files, URLs and domains (issue 18.1) -----------------------------------------------------------------
SHA256 = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"
MD5 = "44d88612fea8a8f36de82e1278abb02f"


def test_a_file_is_looked_up_by_hash_and_linked_by_its_sha256(vt):
    vt.set_report(SHA256, malicious=40, md5=MD5, meaningful_name="eicar.com", type_description="DOS COM")
    verdict = client(vt).lookup(Indicator("file", MD5))
    assert verdict.verdict == "malicious" and verdict.detail("meaningful_name") == "eicar.com"
    assert verdict.link == f"https://www.virustotal.com/gui/file/{SHA256}"
    assert vt.received[-1].path == f"/api/v3/files/{MD5}"


def test_a_url_is_asked_for_by_its_unpadded_base64_id_and_linked_by_its_sha256(vt):
    import base64
    import hashlib

    url = "https://evil.example/login"
    vt.set_report(url, malicious=3, title="Sign in")
    verdict = client(vt).lookup(Indicator("url", url))
    sent = vt.received[-1].path.rsplit("/", 1)[-1]
    assert "=" not in sent and base64.urlsafe_b64decode(sent + "=" * (-len(sent) % 4)).decode() == url
    assert verdict.verdict == "malicious" and verdict.detail("title") == "Sign in"
    assert verdict.link == "https://www.virustotal.com/gui/url/" + hashlib.sha256(url.encode()).hexdigest()


def test_a_url_virustotal_never_saw_is_unknown_and_never_submitted(vt):
    vt.set_unknown("https://new.example/")
    verdict = client(vt).lookup(Indicator("url", "https://new.example/"))
    assert verdict.verdict == "unknown" and verdict.link is None
    assert [r.method for r in vt.received] == ["GET"]


def test_a_domain_report(vt):
    vt.set_report("evil.example", malicious=7, registrar="Evil Registrar")
    verdict = client(vt).lookup(Indicator("domain", "evil.example"))
    assert verdict.verdict == "malicious" and verdict.detail("registrar") == "Evil Registrar"
    assert verdict.link == "https://www.virustotal.com/gui/domain/evil.example"


def test_the_emulator_answers_malformed_ids_as_documented(vt):
    import requests

    def get(path: str) -> tuple[int, str]:
        answer = requests.get(f"{vt.url}/api/v3/{path}", headers={"x-apikey": "good-key"}, timeout=5)
        return answer.status_code, answer.json()["error"]["code"]

    assert get("files/None") == (404, "NotFoundError")  # no hash: not found, as VirusTotal answers
    assert get("urls/thisurlidmakesnosenseatall") == (404, "NotFoundError")  # the errors page's example
    assert get("domains/bad_label.example") == (400, "InvalidArgumentError")
    assert get("ip_addresses/300.1.1.1") == (400, "InvalidArgumentError")
