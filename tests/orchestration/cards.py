"""Microsoft's Adaptive Cards parser, run on the cards the pack builds (tests/orchestration/card_check.js).

A Teams Workflows webhook answers 202 for any JSON and the flow fails later, out of the sender's sight,
so the tests check every card here instead: what the ``adaptivecards`` library (npm, the renderer the
Teams web client is built on) reports while parsing and validating it, and its size.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("card_check.js")
LIBRARY = ROOT / "node_modules" / "adaptivecards" / "dist" / "adaptivecards.js"
# "Teams is also limited to version 1.5":
# https://learn.microsoft.com/microsoft-copilot-studio/guidance/adaptive-cards-overview
TEAMS_MAX_VERSION = (1, 5)
# The Teams message size limit, about 28 KB (https://learn.microsoft.com/connectors/teams/, known limitations).
TEAMS_MESSAGE_LIMIT = 28 * 1024


def parse_events(cards: list[dict]) -> list[list[dict]]:
    """Per card, every parse and validation event the library reports (errors and warnings alike)."""
    if not shutil.which("node") or not LIBRARY.exists():
        raise AssertionError(f"the adaptivecards parser is missing ({LIBRARY}): run `npm ci` (`make install`)")
    done = subprocess.run(["node", str(SCRIPT)], input=json.dumps(cards), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def assert_teams_ready(messages: list[dict]) -> None:
    """Every message is one Adaptive Card that parses without an event, in a version Teams renders, and
    the whole message stays under Teams' size limit."""
    cards = []
    for message in messages:
        (attachment,) = message["attachments"]
        assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
        card = attachment["content"]
        major, minor = (int(part) for part in card["version"].split("."))
        assert (major, minor) <= TEAMS_MAX_VERSION, card["version"]
        assert len(json.dumps(message).encode()) < TEAMS_MESSAGE_LIMIT
        cards.append(card)
    for card, events in zip(cards, parse_events(cards), strict=True):
        assert events == [], (events, json.dumps(card)[:500])
