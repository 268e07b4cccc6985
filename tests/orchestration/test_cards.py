"""Every Teams card the pack builds parses cleanly in Microsoft's adaptivecards library and fits Teams' limit.

The Teams Workflows webhook (and its emulator) answers 202 for any JSON: a bad card would fail inside the
flow, unseen. So the cards are checked here, for every kind of trigger and for the worst inputs.
"""

from __future__ import annotations

import html as html_lib
import json
import re

import pytest
from markdown_it import MarkdownIt

from core.case import normalise
from orchestration.notify import (
    TEAMS_CARD_MAX_BYTES,
    Button,
    Notice,
    adaptive_card,
    card_escape,
    card_size,
)
from tests.fixtures import TRIGGER_SAMPLES, sample
from tests.orchestration.cards import TEAMS_MESSAGE_LIMIT, assert_teams_ready

HOSTILE = ("[click](http://evil.example) **bold** _it_ <script>alert(1)</script> <at>everyone</at>\n"
           "- item\n+ item\n* item\n12. item\n&lt;b&gt; &#42; C:\\temp\\new (1).exe a\\*b #tag | ~x~ `code`")


def _notice(name: str, **overrides) -> Notice:
    case = normalise(sample(name))
    notice = Notice.for_case(case, "New Sentinel incident", ticket={"number": "INC0010001",
                                                                    "url": "https://contoso.service-now.com/x"})
    return Notice(**{**notice.__dict__, **overrides})


def _approval(approvers: int) -> Notice:
    rows = [(f"approver{i}@contoso.com:", (Button("Block", f"https://func.example/api/a/{i}/block", "danger"),
                                           Button("Ignore", f"https://func.example/api/a/{i}/ignore")))
            for i in range(approvers)]
    return _notice("incident-trigger.json", headline="Approval needed", text="Block the user and the address?",
                   button_rows=tuple(rows))


def _many_entities(count: int, label_length: int) -> Notice:
    labels = tuple(f"host {'x' * label_length}-{n}.corp.contoso.com" for n in range(count))
    return _notice("incident-trigger.json", entities=labels, title="T" * 40_000, text="é" * 20_000)


NOTICES = {
    **{name: _notice(name) for name in TRIGGER_SAMPLES},
    "approval, 2 approvers": _approval(2),
    "approval, 25 approvers": _approval(25),
    "hostile text everywhere": _notice("incident-trigger.json", title=HOSTILE, text=HOSTILE,
                                       entities=(HOSTILE,) * 3, headline=HOSTILE),
    "no entities, no number, no links": Notice(headline="New Sentinel alert", title="Alert"),
    "500 long entities, 40 KB title, 20,000 two-byte characters": _many_entities(500, 400),
}


def test_every_card_parses_without_an_event_and_fits():
    assert_teams_ready([adaptive_card(notice) for notice in NOTICES.values()])


def test_a_long_entity_list_ends_with_and_n_more_within_the_limit():
    message = adaptive_card(_many_entities(500, 400))
    assert card_size(message) <= TEAMS_CARD_MAX_BYTES < TEAMS_MESSAGE_LIMIT
    facts = {f["title"]: f["value"] for f in message["attachments"][0]["content"]["body"][2]["facts"]}
    assert facts["Entities"].endswith(" more") and "and " in facts["Entities"]
    shown = facts["Entities"].count("host ")
    assert facts["Entities"].endswith(f"and {500 - shown} more")


def test_the_default_list_shows_fifteen_entities():
    message = adaptive_card(_many_entities(40, 5))
    facts = {f["title"]: f["value"] for f in message["attachments"][0]["content"]["body"][2]["facts"]}
    assert facts["Entities"].count(".corp.contoso.com") == 15 and facts["Entities"].endswith("and 25 more")


def test_the_card_text_is_clipped_not_the_buttons():
    message = adaptive_card(_approval(25))
    actions = [a for item in message["attachments"][0]["content"]["body"] if item["type"] == "ActionSet"
               for a in item["actions"]]
    assert len(actions) == 50


def _rendered(markdown: str) -> str:
    """CommonMark with raw HTML off: Adaptive Cards in Teams read no HTML."""
    return MarkdownIt("commonmark", {"html": False}).render(markdown)


@pytest.mark.parametrize("text", [
    HOSTILE, "[a](b) [c]](d) [[e](f)", "**x** __y__ _z_ *w*", "1. one\n2) two\n- three", "2) two", "a\\[b](c)",
    "\\\\*x*",
])
def test_escaped_text_renders_as_the_text_itself(text):
    """Reference CommonMark rendering of the escaped text has no link, emphasis or list, and says the text."""
    html = _rendered(card_escape(text))
    for form in ("<a ", "<em>", "<strong>", "<li>", "<ol", "<ul"):
        assert form not in html, (form, html)
    # Read back: the text shown is the original. Code spans are the one form kept (Teams renders none).
    html = html.replace("<code>", "`").replace("</code>", "`")
    shown = html_lib.unescape(re.sub(r"<[^>]+>", "", html))
    assert shown.split() == text.split()


def test_only_what_teams_interprets_is_escaped():
    """Some Teams clients show backslash escapes literally: ordinary punctuation is left alone."""
    for plain in ("C:\\temp\\new (1).exe", "svc_sentinel_sync", "#tag | ~x~ `code` <b>bold?</b>", "a - b",
                  "203.0.113.10", "[Prod] login", "50% (of 3)"):
        assert card_escape(plain) == plain
    assert card_escape("[click](http://evil)") == "\\[click\\](http://evil)"
    assert card_escape("**b** _i_") == "\\*\\*b\\*\\* \\_i\\_"
    assert card_escape("- x\n1. y") == "\\- x\n1\\. y"
    assert card_escape("&lt;") == "\\&lt;" and card_escape("a\\*b") == "a\\\\\\*b"


def test_card_json_is_what_requests_sends():
    message = adaptive_card(_notice("incident-trigger.json"))
    assert card_size(message) == len(json.dumps(message).encode())


def test_the_parser_reports_what_it_would_not_render():
    """The check can fail: a card with an unknown element, a bad value and an action without a URL."""
    from tests.orchestration.cards import parse_events

    broken = {"type": "AdaptiveCard", "version": "1.4", "body": [
        {"type": "Marquee", "text": "x"}, {"type": "TextBlock", "text": "x", "size": "Huge"}],
        "actions": [{"type": "Action.OpenUrl", "title": "Open"}]}
    (events,) = parse_events([broken])
    kinds = {e["event"] for e in events}
    assert "UnknownElementType" in kinds and len(events) >= 2, events
