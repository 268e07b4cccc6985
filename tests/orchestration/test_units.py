"""Pure pieces of orchestration: escaping, link signing, the callback-URL guard, durations."""

from __future__ import annotations

import pytest

from core.errors import BadRequest, ConfigurationError
from orchestration.approvals import Signer, check_callback_url, parse_duration
from orchestration.notify import card_escape, slack_escape

LOGIC = frozenset({"*.logic.azure.com"})


def test_slack_control_characters_become_entities():
    assert slack_escape("<!channel> <http://evil|click> & co") == "&lt;!channel&gt; &lt;http://evil|click&gt; &amp; co"


def test_card_markdown_stays_text():
    escaped = card_escape("[click](http://evil) <script> **b** - x\n1. y")
    assert "[click](" not in escaped and "**" not in escaped
    assert escaped.startswith("\\[click\\](") and "\n1. y" not in escaped and "\n1\\. y" in escaped
    # Teams reads no HTML in cards: the text is shown as typed, not entity-encoded (tests/orchestration/test_cards.py)
    assert "<script>" in escaped


def test_signatures_bind_every_field():
    signer = Signer("k" * 40)
    sig = signer.sign("a" * 32, "Block", "alice@contoso.com", 100)
    assert signer.valid("a" * 32, "block", "ALICE@contoso.com", 100, sig)
    for args in (("b" * 32, "Block", "alice@contoso.com", 100), ("a" * 32, "Ignore", "alice@contoso.com", 100),
                 ("a" * 32, "Block", "bob@contoso.com", 100), ("a" * 32, "Block", "alice@contoso.com", 101)):
        assert not signer.valid(*args, sig)
    assert not Signer("j" * 40).valid("a" * 32, "Block", "alice@contoso.com", 100, sig)
    assert "k" * 40 not in repr(signer)
    with pytest.raises(ConfigurationError):
        Signer("short")


@pytest.mark.parametrize("url", [
    "https://prod-12.westeurope.logic.azure.com/workflows/abc/runs/1/actions/x/run?sig=s",
    "https://prod-12.westeurope.logic.azure.com:443/workflows/abc",
])
def test_logic_apps_callbacks_are_accepted(url):
    assert check_callback_url(url, LOGIC, False) == url


@pytest.mark.parametrize("url", [
    "http://prod-12.westeurope.logic.azure.com/x", "https://logic.azure.com.evil.example/x",
    "https://prod-12.westeurope.logic.azure.com:8443/x", "https://a@prod-12.westeurope.logic.azure.com/x",
    "http://127.0.0.1:8080/cb", "https://10.0.0.4/x", None, 5,
])
def test_other_callbacks_are_refused(url):
    with pytest.raises(BadRequest):
        check_callback_url(url, LOGIC, False)


def test_loopback_callbacks_only_in_local_mode():
    assert check_callback_url("http://127.0.0.1:8080/cb", LOGIC, True)
    with pytest.raises(BadRequest):
        check_callback_url("http://192.168.1.1/cb", LOGIC, True)


def test_durations():
    assert parse_duration("PT1H") == 3600 and parse_duration("P1DT2M") == 86520 and parse_duration("PT2S") == 2
    for bad in ("P", "1h", "PT0S", "P31D", 60):
        with pytest.raises(BadRequest):
            parse_duration(bad)
