from enrichment.report import Row, render
from enrichment.virustotal import IpVerdict, VerdictThresholds


def verdict(ip: str, **kw) -> IpVerdict:
    return IpVerdict(ip=ip, verdict=kw.pop("verdict", "harmless"), **kw)


def test_one_readable_comment_with_every_row():
    rows = [Row("203.0.113.45", verdict("203.0.113.45", verdict="malicious", malicious=12, harmless=50,
                                        as_owner="Evil <b>Corp</b>", country="NL")),
            Row("10.0.0.5", note="skipped: private address (RFC 1918)")]
    [comment] = render("incident 4711", rows, VerdictThresholds(), 24)
    assert "incident 4711" in comment and "1 malicious, 1 skipped" in comment
    assert "<td>203.0.113.45</td>" in comment and "<td>12</td>" in comment
    assert "https://www.virustotal.com/gui/ip-address/203.0.113.45" in comment
    assert "skipped: private address (RFC 1918)" in comment
    assert "Evil &lt;b&gt;Corp&lt;/b&gt;" in comment and "<b>Corp</b>" not in comment


def test_title_and_values_are_escaped():
    [comment] = render("incident <script>alert(1)</script>", [Row("1.2.3.4", note="x<img>")], VerdictThresholds(), 24)
    assert "<script>" not in comment and "<img>" not in comment


def test_large_tables_split_deterministically_under_the_limit():
    rows = [Row(f"198.51.100.{i}", verdict(f"198.51.100.{i}", as_owner="A" * 150)) for i in range(200)]
    parts = render("incident 1", rows, VerdictThresholds(), 24, limit=30_000)
    assert len(parts) > 1
    assert all(len(part) <= 30_000 for part in parts)
    assert parts == render("incident 1", rows, VerdictThresholds(), 24, limit=30_000)
    assert f"(part 1 of {len(parts)})" in parts[0]
    assert sum(part.count("<tr><td>") for part in parts) == 200
