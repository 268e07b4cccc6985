"""The incident comment of an enrichment run: one readable HTML table per indicator kind.

Sentinel renders a limited set of HTML in comments and caps a comment at 30,000 characters. A run writes
one comment with a section per kind (IP addresses, files, URLs, domains); sections with malicious
indicators come first, and rows go worst verdict first within a section. Only when the comment would pass
the cap is it split, by rows, deterministically (the same rows always give the same parts). Every value
from outside (addresses, names, titles, AS owners) is HTML-escaped.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape

from core.sentinel import COMMENT_MAX_CHARS
from enrichment.indicators import KINDS, SECTIONS
from enrichment.virustotal import VERDICTS, Verdict, VerdictThresholds

_VERDICT_STYLE = {
    "malicious": "&#x1F534; malicious",
    "suspicious": "&#x1F7E0; suspicious",
    "harmless": "&#x1F7E2; harmless",
    "unknown": "&#x26AA; unknown",
}
# Per kind: the first column's title, then two facts from the report (attribute, column title).
COLUMNS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "ip": ("IP", (("country", "Country"), ("as_owner", "AS owner"))),
    "file": ("File", (("type_description", "Type"), ("meaningful_name", "Known as"))),
    "url": ("URL", (("title", "Title"), ("last_http_response_code", "HTTP"))),
    "domain": ("Domain", (("registrar", "Registrar"), ("creation_date", "Registered"))),
}
_COUNTS = ("Verdict", "Malicious", "Suspicious", "Harmless", "Undetected", "Reputation")
_ORDER = ["malicious", "suspicious", "harmless", "unknown", "pending", "skipped", "failed"]


@dataclass(frozen=True)
class Row:
    """One line of a section: a verdict, a pending look-up or a skipped value."""

    kind: str  # one of KINDS
    shown: str  # what the first column says (an address, a hash, a cleaned URL, a domain)
    verdict: Verdict | None = None
    note: str | None = None  # "skipped: private address" or "pending: ..."
    label: str = ""  # a file's name, shown under its hash

    @property
    def rank(self) -> int:
        """Worst first: verdicts in VERDICTS order, then pending, skipped, failed."""
        key = self.verdict.verdict if self.verdict else (self.note or "").split(":")[0]
        return _ORDER.index(key) if key in _ORDER else len(_ORDER)

    def html(self) -> str:
        first = escape(self.shown) or "<i>(no value)</i>"
        if self.label:
            first = f"{escape(self.label)}<br/>{first}"
        facts = COLUMNS[self.kind][1]
        if self.verdict is None:
            span = len(_COUNTS) + len(facts) + 1
            return f"<tr><td>{first}</td><td colspan=\"{span}\">{escape(self.note or '')}</td></tr>"
        v = self.verdict
        link = f'<a href="{escape(v.link)}">VirusTotal</a>' if v.link else ""
        cells = [first, _VERDICT_STYLE.get(v.verdict, escape(v.verdict)),
                 str(v.malicious), str(v.suspicious), str(v.harmless), str(v.undetected),
                 "" if v.reputation is None else str(v.reputation),
                 *(escape(_fact(name, v.detail(name))) for name, _ in facts), link]
        return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def _fact(name: str, value: object) -> str:
    """A report fact as text; VirusTotal's dates are epoch seconds, shown as UTC dates."""
    if value is None:
        return ""
    if name.endswith("_date") and isinstance(value, int) and 0 < value < 10**11:
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d")
    return str(value)


def _head(kind: str) -> str:
    first, facts = COLUMNS[kind]
    titles = [first, *_COUNTS, *(title for _, title in facts), "Report"]
    return "<tr>" + "".join(f"<th>{title}</th>" for title in titles) + "</tr>"


def _summary(rows: list[Row]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        key = row.verdict.verdict if row.verdict else (row.note or "").split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{counts[k]} {k}" for k in _ORDER if counts.get(k))


def ordered(rows: list[Row]) -> list[Row]:
    """Sections with the worst verdicts first (kinds in KINDS order on ties), rows worst first in each."""
    worst = {kind: min((row.rank for row in rows if row.kind == kind), default=99) for kind in KINDS}
    return sorted(rows, key=lambda row: (worst[row.kind], KINDS.index(row.kind), row.rank))


def _sections(rows: list[Row]) -> str:
    html, kind = [], None
    for row in rows:
        if row.kind != kind:
            if kind is not None:
                html.append("</table>")
            kind = row.kind
            html.append(f"<p><b>{SECTIONS[kind]}</b></p><table>{_head(kind)}")
        html.append(row.html())
    return "".join(html) + ("</table>" if kind is not None else "")


def render(case_label: str, rows: list[Row], thresholds: VerdictThresholds, ttl_hours: float,
           limit: int = COMMENT_MAX_CHARS, title: str = "VirusTotal reputation") -> list[str]:
    """The comment(s) for ``rows``: one when it fits in ``limit`` characters, else parts."""
    rows = ordered(rows)
    footer = (f"<p><i>sentinel-playbooks · malicious: ≥ {thresholds.malicious} engines; suspicious: ≥ "
              f"{thresholds.suspicious} engine(s) flagging · verdicts reused for up to {ttl_hours:g} h</i></p>")

    def page(part_rows: list[Row], part: int, parts: int) -> str:
        suffix = f" (part {part} of {parts})" if parts > 1 else ""
        header = f"<p><b>{escape(title)}</b> · {escape(case_label)}{suffix} · {escape(_summary(rows))}</p>"
        return header + _sections(part_rows) + footer

    single = page(rows, 1, 1)
    if len(single) <= limit:
        return [single]
    # Pack rows greedily, leaving room for the longest header a part can have and every section's heading.
    overhead = len(page([], 999, 999)) + sum(len(_head(kind)) + 60 for kind in KINDS)
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


__all__ = ["VERDICTS", "Row", "ordered", "render"]
