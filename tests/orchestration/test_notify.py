"""Teams / Slack notifications end to end: local host -> webhook emulators, send-once state in Azurite.

Teams answers 202 when its flow starts, so the pack reports Teams as ``accepted`` (never ``sent``), and every
card the emulator received is checked with Microsoft's adaptivecards parser (tests/orchestration/cards.py).
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.fixtures import sample
from tests.orchestration.cards import assert_teams_ready

ROUTE = "orchestration/notify"
pytestmark = pytest.mark.e2e


def test_incident_is_posted_once_to_teams_and_slack(clean_stack, host, incident):
    response = host.post(ROUTE, incident)
    assert response.status_code == 200, response.text
    assert response.json()["channels"] == {"teams": "accepted", "slack": "sent"}
    assert_teams_ready(clean_stack.teams.messages)
    (card,) = clean_stack.teams.cards
    (message,) = clean_stack.slack.messages
    number = str(incident["object"]["properties"]["incidentNumber"])
    card_text = json.dumps(card)
    for expected in ("Sign-in from anonymizing proxy", "High", number, "adele.vance@contoso.com", "ws-fin-0042",
                     "203.0.113.45", incident["object"]["properties"]["incidentUrl"]):
        assert expected in card_text, expected
    slack_text = json.dumps(message)
    assert "adele.vance@contoso.com" in slack_text and number in slack_text
    assert message["unfurl_links"] is False

    # The Logic App retries the same action: nothing is posted again.
    again = host.post(ROUTE, incident)
    assert again.json()["channels"] == {"teams": "already-accepted", "slack": "already-sent"}
    assert len(clean_stack.teams.messages) == 1 and len(clean_stack.slack.messages) == 1


def test_slack_outage_still_notifies_teams_and_the_retry_completes(clean_stack, host, incident):
    clean_stack.slack.fail(503, times=10)
    response = host.post(ROUTE, incident)
    assert response.status_code == 502 and response.headers["Retry-After"]
    assert "teams: accepted" in response.json()["error"]["message"]
    assert len(clean_stack.teams.messages) == 1 and clean_stack.slack.messages == []

    clean_stack.slack.clear_faults()
    retry = host.post(ROUTE, incident)
    assert retry.json()["channels"] == {"teams": "already-accepted", "slack": "sent"}
    assert len(clean_stack.teams.messages) == 1 and len(clean_stack.slack.messages) == 1


def test_slack_throttling_is_a_429_with_retry_after(clean_stack, host, incident):
    clean_stack.slack.fail(429, times=10, retry_after=120)
    response = host.post(ROUTE, incident)
    assert response.status_code == 429 and response.headers["Retry-After"] == "120"
    assert len(clean_stack.teams.messages) == 1


def test_revoked_slack_webhook_is_named_but_never_shown(clean_stack, host, incident):
    clean_stack.slack.revoke()
    response = host.post(ROUTE, incident)
    assert response.status_code == 500
    error = response.json()["error"]
    assert "no_service" in error["message"] and "Slack" in error["message"]
    assert clean_stack.slack.path not in response.text and clean_stack.slack.path not in host.host.output
    assert clean_stack.teams.workflow_id not in host.host.output
    assert len(clean_stack.teams.messages) == 1


def test_untrusted_text_stays_text(clean_stack, host, incident):
    incident["object"]["properties"]["title"] = (
        "<script>alert(1)</script> <!channel> <http://evil.example|click> [click](http://evil.example) **x**")
    clean_stack.arm.seed_from_trigger(incident)
    assert host.post(ROUTE, incident).status_code == 200
    assert_teams_ready(clean_stack.teams.messages)
    card = json.dumps(clean_stack.teams.cards[0])
    # Teams reads Markdown, not HTML, in cards: the link form is broken, the rest shown as typed.
    assert "[click](" not in card and "\\\\[click\\\\]" in card and "\\\\*\\\\*x\\\\*\\\\*" in card
    assert "&lt;" not in card
    slack = json.dumps(clean_stack.slack.messages[0])
    assert "<!channel>" not in slack and "<http://evil" not in slack
    assert "&lt;!channel&gt;" in slack and "&lt;http://evil.example|click&gt;" in slack


def test_update_events_are_new_events(clean_stack, host, incident):
    assert host.post(ROUTE, incident).status_code == 200
    incident["objectEventType"] = "Update"
    incident["object"]["properties"]["lastModifiedTimeUtc"] = "2030-01-01T00:00:00Z"
    assert host.post(ROUTE, incident).json()["channels"] == {"teams": "accepted", "slack": "sent"}
    assert "updated" in json.dumps(clean_stack.teams.cards[1])


def test_manual_run_reads_the_incident(clean_stack, host, incident):
    response = host.post(ROUTE, {"incidentArmId": incident["object"]["id"]})
    assert response.status_code == 200, response.text
    assert "adele.vance@contoso.com" in json.dumps(clean_stack.teams.cards[0])


def test_a_manual_run_whose_incident_read_fails_posts_nothing_and_its_retry_posts(clean_stack, host, incident):
    """The incident is read beside the send-once claims (issue #16): when the read fails, no message goes out and
    the claims are given back, so the Logic App's retry posts once."""
    clean_stack.arm.fail(503, times=20, method="GET", path=r"/incidents/[^/]+$")
    response = host.post(ROUTE, {"incidentArmId": incident["object"]["id"]})
    assert response.status_code in (502, 503) and response.headers.get("Retry-After"), response.text
    assert clean_stack.teams.messages == [] and clean_stack.slack.messages == []
    clean_stack.arm.clear_faults()
    retried = host.post(ROUTE, {"incidentArmId": incident["object"]["id"]})
    assert retried.status_code == 200, retried.text
    assert retried.json()["channels"] == {"teams": "accepted", "slack": "sent"}
    assert len(clean_stack.teams.messages) == 1 and len(clean_stack.slack.messages) == 1


def test_bad_input_is_a_400(clean_stack, host):
    response = host.post(ROUTE, {"hello": 1})
    assert response.status_code == 400 and "unrecognised payload" in response.json()["error"]["message"]


def test_teams_and_slack_are_posted_side_by_side(clean_stack, host, incident):
    """Each webhook holds its answer until the other one's request has arrived: posted one after the other,
    the first would wait for a request that never comes (and be released unmet after 60 s)."""
    teams, slack = clean_stack.teams, clean_stack.slack
    held_teams = teams.hold(until=lambda: bool(slack.received))
    held_slack = slack.hold(until=lambda: bool(teams.received))
    response = host.post(ROUTE, incident, timeout=180)
    assert response.status_code == 200, response.text
    assert held_teams.released == [True] and held_slack.released == [True]


def test_entity_bodies_are_notified_with_their_incident(clean_stack, host, incident):
    body = sample("entity-trigger-ip.json")
    body["IncidentArmID"] = incident["object"]["id"]
    response = host.post(ROUTE, body)
    assert response.status_code == 200, response.text
    assert response.json()["channels"] == {"teams": "accepted", "slack": "sent"}
    assert_teams_ready(clean_stack.teams.messages)
    card = json.dumps(clean_stack.teams.cards[0])
    assert "Sentinel entity of an incident" in card and "198.51.100.23" in card
    assert incident["object"]["properties"]["title"] in card
    assert "adele.vance" not in card  # the run is about this entity, not every entity of the incident
    # The Logic App retries: nothing new is posted.
    assert host.post(ROUTE, body).json()["channels"] == {"teams": "already-accepted", "slack": "already-sent"}


def test_entity_bodies_without_an_incident_are_notified(clean_stack, host):
    body = sample("entity-trigger-host.json")
    body["IncidentArmID"] = None
    body["Entity"]["id"] = body["Entity"]["id"].rsplit("/", 1)[0] + "/" + str(uuid.uuid4())
    response = host.post(ROUTE, body)
    assert response.status_code == 200, response.text
    assert response.json()["case"] == "entity run" and clean_stack.arm.received == []
    card = json.dumps(clean_stack.teams.cards[0])
    assert '"Sentinel entity"' in card and "host " in card
    assert_teams_ready(clean_stack.teams.messages)


def test_alert_bodies_say_alert(clean_stack, host):
    body = sample("alert-trigger.json")
    body["SystemAlertId"] = str(uuid.uuid4())
    response = host.post(ROUTE, body)
    assert response.status_code == 200, response.text
    card = json.dumps(clean_stack.teams.cards[0])
    assert "New Sentinel alert" in card and "incident" not in clean_stack.slack.messages[0]["text"].lower()
    assert_teams_ready(clean_stack.teams.messages)
