"""The Teams Workflows and Slack incoming-webhook emulators answer as the services document."""

from __future__ import annotations

import pytest
import requests

from localdev.emulators.webhooks import SlackWebhookEmulator, TeamsWebhookEmulator

CARD = {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                                            "content": {"type": "AdaptiveCard", "version": "1.4", "body": []}}]}


@pytest.fixture
def teams():
    with TeamsWebhookEmulator() as emulator:
        yield emulator


@pytest.fixture
def slack():
    with SlackWebhookEmulator() as emulator:
        yield emulator


def test_teams_accepts_an_adaptive_card_with_202(teams):
    response = requests.post(teams.webhook_url, json=CARD, timeout=5)
    assert response.status_code == 202 and response.content == b""
    assert teams.cards == [CARD["attachments"][0]["content"]]


def test_teams_refuses_a_wrong_signature_and_a_body_that_is_not_json(teams):
    wrong = teams.webhook_url.replace(teams.signature, "forged")
    assert requests.post(wrong, json=CARD, timeout=5).status_code == 401
    bad = requests.post(teams.webhook_url, data=b"{not json", headers={"Content-Type": "application/json"},
                        timeout=5)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "InvalidRequestContent"
    assert teams.messages == []


def test_teams_accepts_any_json_and_the_flow_fails_later(teams):
    """202 means the flow started, not that a card was posted: a non-card or an oversized message is
    accepted and its run fails where the sender cannot see it."""
    not_a_card = {"text": "hi"}
    huge = {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                                                "content": {"type": "AdaptiveCard", "version": "1.4", "body": [
                                                    {"type": "TextBlock", "text": "x" * 30_000}]}}]}
    for body in (not_a_card, huge, CARD):
        response = requests.post(teams.webhook_url, json=body, timeout=5)
        assert response.status_code == 202 and response.content == b""
    assert len(teams.messages) == 3 and teams.cards == [CARD["attachments"][0]["content"]]
    reasons = [why for _, why in teams.failed_runs]
    assert "type 'message'" in reasons[0] and "Request Entity Too Large" in reasons[1]


def test_slack_answers_ok_and_plain_text_errors(slack):
    ok = requests.post(slack.webhook_url, json={"text": "hi", "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]}, timeout=5)
    assert ok.status_code == 200 and ok.text == "ok"
    assert requests.post(slack.webhook_url, data=b"{not json", timeout=5).text == "invalid_payload"
    assert requests.post(slack.webhook_url, json={}, timeout=5).text == "no_text"
    header = {"type": "header", "text": {"type": "mrkdwn", "text": "x"}}
    assert requests.post(slack.webhook_url, json={"blocks": [header]}, timeout=5).text == "invalid_blocks"
    missing = requests.post(slack.url + "/services/T0/B0/nope", json={"text": "x"}, timeout=5)
    assert missing.status_code == 404 and missing.text == "no_service"
    slack.revoke()
    assert requests.post(slack.webhook_url, json={"text": "x"}, timeout=5).text == "no_service"
    assert len(slack.messages) == 1


def test_slack_throttling_is_429_with_retry_after(slack):
    slack.fail(429, retry_after=30)
    response = requests.post(slack.webhook_url, json={"text": "x"}, timeout=5)
    assert response.status_code == 429 and response.headers["Retry-After"] == "30"
    assert response.text == "rate_limited"
