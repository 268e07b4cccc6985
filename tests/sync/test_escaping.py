"""Hostile text crossing the sync stays text on the other side.

- Sentinel -> ServiceNow: the title, description and entities land in plain-text fields (short_description,
  description), where ServiceNow shows them literally: they are stored as they are, not wrapped in [code].
  Comments become work notes inside one [code] block, which ServiceNow renders as HTML, so their HTML is
  rebuilt from safe tags (sync/journal.py) and their text cannot close the block or open another one.
- ServiceNow -> Sentinel: journal entries become HTML comments, escaped.
- A marker quoted in a comment (or typed in ServiceNow) cannot make the sync skip a comment.
"""

from __future__ import annotations

import re

import pytest

from sync.journal import journal_html, journal_text
from sync.service import MARKER
from tests.sync.conftest import add_sentinel_comment, fresh_incident, ticket_of

SCRIPT = "<script>alert(document.cookie)</script>"
CODE_BLOCK = "[code]<img src=x onerror=alert(1)>[/code]"
JOURNAL_BREAKOUT = "[/code]<b>outside</b>[code]<iframe src=//evil.example></iframe>"
HOSTILE = f"{SCRIPT} {CODE_BLOCK} {JOURNAL_BREAKOUT}"
# What no rendered journal entry may contain.
ACTIVE = re.compile(r"<\s*(script|img|iframe|svg|object|embed|style|form|input)\b|\bon\w+\s*=|javascript:", re.I)


def code_blocks(value: str) -> list[str]:
    """The [code] blocks of a journal value, as ServiceNow finds them."""
    return re.findall(r"\[code\](.*?)\[/code\]", value, re.S)


# -- sync/journal.py ----------------------------------------------------------------------------
@pytest.mark.parametrize(("markup", "expected"), [
    ("<p><b>VirusTotal</b>: 203.0.113.45 <i>bad</i></p>", "<p><b>VirusTotal</b>: 203.0.113.45 <i>bad</i></p>"),
    (SCRIPT + "<p>after</p>", "<p>after</p>"),
    ("<img src=x onerror=alert(1)>x<br/>y", "x<br>y"),
    ('<p onclick="alert(1)" style="position:fixed">t</p>', "<p>t</p>"),
    ('<a href="javascript:alert(1)">click</a>', "click"),
    ('<a href="https://portal.azure.com/#x" onmouseover="x()">portal</a>',
     '<a href="https://portal.azure.com/#x" rel="noopener noreferrer">portal</a>'),
    ("[/code]<b>x</b>[code]", "&#91;/code&#93;<b>x</b>&#91;code&#93;"),
    ("&lt;script&gt; &amp; 1 < 2", "&lt;script&gt; &amp; 1 &lt; 2"),
    ("<table><tr><td>open", "<table><tr><td>open</td></tr></table>"),
    ("</div></p>text<b>bold", "text<b>bold</b>"),
    ("<svg><script>alert(1)</script><text>t</text></svg>after", "after"),
    ("<!-- [code] --><?php x ?>plain", "plain"),
])
def test_comment_html_is_rebuilt_from_safe_tags(markup, expected):
    assert journal_html(markup) == expected


def test_rebuilt_html_is_cut_to_the_room_with_its_tags_closed():
    out = journal_html("<p><b>" + "&" * 100 + "</b></p>", limit=30)
    assert out == "<p><b>" + "&amp;" * 4 + "…</b></p>"  # 6 + 4*5 = 26 characters fit, never half an entity


def test_journal_text_neutralises_markup():
    assert journal_text("[code]<x>[/code] & \"q\"") == "&#91;code&#93;&lt;x&gt;&#91;/code&#93; &amp; &quot;q&quot;"


# -- end to end ---------------------------------------------------------------------------------
def test_hostile_incident_fields_stay_literal_text_in_the_ticket(snow, sync_host):
    stack = sync_host.stack
    body, incident_id = fresh_incident(stack, title=f"Sign-in {HOSTILE}", description=f"Alert said: {HOSTILE}")
    body["object"]["properties"]["relatedEntities"].append(
        {"kind": "Host", "properties": {"hostName": f"ws-{SCRIPT}", "friendlyName": "x"}})
    assert sync_host.outbound(body).status_code == 200

    ticket = ticket_of(stack, incident_id)
    number = body["object"]["properties"]["incidentNumber"]
    assert ticket["short_description"] == f"[Sentinel #{number}] Sign-in {HOSTILE}"[:159] + "…"  # clipped, says so
    assert f"Title (clipped in the short description): Sign-in {HOSTILE}" in ticket["description"]
    assert f"Alert said: {HOSTILE}" in ticket["description"]
    assert f"ws-{SCRIPT}".lower() in ticket["description"].lower()
    for field in ("short_description", "description"):  # plain fields: no [code] block of ours around them
        assert not ticket[field].startswith("[code]") and not ticket[field].endswith("[/code]")
    assert all(not code_blocks(entry["value"]) or not ACTIVE.search(entry["value"])
               for entry in snow.journal(ticket["sys_id"]))


def test_hostile_sentinel_comments_become_inert_work_notes(snow, sync_host):
    stack = sync_host.stack
    body, incident_id = fresh_incident(stack)
    assert sync_host.outbound(body).status_code == 200
    ticket = ticket_of(stack, incident_id)
    later = "00000000-later-comment"
    hostile = add_sentinel_comment(
        stack, incident_id, f'<p>{HOSTILE} <a href="javascript:alert(1)">portal</a> <b>kept</b></p>'
                            f"<p>{MARKER} {later}</p>")  # quotes the marker of a comment not yet synced
    assert sync_host.outbound(body).status_code == 200
    quoted = add_sentinel_comment(stack, incident_id, "written after the hostile one")
    assert sync_host.outbound(body).status_code == 200

    notes = [entry["value"] for entry in snow.journal(ticket["sys_id"])]
    [note] = [value for value in notes if hostile in value]
    assert note.startswith("[code]") and note.endswith("[/code]")
    [block] = code_blocks(note)
    assert len(block) == len(note) - len("[code][/code]")  # one block: the text closed nothing early
    assert not ACTIVE.search(note), note
    assert "<b>kept</b>" in note and "&#91;/code&#93;" in note and "portal" in note
    assert sum(quoted in value for value in notes) == 1  # the quoted marker made the sync skip nothing


def test_servicenow_journal_reaches_sentinel_escaped(snow, sync_host):
    stack = sync_host.stack
    body, incident_id = fresh_incident(stack)
    assert sync_host.outbound(body).status_code == 200
    ticket = ticket_of(stack, incident_id)
    desk = f"{HOSTILE} <a href=https://evil.example>login</a> {MARKER} not-ours"
    snow.update_as(ticket["sys_id"], "megan.bowen", work_notes=desk)
    assert sync_host.push_ticket(ticket["sys_id"]).status_code == 200

    [copied] = [c["properties"]["message"] for c in stack.arm.comments(incident_id) if "megan.bowen" in
                c["properties"]["message"]]  # copied although it quotes the marker: megan is not the pack
    assert "<script" not in copied and "<img" not in copied and "<iframe" not in copied and "<a href" not in copied
    assert "&lt;script&gt;alert(document.cookie)&lt;/script&gt;" in copied
    assert "[code]&lt;img src=x onerror=alert(1)&gt;[/code]" in copied  # shown as the text it was
