"""What the sync writes into ServiceNow journal fields (work notes), made safe to render.

ServiceNow shows journal text literally, except between ``[code]`` and ``[/code]``, which it renders as HTML
(``glide.ui.security.allow_codetag``, on by default). The sync wraps each copied Sentinel comment in one
such block so its formatting survives, which makes everything inside it HTML that an analyst's browser
renders: a Sentinel comment is not trusted HTML (anyone who may comment, or any playbook quoting alert data,
writes it). So the comment's HTML is rebuilt from an allow-list of formatting tags (no attributes except a
link's http(s)/mailto ``href``; the content of script-like elements is dropped), every text is escaped, and
literal ``[`` / ``]`` become entities, so text can neither close the block early nor open another one.
"""

from __future__ import annotations

import html
from html.parser import HTMLParser
from urllib.parse import urlsplit

ALLOWED_TAGS = frozenset({
    "p", "br", "hr", "b", "strong", "i", "em", "u", "s", "code", "pre", "blockquote", "span", "div", "ul", "ol", "li",
    "table", "thead", "tbody", "tr", "th", "td", "h1", "h2", "h3", "h4", "h5", "h6", "a",
})
VOID_TAGS = frozenset({"br", "hr"})
# Elements whose content is code or chrome, not text: dropped with everything inside.
DROPPED_WITH_CONTENT = frozenset({"script", "style", "template", "iframe", "object", "embed", "noscript",
                                  "textarea", "title", "svg", "math", "select", "head", "frameset", "noembed"})
LINK_SCHEMES = frozenset({"http", "https", "mailto"})
MAX_DEPTH = 20  # deeper nesting is flattened: the closing tags always fit in the room left for them


def journal_text(text: str) -> str:
    """Text for inside a ``[code]`` block: HTML-escaped, with the journal's own ``[``/``]`` markup neutralised."""
    return html.escape(text).replace("[", "&#91;").replace("]", "&#93;")


class _Rebuilder(HTMLParser):
    def __init__(self, limit: int) -> None:
        super().__init__(convert_charrefs=True)
        self.limit = limit
        self.out: list[str] = []
        self.size = 0
        self.open: list[str] = []
        self.skipping: list[str] = []  # dropped elements we are inside of
        self.truncated = False

    def _emit(self, piece: str) -> bool:
        if self.truncated or self.size + len(piece) > self.limit:
            self.truncated = True
            return False
        self.out.append(piece)
        self.size += len(piece)
        return True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in DROPPED_WITH_CONTENT:
            self.skipping.append(tag)
            return
        if self.skipping or tag not in ALLOWED_TAGS:
            return
        if tag in VOID_TAGS:
            self._emit(f"<{tag}>")
            return
        if len(self.open) >= MAX_DEPTH:
            return
        opening = f"<{tag}>"
        if tag == "a":
            href = (dict(attrs).get("href") or "").strip()
            if urlsplit(href).scheme.lower() not in LINK_SCHEMES:
                return  # the link's text stays, as text
            opening = f'<a href="{journal_text(href)}" rel="noopener noreferrer">'
        if self._emit(opening):
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID_TAGS and not self.skipping:
            self._emit(f"<{tag}>")

    def handle_endtag(self, tag: str) -> None:
        if self.skipping:
            if tag == self.skipping[-1]:
                self.skipping.pop()
            return
        if self.truncated:
            return  # result() closes what is open, after the ellipsis
        if tag in self.open:  # close what is open up to it; a stray end tag is dropped
            while self.open:
                inner = self.open.pop()
                self.out.append(f"</{inner}>")
                if inner == tag:
                    break

    def handle_data(self, data: str) -> None:
        if self.skipping or self.truncated:
            return
        escaped = journal_text(data)
        if self._emit(escaped):
            return
        room, kept = self.limit - self.size, []
        for char in data:  # as much of the text as fits, never half an entity
            piece = journal_text(char)
            if len(piece) > room:
                break
            kept.append(piece)
            room -= len(piece)
        self.out.append("".join(kept))
        self.size = self.limit - room

    def result(self) -> str:
        self.close()
        tail = "…" if self.truncated else ""
        return "".join(self.out) + tail + "".join(f"</{tag}>" for tag in reversed(self.open))


def journal_html(markup: str, limit: int = 30_000) -> str:
    """Safe, balanced HTML for inside a ``[code]`` block: at most ``limit`` characters of content, then "…"."""
    parser = _Rebuilder(limit)
    parser.feed(markup)
    return parser.result()


__all__ = ["journal_html", "journal_text"]
