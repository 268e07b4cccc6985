"""The incident comment of an enrichment run: one readable HTML table.

Sentinel renders a limited set of HTML in comments and caps a comment at 30,000 characters.
A run writes one comment; only when the table would pass the cap is it split, by rows,
deterministically (the same rows always give the same parts). Every value from outside
(addresses, AS owners, countries) is HTML-escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from core.sentinel import COMMENT_MAX_CHARS
from enrichment.virustotal import IpVerdict, VerdictThresholds

_VERDICT_STYLE = {
    "malicious": "&#x1F534; malicious",
    "suspicious": "&#x1F7E0; suspicious",
    "harmless": "&#x1F7E2; harmless",
    "unknown": "&#x26AA; unknown",
}
_HEAD = ("<tr><th>IP</th><th>Verdict</th><th>Malicious</th><th>Suspicious</th><th>Harmless</th>"
         "<th>Undetected</th><th>Reputation</th><th>Country</th><th>AS owner</th><th>Report</th></tr>")


@dataclass(frozen=True)
class Row:
    """One line of the table: a verdict, a pending lookup or a skipped address."""

    ip: str
    verdict: IpVerdict | None = None
    note: str | None = None  # "skipped: private address" or "pending: ..."

    def html(self) -> str:
        ip = escape(self.ip) or "<i>(no address)</i>"
        if self.verdict is None:
            return f"<tr><td>{ip}</td><td colspan=\"9\">{escape(self.note or '')}</td></tr>"
        v = self.verdict
        cells = [
            ip,
            _VERDICT_STYLE.get(v.verdict, escape(v.verdict)),
            str(v.malicious), str(v.suspicious), str(v.harmless), str(v.undetected),
            "" if v.reputation is None else str(v.reputation),
            escape(v.country or ""),
            escape(v.as_owner or ""),
            f'<a href="{escape(v.link)}">VirusTotal</a>',
        ]
        return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _summary(rows: list[Row]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        key = row.verdict.verdict if row.verdict else (row.note or "").split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    order = ["malicious", "suspicious", "harmless", "unknown", "pending", "skipped", "failed"]
    return ", ".join(f"{counts[k]} {k}" for k in order if counts.get(k))


def render(case_label: str, rows: list[Row], thresholds: VerdictThresholds, ttl_hours: float,
           limit: int = COMMENT_MAX_CHARS, title: str = "VirusTotal IP reputation") -> list[str]:
    """The comment(s) for ``rows``: one when it fits in ``limit`` characters, else parts."""
    footer = (f"<p><i>sentinel-playbooks · malicious: ≥ {thresholds.malicious} engines; suspicious: ≥ "
              f"{thresholds.suspicious} engine(s) flagging · verdicts reused for up to {ttl_hours:g} h</i></p>")

    def page(part_rows: list[Row], part: int, parts: int) -> str:
        suffix = f" (part {part} of {parts})" if parts > 1 else ""
        header = (f"<p><b>{escape(title)}</b> · {escape(case_label)}{suffix} · "
                  f"{escape(_summary(rows))}</p>")
        return header + "<table>" + _HEAD + "".join(r.html() for r in part_rows) + "</table>" + footer

    single = page(rows, 1, 1)
    if len(single) <= limit:
        return [single]
    # Pack rows greedily, leaving room for the longest header a part can have.
    overhead = len(page([], 999, 999))
    pages: list[list[Row]] = [[]]
    size = overhead
    for row in rows:
        length = len(row.html())
        if pages[-1] and size + length > limit:
            pages.append([])
            size = overhead
        pages[-1].append(row)
        size += length
    return [page(part_rows, i + 1, len(pages)) for i, part_rows in enumerate(pages)]
