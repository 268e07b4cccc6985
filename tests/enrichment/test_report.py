from enrichment.report import Row, render
from enrichment.virustotal import Verdict, VerdictThresholds

DETAILS = ("country", "as_owner", "meaningful_name", "type_description", "title", "registrar")


def verdict(value: str, kind: str = "ip", **kw) -> Verdict:
    details = tuple((name, kw.pop(name)) for name in DETAILS if name in kw)
    return Verdict(kind, value, verdict=kw.pop("verdict", "harmless"), details=details, **kw)


def test_one_readable_comment_with_every_row():
    rows = [Row("ip", "203.0.113.45", verdict("203.0.113.45", verdict="malicious", malicious=12, harmless=50,
                                        as_owner="Evil <b>Corp</b>", country="NL")),
            Row("ip", "10.0.0.5", note="skipped: private address (RFC 1918)")]
    [comment] = render("incident 4711", rows, VerdictThresholds(), 24)
    assert "incident 4711" in comment and "1 malicious, 1 skipped" in comment
    assert "<td>203.0.113.45</td>" in comment and "<td>12</td>" in comment
    assert "https://www.virustotal.com/gui/ip-address/203.0.113.45" in comment
    assert "skipped: private address (RFC 1918)" in comment
    assert "Evil &lt;b&gt;Corp&lt;/b&gt;" in comment and "<b>Corp</b>" not in comment


def test_title_and_values_are_escaped():
    rows = [Row("ip", "1.2.3.4", note="x<img>")]
    [comment] = render("incident <script>alert(1)</script>", rows, VerdictThresholds(), 24)
    assert "<script>" not in comment and "<img>" not in comment


def test_large_tables_split_deterministically_under_the_limit():
    rows = [Row("ip", f"198.51.100.{i}", verdict(f"198.51.100.{i}", as_owner="A" * 150)) for i in range(200)]
    parts = render("incident 1", rows, VerdictThresholds(), 24, limit=30_000)
    assert len(parts) > 1
    assert all(len(part) <= 30_000 for part in parts)
    assert parts == render("incident 1", rows, VerdictThresholds(), 24, limit=30_000)
    assert f"(part 1 of {len(parts)})" in parts[0]
    assert sum(part.count("<tr><td>") for part in parts) == 200


def test_a_section_per_kind_malicious_first_rows_worst_first():
    rows = [Row("ip", "198.51.100.1", verdict("198.51.100.1")),
            Row("domain", "evil.example", verdict("evil.example", "domain", verdict="malicious", malicious=5)),
            Row("ip", "198.51.100.2", verdict("198.51.100.2", verdict="suspicious", suspicious=1)),
            Row("file", "ab" * 32, verdict("ab" * 32, "file", meaningful_name="x.exe"), label="invoice.exe"),
            Row("url", "https://evil.example/", note="skipped: internal")]
    [comment] = render("incident 9", rows, VerdictThresholds(), 24)
    sections = [part.split("</b>")[0] for part in comment.split("<p><b>")[2:]]
    assert sections == ["Domains", "IP addresses", "Files", "URLs"]
    assert comment.index("198.51.100.2") < comment.index("198.51.100.1")  # suspicious before harmless
    assert "invoice.exe<br/>" + "ab" * 32 in comment and "x.exe" in comment
    assert "https://www.virustotal.com/gui/domain/evil.example" in comment


def test_dates_are_shown_as_dates():
    row = Row("domain", "evil.example", verdict("evil.example", "domain", registrar="R"))
    dated = Row("domain", "old.example", Verdict("domain", "old.example", "harmless", harmless=1,
                                                 details=(("creation_date", 1_600_000_000),)))
    [comment] = render("incident 9", [row, dated], VerdictThresholds(), 24)
    assert "<td>2020-09-13</td>" in comment
