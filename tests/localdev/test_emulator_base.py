"""What every emulator shares: holding an answer until an event (tests wait on events, not on the clock)."""

from __future__ import annotations

import threading

import requests

from localdev.emulators.webhooks import SlackWebhookEmulator


def test_a_held_request_is_answered_once_its_event_happens():
    with SlackWebhookEmulator() as slack:
        event = threading.Event()
        held = slack.hold(until=event.is_set, timeout=120)
        answers: list[int] = []
        caller = threading.Thread(target=lambda: answers.append(
            requests.post(slack.webhook_url, json={"text": "x"}, timeout=180).status_code))
        caller.start()
        caller.join(0.3)
        assert caller.is_alive() and answers == []  # still held: the event has not happened
        event.set()
        caller.join(120)
        assert answers == [200] and held.released == [True] and len(slack.messages) == 1
        # Only the next request was held.
        assert requests.post(slack.webhook_url, json={"text": "y"}, timeout=30).status_code == 200


def test_a_hold_whose_event_never_comes_ends_at_its_bound_and_says_so():
    with SlackWebhookEmulator() as slack:
        held = slack.hold(until=lambda: False, timeout=0.2)
        assert requests.post(slack.webhook_url, json={"text": "x"}, timeout=60).status_code == 200
        assert held.released == [False]
